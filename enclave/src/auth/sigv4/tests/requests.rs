//! Requests signed by `aws-sigv4`: valid ones verify; tampering, scope, clock skew, unsigned or
//! repeated headers and malformed headers are refused with the right error.

use super::*;

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
