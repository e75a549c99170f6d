use std::borrow::Cow;
use std::time::{Duration as StdDuration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use proptest::prelude::*;
use serde_bytes::ByteBuf;
use time::{Date, PrimitiveDateTime, Time};

use super::canonical::{canonical_query, canonical_uri, percent_decode, percent_encode, push_header_value};
use super::*;

const AKID: &str = "AKIDKEYWARDTEST01";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const SERVICE: &str = "kms";
const HOST: &str = "kms.us-east-1.amazonaws.com";
const BODY: &str = r#"{"KeyId":"alias/keyward-test","Plaintext":"aGVsbG8gd29ybGQ="}"#;
/// 2024-01-01T12:00:00Z
const SIGNED_AT: i64 = 1_704_110_400;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("valid timestamp")
}

fn bytes(s: &str) -> ByteBuf {
    ByteBuf::from(s.as_bytes().to_vec())
}

/// An owned request, as the enclave would receive it.
#[derive(Clone)]
struct Req {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, ByteBuf)>,
    body: Vec<u8>,
}

impl Req {
    fn view(&self) -> SignedRequest<'_> {
        SignedRequest {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }

    fn header(&self, name: &str) -> String {
        let (_, v) = self.headers.iter().find(|(n, _)| n == name).expect("header present");
        String::from_utf8(v.to_vec()).expect("utf-8")
    }

    fn set_header(&mut self, name: &str, value: &str) {
        let slot = self
            .headers
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("header present");
        slot.1 = bytes(value);
    }

    fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| n != name);
    }

    fn push_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), bytes(value)));
    }
}

/// What to sign with `aws-sigv4`.
struct Spec {
    method: &'static str,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    unsigned_payload: bool,
    settings: SigningSettings,
    secret: &'static str,
    session_token: Option<String>,
    region: &'static str,
    service: &'static str,
    time: i64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            method: "POST",
            path: "/".to_owned(),
            query: String::new(),
            headers: vec![
                ("host".to_owned(), HOST.to_owned()),
                ("content-type".to_owned(), "application/x-amz-json-1.1".to_owned()),
                ("x-amz-target".to_owned(), "TrentService.Encrypt".to_owned()),
            ],
            body: BODY.as_bytes().to_vec(),
            unsigned_payload: false,
            settings: SigningSettings::default(),
            secret: SECRET,
            session_token: None,
            region: REGION,
            service: SERVICE,
            time: SIGNED_AT,
        }
    }
}

/// Signs `spec` with the AWS SDK's own signer and returns the request as sent.
fn sign_request(spec: Spec) -> Req {
    let identity = Credentials::new(AKID, spec.secret, spec.session_token.clone(), None, "keyward-test").into();
    let time = UNIX_EPOCH + StdDuration::from_secs(u64::try_from(spec.time).expect("positive time"));
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(spec.region)
        .name(spec.service)
        .time(time)
        .settings(spec.settings)
        .build()
        .expect("signing params")
        .into();
    let uri = if spec.query.is_empty() {
        format!("https://{HOST}{}", spec.path)
    } else {
        format!("https://{HOST}{}?{}", spec.path, spec.query)
    };
    let body = if spec.unsigned_payload {
        SignableBody::UnsignedPayload
    } else {
        SignableBody::Bytes(&spec.body)
    };
    let signable = SignableRequest::new(
        spec.method,
        uri,
        spec.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        body,
    )
    .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();
    let mut headers: Vec<(String, ByteBuf)> = spec
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), bytes(v)))
        .collect();
    for (name, value) in instructions.headers() {
        headers.push((name.to_ascii_lowercase(), bytes(value)));
    }
    Req {
        method: spec.method.to_owned(),
        path: spec.path,
        query: spec.query,
        headers,
        body: spec.body,
    }
}

fn kms_request() -> Req {
    sign_request(Spec::default())
}

/// parse → derive the key for the parsed scope → verify, as the enclave does.
fn check_with(req: &Req, secret: &str, now: OffsetDateTime, region: &str, service: &str) -> Result<(), SigV4Error> {
    let view = req.view();
    let auth = parse(&view)?;
    let key = SigningKey::derive(secret.as_bytes(), &auth.scope_date, &auth.region, &auth.service);
    verify(&view, &auth, &key, now, region, service)
}

fn check(req: &Req) -> Result<(), SigV4Error> {
    check_with(req, SECRET, at(SIGNED_AT), REGION, SERVICE)
}

// ---- real signatures from aws-sigv4 ----

#[test]
fn valid_kms_request_verifies() {
    let req = kms_request();
    assert_eq!(check(&req), Ok(()));
    let auth = parse(&req.view()).expect("parse");
    assert_eq!(auth.access_key_id, AKID);
    assert_eq!(auth.scope_date, "20240101");
    assert_eq!(auth.region, REGION);
    assert_eq!(auth.service, SERVICE);
    assert_eq!(
        auth.signed_headers,
        ["content-type", "host", "x-amz-date", "x-amz-target"]
    );
    assert_eq!(auth.request_time, at(SIGNED_AT));
}

#[test]
fn valid_with_content_sha256_header_verifies() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let req = sign_request(Spec {
        settings,
        ..Spec::default()
    });
    assert!(req.headers.iter().any(|(n, _)| n == "x-amz-content-sha256"));
    assert_eq!(check(&req), Ok(()));
}

#[test]
fn valid_with_session_token_verifies() {
    let req = sign_request(Spec {
        session_token: Some("FwoGZXIvYXdzEXAMPLETOKEN/+=".to_owned()),
        ..Spec::default()
    });
    let auth = parse(&req.view()).expect("parse");
    assert!(auth.signed_headers.iter().any(|h| h == "x-amz-security-token"));
    assert_eq!(check(&req), Ok(()));
}

#[test]
fn valid_with_path_query_and_repeated_headers_verifies() {
    let mut spec = Spec {
        path: "/a%20b/./c//d%2Fe/../f%C3%A9~.-_/".to_owned(),
        query: "b=2&a=1&a=0&c=x%2By&e=a+b&d&%E1%88%B4=%zz".to_owned(),
        ..Spec::default()
    };
    spec.headers
        .push(("x-amz-meta-list".to_owned(), "  one   two  ".to_owned()));
    spec.headers.push(("x-amz-meta-list".to_owned(), "three".to_owned()));
    spec.headers
        .push(("x-amz-meta-other".to_owned(), "\"a   b   c\"".to_owned()));
    let req = sign_request(spec);
    assert_eq!(check(&req), Ok(()));

    // Swapping the order of the repeated header changes the signed value.
    let mut swapped = req.clone();
    let idx: Vec<usize> = (0..swapped.headers.len())
        .filter(|&i| swapped.headers.get(i).is_some_and(|(n, _)| n == "x-amz-meta-list"))
        .collect();
    let [first, second] = idx[..] else {
        panic!("two copies expected")
    };
    swapped.headers.swap(first, second);
    assert_eq!(check(&swapped), Err(SigV4Error::SignatureMismatch));

    let mut other_query = req.clone();
    other_query.query = "b=2&a=1&a=0&c=x%2By&e=a+b&d&%E1%88%B4=%zy".to_owned();
    assert_eq!(check(&other_query), Err(SigV4Error::SignatureMismatch));

    let mut other_path = req.clone();
    other_path.path = "/a%20b/c/d%2Fe/f%C3%A9~.-_".to_owned();
    assert_eq!(check(&other_path), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn tampered_body_fails() {
    let mut req = kms_request();
    req.body = br#"{"KeyId":"alias/other-key","Plaintext":"aGVsbG8gd29ybGQ="}"#.to_vec();
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn tampered_body_with_content_sha256_header_fails() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let mut req = sign_request(Spec {
        settings,
        ..Spec::default()
    });
    req.body.push(b' ');
    assert_eq!(check(&req), Err(SigV4Error::PayloadHashMismatch));

    // Fixing up the header to match the new body breaks the signature instead.
    let fixed = hex::encode(Sha256::digest(&req.body));
    req.set_header("x-amz-content-sha256", &fixed);
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn tampered_target_fails() {
    let mut req = kms_request();
    req.set_header("x-amz-target", "TrentService.Decrypt");
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn tampered_host_fails() {
    let mut req = kms_request();
    req.set_header("host", "kms.example.com");
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn tampered_date_fails() {
    let mut req = kms_request();
    assert_eq!(req.header("x-amz-date"), "20240101T120000Z");
    req.set_header("x-amz-date", "20240101T120001Z");
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn tampered_method_fails() {
    let mut req = kms_request();
    req.method = "PUT".to_owned();
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn wrong_secret_fails() {
    let req = kms_request();
    let wrong = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ";
    assert_eq!(
        check_with(&req, wrong, at(SIGNED_AT), REGION, SERVICE),
        Err(SigV4Error::SignatureMismatch)
    );
    let req = sign_request(Spec {
        secret: wrong,
        ..Spec::default()
    });
    assert_eq!(check(&req), Err(SigV4Error::SignatureMismatch));
}

#[test]
fn clock_skew_window() {
    let req = kms_request();
    let skewed = |secs: i64| check_with(&req, SECRET, at(SIGNED_AT + secs), REGION, SERVICE);
    for ok in [-300, -240, -1, 0, 1, 240, 300] {
        assert_eq!(skewed(ok), Ok(()), "skew {ok}s");
    }
    for late in [-360, -301, 301, 360, 86_400] {
        assert!(matches!(skewed(late), Err(SigV4Error::Expired { .. })), "skew {late}s");
    }
    let Err(SigV4Error::Expired { request_time, now }) = skewed(360) else {
        panic!("expired")
    };
    assert_eq!(request_time, "2024-01-01T12:00:00Z");
    assert_eq!(now, "2024-01-01T12:06:00Z");
}

#[test]
fn clock_skew_with_odd_clocks() {
    let req = kms_request();
    let now = |t: OffsetDateTime| check_with(&req, SECRET, t, REGION, SERVICE);
    // The same instant seen in another offset is fine.
    let plus14 = time::UtcOffset::from_hms(14, 0, 0).expect("offset");
    assert_eq!(now(at(SIGNED_AT).to_offset(plus14)), Ok(()));
    let odd = time::UtcOffset::from_hms(-3, -25, -7).expect("offset");
    assert_eq!(now(at(SIGNED_AT + 200).to_offset(odd)), Ok(()));
    assert!(matches!(
        now(at(SIGNED_AT + 400).to_offset(odd)),
        Err(SigV4Error::Expired { .. })
    ));
    // Extreme clocks do not overflow anything.
    for date in [Date::MIN, Date::MAX] {
        let t = PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc();
        assert!(matches!(now(t), Err(SigV4Error::Expired { .. })));
        assert!(matches!(now(t.replace_offset(odd)), Err(SigV4Error::Expired { .. })));
    }
}

#[test]
fn clock_skew_checked_against_signed_time() {
    // Signed 6 minutes ago by a real client.
    let req = sign_request(Spec {
        time: SIGNED_AT - 360,
        ..Spec::default()
    });
    assert!(matches!(check(&req), Err(SigV4Error::Expired { .. })));
    let req = sign_request(Spec {
        time: SIGNED_AT + 360,
        ..Spec::default()
    });
    assert!(matches!(check(&req), Err(SigV4Error::Expired { .. })));
    let req = sign_request(Spec {
        time: SIGNED_AT - 240,
        ..Spec::default()
    });
    assert_eq!(check(&req), Ok(()));
    let req = sign_request(Spec {
        time: SIGNED_AT + 240,
        ..Spec::default()
    });
    assert_eq!(check(&req), Ok(()));
}

#[test]
fn wrong_region_or_service_fails() {
    let req = kms_request();
    let now = at(SIGNED_AT);
    assert!(matches!(
        check_with(&req, SECRET, now, "eu-west-1", SERVICE),
        Err(SigV4Error::WrongScope(_))
    ));
    assert!(matches!(
        check_with(&req, SECRET, now, REGION, "s3"),
        Err(SigV4Error::WrongScope(_))
    ));
    let other_region = sign_request(Spec {
        region: "eu-west-1",
        ..Spec::default()
    });
    assert!(matches!(check(&other_region), Err(SigV4Error::WrongScope(_))));
    let other_service = sign_request(Spec {
        service: "sts",
        ..Spec::default()
    });
    assert!(matches!(check(&other_service), Err(SigV4Error::WrongScope(_))));
}

#[test]
fn scope_date_must_match_request_date() {
    let mut req = kms_request();
    let header = req.header("authorization").replace("/20240101/", "/20240102/");
    req.set_header("authorization", &header);
    assert!(matches!(check(&req), Err(SigV4Error::WrongScope(_))));
}

#[test]
fn scope_terminator_must_be_aws4_request() {
    let mut req = kms_request();
    let header = req.header("authorization").replace("/aws4_request,", "/aws4_request2,");
    req.set_header("authorization", &header);
    assert!(matches!(parse(&req.view()), Err(SigV4Error::WrongScope(_))));
}

#[test]
fn missing_authorization() {
    let mut req = kms_request();
    req.remove_header("authorization");
    assert!(matches!(parse(&req.view()), Err(SigV4Error::Missing)));
}

#[test]
fn duplicate_single_valued_headers_are_malformed() {
    for name in ["authorization", "x-amz-date", "x-amz-target", "host", "content-type"] {
        let mut req = kms_request();
        let value = req.header(name);
        req.push_header(name, &value);
        assert!(matches!(parse(&req.view()), Err(SigV4Error::Malformed(_))), "{name}");
    }
}

#[test]
fn header_names_match_case_insensitively() {
    let mut req = kms_request();
    for (name, _) in &mut req.headers {
        *name = name.to_ascii_uppercase();
    }
    assert_eq!(check(&req), Ok(()));
}

#[test]
fn unsigned_target_or_host_fails() {
    for (name, excluded) in [("x-amz-target", "x-amz-target"), ("host", "host")] {
        let mut settings = SigningSettings::default();
        settings
            .excluded_headers
            .get_or_insert_with(Vec::new)
            .push(Cow::Borrowed(excluded));
        let req = sign_request(Spec {
            settings,
            ..Spec::default()
        });
        let auth = parse(&req.view()).expect("parse");
        assert!(!auth.signed_headers.iter().any(|h| h == excluded));
        assert_eq!(check(&req), Err(SigV4Error::MissingSignedHeader(name)));
    }
}

#[test]
fn unsigned_session_token_fails() {
    let mut req = kms_request();
    req.push_header("x-amz-security-token", "injected");
    assert_eq!(
        check(&req),
        Err(SigV4Error::MissingSignedHeader("x-amz-security-token"))
    );
}

#[test]
fn signed_header_absent_from_request_fails() {
    let mut req = kms_request();
    req.remove_header("content-type");
    assert_eq!(check(&req), Err(SigV4Error::MissingSignedHeader("content-type")));
    let mut req = kms_request();
    req.remove_header("x-amz-target");
    assert_eq!(check(&req), Err(SigV4Error::MissingSignedHeader("x-amz-target")));
}

#[test]
fn unsigned_payload_is_rejected() {
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let req = sign_request(Spec {
        settings,
        unsigned_payload: true,
        ..Spec::default()
    });
    assert_eq!(req.header("x-amz-content-sha256"), "UNSIGNED-PAYLOAD");
    assert_eq!(check(&req), Err(SigV4Error::PayloadHashMismatch));
}

#[test]
fn control_characters_in_signed_values_are_malformed() {
    let mut req = kms_request();
    req.set_header(
        "content-type",
        "application/x-amz-json-1.1\nx-amz-target:TrentService.Decrypt",
    );
    assert!(matches!(check(&req), Err(SigV4Error::Malformed(_))));
}

#[test]
fn auth_from_another_request_is_refused() {
    let req = kms_request();
    let other = sign_request(Spec {
        time: SIGNED_AT + 1,
        ..Spec::default()
    });
    let auth = parse(&other.view()).expect("parse");
    let key = SigningKey::derive(SECRET.as_bytes(), &auth.scope_date, REGION, SERVICE);
    assert!(matches!(
        verify(&req.view(), &auth, &key, at(SIGNED_AT), REGION, SERVICE),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn malformed_authorization_headers() {
    let good = kms_request().header("authorization");
    let sig = good.rsplit_once("Signature=").expect("signature").1.to_owned();
    let cred = format!("Credential={AKID}/20240101/us-east-1/kms/aws4_request");
    let sh = "SignedHeaders=content-type;host;x-amz-date;x-amz-target";
    let many: Vec<String> = (0..65).map(|i| format!("x-h{i:03}")).collect();
    let cases = [
        format!("AWS4-HMAC-SHA512 {cred}, {sh}, Signature={sig}"),
        "AWS4-HMAC-SHA256".to_owned(),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}"),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}, Extra=1"),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}", sig.to_ascii_uppercase()),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}", &sig[..62]),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={}zz", &sig[..62]),
        format!("AWS4-HMAC-SHA256 Credential={AKID}/20240101/us-east-1/kms, {sh}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential=/20240101/us-east-1/kms/aws4_request, {sh}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={AKID}/2024011/us-east-1/kms/aws4_request, {sh}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential={AKID}/20240101/us east/kms/aws4_request, {sh}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}/x, {sh}, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;content-type, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=host;host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=Host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 {cred}, SignedHeaders=authorization;host, Signature={sig}"),
        format!(
            "AWS4-HMAC-SHA256 {cred}, SignedHeaders={}, Signature={sig}",
            many.join(";")
        ),
        format!(
            "AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}{}",
            " ".repeat(MAX_AUTHORIZATION_LEN)
        ),
        format!("AWS4-HMAC-SHA256 {cred}, {sh}, Signature={sig}\r\n"),
    ];
    for case in cases {
        let mut req = kms_request();
        req.set_header("authorization", &case);
        assert!(matches!(parse(&req.view()), Err(SigV4Error::Malformed(_))), "{case:?}");
    }

    let mut req = kms_request();
    req.headers.retain(|(n, _)| n != "authorization");
    req.headers
        .push(("authorization".to_owned(), ByteBuf::from(vec![0xff, 0xfe])));
    assert!(matches!(parse(&req.view()), Err(SigV4Error::Malformed(_))));

    // Components in another order, without spaces, are still the same header.
    let mut req = kms_request();
    req.set_header(
        "authorization",
        &format!("AWS4-HMAC-SHA256 Signature={sig},{sh},{cred}"),
    );
    assert_eq!(check(&req), Ok(()));
}

#[test]
fn malformed_or_missing_amz_date() {
    for bad in [
        "",
        "20240101T120000",
        "20240101T120000z",
        "2024-01-01T12:00:00Z",
        "20241301T120000Z",
        "20240230T120000Z",
        "20240101T250000Z",
        "20240101T126000Z",
        "20240101T120060Z",
        "+2024101T120000Z",
        "２0240101T12000Z",
    ] {
        let mut req = kms_request();
        req.set_header("x-amz-date", bad);
        assert!(matches!(parse(&req.view()), Err(SigV4Error::Malformed(_))), "{bad:?}");
    }
    let mut req = kms_request();
    req.remove_header("x-amz-date");
    assert!(matches!(parse(&req.view()), Err(SigV4Error::Malformed(_))));
}

#[test]
fn debug_output_is_redacted() {
    let req = kms_request();
    let auth = parse(&req.view()).expect("parse");
    let shown = format!("{auth:?}");
    assert!(shown.contains(AKID));
    assert!(shown.contains("20240101/us-east-1/kms/aws4_request"));
    assert!(shown.contains("x-amz-target"));
    assert!(!shown.contains(&hex::encode(auth.signature)));
    assert!(!shown.contains("signature"));

    let key = SigningKey::derive(SECRET.as_bytes(), "20240101", REGION, SERVICE);
    let shown = format!("{key:?}");
    assert_eq!(shown, "SigningKey(<redacted>)");
    assert!(!shown.contains(&hex::encode(key.0)));
}

// ---- known-answer vectors ----

/// Produced by botocore 1.43 (`SigV4Auth(...).add_auth`, as the AWS CLI signs), clock pinned to
/// 2024-01-01T12:00:00Z. `user-agent` is sent but not signed.
const BOTOCORE_KMS_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 \
    Credential=AKIDKEYWARDTEST01/20240101/us-east-1/kms/aws4_request, \
    SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
    Signature=816b53fcb07f6031997c0a527a6f2d91aae94c1a103451bd21fdff1fc8d80503";

#[test]
fn botocore_kms_vector_verifies() {
    let req = Req {
        method: "POST".to_owned(),
        path: "/".to_owned(),
        query: String::new(),
        headers: [
            ("host", HOST),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.Encrypt"),
            ("user-agent", "aws-cli/2 botocore"),
            ("x-amz-date", "20240101T120000Z"),
            ("authorization", BOTOCORE_KMS_AUTHORIZATION),
        ]
        .iter()
        .map(|(n, v)| ((*n).to_owned(), bytes(v)))
        .collect(),
        body: BODY.as_bytes().to_vec(),
    };
    assert_eq!(check(&req), Ok(()));
    // The Rust SDK signer produces the very same signature for the same request.
    assert_eq!(kms_request().header("authorization"), BOTOCORE_KMS_AUTHORIZATION);

    let mut tampered = req.clone();
    tampered.set_header("user-agent", "something else");
    assert_eq!(check(&tampered), Ok(()), "user-agent is not signed");
    tampered.set_header("x-amz-target", "TrentService.ScheduleKeyDeletion");
    assert_eq!(check(&tampered), Err(SigV4Error::SignatureMismatch));
}

/// AWS docs, "Deriving the signing key": secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY,
/// 20120215/us-east-1/iam.
#[test]
fn signing_key_known_answer() {
    let key = SigningKey::derive(SECRET.as_bytes(), "20120215", "us-east-1", "iam");
    assert_eq!(
        hex::encode(key.0),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

/// Checks a vector from the AWS SigV4 test suite (as shipped in `aws-sigv4`'s
/// `aws-signing-test-suite/v4`; credentials AKIDEXAMPLE, region us-east-1, service "service",
/// 20150830T123600Z). Those requests do not sign `x-amz-target`, so this runs the signature
/// step directly rather than `verify`.
fn suite_vector(method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) {
    let headers: Vec<(String, ByteBuf)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), bytes(v)))
        .collect();
    let req = SignedRequest {
        method,
        path,
        query,
        headers: &headers,
        body,
    };
    let (auth, amz_date) = parse_with_date(&req).expect("parse");
    assert_eq!(auth.access_key_id, "AKIDEXAMPLE");
    check_scope(&auth, amz_date, "us-east-1", "service").expect("scope");
    let key = SigningKey::derive(SECRET.as_bytes(), &auth.scope_date, &auth.region, &auth.service);
    let payload_hash = check_payload_hash(&req).expect("payload hash");
    assert_eq!(check_signature(&req, &auth, amz_date, &payload_hash, &key), Ok(()));

    let wrong = SigningKey::derive(b"not the secret", &auth.scope_date, &auth.region, &auth.service);
    assert_eq!(
        check_signature(&req, &auth, amz_date, &payload_hash, &wrong),
        Err(SigV4Error::SignatureMismatch)
    );
}

const SUITE_CRED: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
const SUITE_DATE: &str = "20150830T123600Z";

#[test]
fn suite_get_vanilla() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector("GET", "/", "", &headers, b"");
    // get-relative-relative-normalized, get-slash-dot-slash-normalized, get-slash-normalized:
    // same canonical request, same signature.
    suite_vector("GET", "/example1/example2/../..", "", &headers, b"");
    suite_vector("GET", "/./", "", &headers, b"");
    suite_vector("GET", "//", "", &headers, b"");
}

#[test]
fn suite_get_slashes_normalized() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;x-amz-date, \
         Signature=9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector("GET", "//example//", "", &headers, b"");
}

#[test]
fn suite_get_header_value_trim() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;my-header1;my-header2;x-amz-date, \
         Signature=acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("My-Header1", " value1"),
        ("My-Header2", " \"a   b   c\""),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector("GET", "/", "", &headers, b"");
}

#[test]
fn suite_get_header_key_duplicate_and_value_order() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;my-header1;x-amz-date, \
         Signature=c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("My-Header1", "value2"),
        ("My-Header1", "value2"),
        ("My-Header1", "value1"),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector("GET", "/", "", &headers, b"");

    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;my-header1;x-amz-date, \
         Signature=08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("My-Header1", "value4"),
        ("My-Header1", "value1"),
        ("My-Header1", "value3"),
        ("My-Header1", "value2"),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector("GET", "/", "", &headers, b"");
}

#[test]
fn suite_get_vanilla_query_order_encoded() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;x-amz-date, \
         Signature=371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector(
        "GET",
        "/",
        "Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
        &headers,
        b"",
    );
}

#[test]
fn suite_post_x_www_form_urlencoded() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, \
         Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
    );
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Host", "example.amazonaws.com"),
        ("Content-Length", "13"),
        ("X-Amz-Date", SUITE_DATE),
        (
            "x-amz-content-sha256",
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
        ),
        ("Authorization", &auth),
    ];
    suite_vector("POST", "/", "", &headers, b"Param1=value1");
}

#[test]
fn suite_get_vanilla_with_session_token() {
    let auth = format!(
        "{SUITE_CRED}, SignedHeaders=host;x-amz-date;x-amz-security-token, \
         Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
    );
    let headers = [
        ("Host", "example.amazonaws.com"),
        (
            "X-Amz-Security-Token",
            "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
        ),
        ("X-Amz-Date", SUITE_DATE),
        ("Authorization", &auth),
    ];
    suite_vector("GET", "/", "", &headers, b"");
}

fn uri(path: &str) -> String {
    let mut out = Vec::new();
    canonical_uri(path, &mut out);
    String::from_utf8(out).expect("ascii")
}

fn query(q: &str) -> String {
    let mut out = Vec::new();
    canonical_query(q, &mut out).expect("query");
    String::from_utf8(out).expect("ascii")
}

#[test]
fn canonical_uri_vectors() {
    // From the suite's double-encode-path / double-url-encode / normalization cases.
    assert_eq!(
        uri("/test/@connections/JBDvjfGEIAMCERw%3D"),
        "/test/%40connections/JBDvjfGEIAMCERw%253D"
    );
    assert_eq!(
        uri(
            "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations"
        ),
        "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations"
    );
    assert_eq!(uri(""), "/");
    assert_eq!(uri("/"), "/");
    assert_eq!(uri("//"), "/");
    assert_eq!(uri("/./"), "/");
    assert_eq!(uri("/example/.."), "/");
    assert_eq!(uri("/../.."), "/");
    assert_eq!(uri("//example//"), "/example/");
    assert_eq!(uri("/./example"), "/example");
    assert_eq!(uri("/a/b/."), "/a/b/");
    assert_eq!(uri("a/b"), "/a/b");
    assert_eq!(uri("/example space/"), "/example%20space/");
    assert_eq!(uri("/ሴ"), "/%E1%88%B4");
    assert_eq!(
        uri("/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
        "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    );
}

#[test]
fn canonical_query_vectors() {
    assert_eq!(query(""), "");
    assert_eq!(query("Param2=value2&Param1=value1"), "Param1=value1&Param2=value2");
    assert_eq!(query("b=2&a=1&a=0"), "a=0&a=1&b=2");
    assert_eq!(query("ሴ=bar"), "%E1%88%B4=bar");
    assert_eq!(query("a=b+c&d=%2b&e=%zz&f"), "a=b%20c&d=%2B&e=%25zz&f=");
    assert_eq!(query("&&a=1&&"), "a=1");
    assert_eq!(query("a=1=2"), "a=1%3D2");
    let too_many = vec!["a=1"; MAX_QUERY_PARAMS + 1].join("&");
    let mut out = Vec::new();
    assert!(matches!(
        canonical_query(&too_many, &mut out),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn header_value_normalization() {
    let norm = |v: &[u8]| {
        let mut out = Vec::new();
        push_header_value(v, &mut out).map(|()| out)
    };
    assert_eq!(norm(b"  a   b  c \t"), Ok(b"a b c".to_vec()));
    assert_eq!(norm(b""), Ok(Vec::new()));
    assert_eq!(norm(b"   "), Ok(Vec::new()));
    assert_eq!(norm(b"a\tb"), Ok(b"a\tb".to_vec()));
    assert_eq!(norm(b"\xff x"), Ok(b"\xff x".to_vec()));
    assert!(norm(b"a\r\nb").is_err());
    assert!(norm(b"a\0").is_err());
}

// ---- property tests ----

fn kms_headers_with_authorization(authorization: ByteBuf) -> Vec<(String, ByteBuf)> {
    vec![
        ("host".to_owned(), bytes(HOST)),
        ("content-type".to_owned(), bytes("application/x-amz-json-1.1")),
        ("x-amz-target".to_owned(), bytes("TrentService.Encrypt")),
        ("x-amz-date".to_owned(), bytes("20240101T120000Z")),
        ("authorization".to_owned(), authorization),
    ]
}

/// parse, and verify whatever parses; must never panic.
fn exercise(req: &SignedRequest<'_>) {
    if let Ok(auth) = parse(req) {
        let key = SigningKey::derive(SECRET.as_bytes(), &auth.scope_date, &auth.region, &auth.service);
        let _ = verify(req, &auth, &key, at(SIGNED_AT), REGION, SERVICE);
        let _ = format!("{auth:?}");
    }
}

fn printable() -> impl Strategy<Value = String> {
    "[ -~]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn structured_garbage_never_panics(
        algorithm in prop_oneof![9 => Just("AWS4-HMAC-SHA256".to_owned()), 1 => printable()],
        akid in prop_oneof![9 => Just(AKID.to_owned()), 1 => printable()],
        date in prop_oneof![9 => Just("20240101".to_owned()), 1 => "[0-9]{0,9}"],
        region in prop_oneof![9 => Just(REGION.to_owned()), 1 => printable()],
        service in prop_oneof![9 => Just(SERVICE.to_owned()), 1 => printable()],
        terminator in prop_oneof![9 => Just("aws4_request".to_owned()), 1 => printable()],
        signed in prop_oneof![
            9 => Just("content-type;host;x-amz-date;x-amz-target".to_owned()),
            2 => "[a-z;\\-]{0,80}",
            1 => printable(),
        ],
        signature in prop_oneof![9 => "[0-9a-f]{64}", 1 => "[0-9a-fA-F]{0,70}", 1 => printable()],
        separator in prop_oneof![9 => Just(", ".to_owned()), 1 => Just(",".to_owned()), 1 => printable()],
        amz_date in prop_oneof![9 => Just("20240101T120000Z".to_owned()), 1 => "[0-9TZ]{16}", 1 => printable()],
        method in prop_oneof![9 => Just("POST".to_owned()), 1 => printable()],
        path in prop_oneof![9 => Just("/".to_owned()), 1 => "[/.a%0-9]{0,20}", 1 => any::<String>()],
        query in prop_oneof![9 => Just(String::new()), 1 => "[a-z=&+%0-9]{0,30}", 1 => any::<String>()],
        header_value in prop_oneof![
            9 => "[ -~]{0,40}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 0..64),
        ],
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let authorization = format!(
            "{algorithm} Credential={akid}/{date}/{region}/{service}/{terminator}{separator}\
             SignedHeaders={signed}{separator}Signature={signature}"
        );
        let mut headers = kms_headers_with_authorization(bytes(&authorization));
        for (name, value) in &mut headers {
            match name.as_str() {
                "x-amz-date" => *value = bytes(&amz_date),
                "content-type" => *value = ByteBuf::from(header_value.clone()),
                _ => {}
            }
        }
        headers.push(("x-amz-meta".to_owned(), ByteBuf::from(header_value)));
        let req = SignedRequest { method: &method, path: &path, query: &query, headers: &headers, body: &body };
        exercise(&req);
    }
}

proptest! {
    #[test]
    fn garbage_authorization_never_panics(value in any::<String>()) {
        let headers = kms_headers_with_authorization(bytes(&value));
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, body: b"{}" };
        exercise(&req);
    }

    #[test]
    fn garbage_authorization_bytes_never_panic(value in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let headers = kms_headers_with_authorization(ByteBuf::from(value));
        let req = SignedRequest { method: "POST", path: "/", query: "", headers: &headers, body: b"{}" };
        exercise(&req);
    }

    #[test]
    fn canonicalization_never_panics(path in any::<String>(), query in any::<String>()) {
        let mut out = Vec::new();
        canonical_uri(&path, &mut out);
        prop_assert!(out.starts_with(b"/"));
        let _ = canonical_query(&query, &mut out);
    }

    #[test]
    fn percent_encoding_round_trips(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut encoded = Vec::new();
        percent_encode(&data, false, &mut encoded);
        prop_assert!(encoded.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(b)));
        prop_assert_eq!(percent_decode(&encoded), data);
    }

    /// Differential test: whatever aws-sigv4 signs (paths, queries, header values, times within
    /// the window), the verifier accepts; and flipping the body is always caught.
    #[test]
    fn aws_sigv4_signed_requests_verify(
        segments in proptest::collection::vec(prop_oneof!["\\PC{0,8}", Just(".".to_owned()), Just("..".to_owned())], 0..5),
        trailing_slash in any::<bool>(),
        params in proptest::collection::vec(("\\PC{0,6}", "\\PC{0,6}"), 0..5),
        values in proptest::collection::vec("[ -~]{0,20}", 0..4),
        skew in -300i64..=300,
        body in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut path = String::new();
        for segment in &segments {
            let mut enc = Vec::new();
            percent_encode(segment.as_bytes(), false, &mut enc);
            path.push('/');
            path.push_str(std::str::from_utf8(&enc).expect("ascii"));
        }
        if path.is_empty() || trailing_slash {
            path.push('/');
        }
        let query = params
            .iter()
            .map(|(k, v)| {
                let (mut ek, mut ev) = (Vec::new(), Vec::new());
                percent_encode(k.as_bytes(), false, &mut ek);
                percent_encode(v.as_bytes(), false, &mut ev);
                format!("{}={}", String::from_utf8_lossy(&ek), String::from_utf8_lossy(&ev))
            })
            .collect::<Vec<_>>()
            .join("&");
        let mut spec = Spec { path, query, body, time: SIGNED_AT + skew, ..Spec::default() };
        for value in &values {
            spec.headers.push(("x-amz-meta-p".to_owned(), value.clone()));
        }
        let req = sign_request(spec);
        prop_assert_eq!(check(&req), Ok(()));

        let mut tampered = req.clone();
        tampered.body.push(0);
        prop_assert_eq!(check(&tampered), Err(SigV4Error::SignatureMismatch));
    }
}
