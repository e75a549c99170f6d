//! Tests of SigV4 verification against requests signed by `aws-sigv4` itself (this file holds the
//! signing fixtures).

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

mod properties;
mod requests;
mod vectors;

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
