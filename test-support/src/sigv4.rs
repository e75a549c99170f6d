//! SigV4-signing raw AWS JSON requests (for what an SDK cannot send).

use std::time::SystemTime;

use aws_sdk_kms::config::Credentials;

use crate::{Creds, REGION};

/// `host`, `content-type` and `x-amz-target` for an API call.
pub fn api_headers(host: &str, target: &str) -> Vec<(String, String)> {
    vec![
        ("host".to_string(), host.to_string()),
        ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ("x-amz-target".to_string(), target.to_string()),
    ]
}

/// The full `X-Amz-Target` of an operation: `Keyward.*` and
/// `TrentService.*` as given, anything else under `TrentService.`.
pub fn target(op: &str) -> String {
    if op.starts_with("Keyward.") || op.starts_with("TrentService.") {
        op.to_string()
    } else {
        format!("TrentService.{op}")
    }
}

/// SigV4-signs (service `kms`, [`REGION`]) a `POST /` to `host` with these
/// headers and body at `time`, appending `x-amz-date` and `authorization`.
pub fn sign_headers(headers: &mut Vec<(String, String)>, host: &str, body: &[u8], creds: &Creds, time: SystemTime) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningParams, SigningSettings, sign};
    use aws_sigv4::sign::v4;

    let identity = Credentials::new(&creds.access_key_id, &creds.secret, None, None, "test").into();
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("kms")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable request");
    let (instructions, _signature) = sign(signable, &params).expect("sign").into_parts();
    let added: Vec<(String, String)> = instructions
        .headers()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    assert!(
        added.iter().any(|(k, _)| k == "authorization"),
        "signer produced no authorization header"
    );
    headers.extend(added);
}
