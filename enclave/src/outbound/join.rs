//! The joiner's call to a Ready peer: `Keyward.JoinCluster {Document}`
//! over [`super::https`] (the deployment's CA pinned: cluster nodes share
//! the sealed TLS identity), answered with the join package. Unsigned: the
//! attestation document is the joiner's credential.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::https::HttpsClient;

/// Asks the peer behind `https` for the root; the join package's bytes, or
/// the peer's refusal (`Type: message`) or the transport's failure.
pub async fn request_root(https: &HttpsClient, document: &[u8]) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(&json!({ "Document": B64.encode(document) })).map_err(|e| e.to_string())?;
    let headers = vec![
        ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
        ("x-amz-target".to_string(), "Keyward.JoinCluster".to_string()),
    ];
    let answer = https.post(&headers, body).await.map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if answer.status != 200 {
        let kind = json.get("__type").and_then(Value::as_str).unwrap_or("error");
        let message: String = json
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .take(500)
            .collect();
        return Err(format!(
            "the peer {} answered HTTP {}: {kind}: {message}",
            https.endpoint().url,
            answer.status
        ));
    }
    json.get("Package")
        .and_then(Value::as_str)
        .and_then(|text| B64.decode(text).ok())
        .ok_or_else(|| "the peer's answer has no Package".to_string())
}
