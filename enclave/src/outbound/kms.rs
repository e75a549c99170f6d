//! An AWS KMS JSON client for the two custody calls, `GenerateDataKey` and
//! `Decrypt` with a `Recipient`, SigV4-signed (the `aws-sigv4` crate) inside
//! the enclave and sent over [`super::https`] (TLS with pinned roots, ending
//! here). It implements the custody layer's [`KeyService`].
//!
//! The credential signs the calls; it does not protect the root. What
//! protects the root is that the service releases it only as
//! `CiphertextForRecipient` to an attested enclave (the custody key's
//! policy): docs/custody.md, THREAT-MODEL.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::https::HttpsClient;
use crate::clock::Clock;
use crate::config::CustodyCredential;
use crate::custody::kms::{
    DataKeyAnswer, DataKeyRequest, DecryptRequest, KEY_SPEC, KeyService, ServiceError, ServiceFuture,
};

/// The Recipient key encryption algorithm (the one AWS KMS supports).
pub const RECIPIENT_ALGORITHM: &str = "RSAES_OAEP_SHA_256";

/// The custody key service's client.
pub struct KmsClient {
    https: HttpsClient,
    region: String,
    credential: Arc<CustodyCredential>,
    clock: Arc<dyn Clock>,
}

impl KmsClient {
    pub fn new(https: HttpsClient, region: String, credential: Arc<CustodyCredential>, clock: Arc<dyn Clock>) -> Self {
        KmsClient {
            https,
            region,
            credential,
            clock,
        }
    }

    /// One signed call: the answer's JSON, or the service's error as
    /// `Type: message` (or the transport's failure).
    async fn call(&self, operation: &str, body: Value) -> Result<Value, ServiceError> {
        let body = serde_json::to_vec(&body).map_err(|e| ServiceError(format!("encoding {operation}: {e}")))?;
        let authority = self.https.endpoint().authority();
        let mut headers = vec![
            ("host".to_string(), authority.clone()),
            ("content-type".to_string(), "application/x-amz-json-1.1".to_string()),
            ("x-amz-target".to_string(), format!("TrentService.{operation}")),
        ];
        self.sign(&mut headers, &authority, &body)?;
        let answer = self
            .https
            .post(&headers, body)
            .await
            .map_err(|e| ServiceError(e.to_string()))?;
        let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if answer.status == 200 {
            return Ok(json);
        }
        let kind = json
            .get("__type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .unwrap_or("error");
        let message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let message: String = message.chars().take(500).collect();
        Err(ServiceError(format!(
            "{operation} at {} answered HTTP {}: {kind}: {message}",
            self.https.endpoint().url,
            answer.status
        )))
    }

    fn sign(&self, headers: &mut Vec<(String, String)>, authority: &str, body: &[u8]) -> Result<(), ServiceError> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        use aws_sigv4::sign::v4;

        let failed = |e: &dyn std::fmt::Display| ServiceError(format!("cannot sign the custody call: {e}"));
        let identity = aws_credential_types::Credentials::new(
            self.credential.access_key_id.clone(),
            self.credential.secret_access_key.to_string(),
            self.credential.session_token.as_ref().map(|t| t.to_string()),
            None,
            "keyward-custody",
        )
        .into();
        let now = self.clock.now();
        let time = SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(now.unix_timestamp()).map_err(|e| failed(&e))?);
        let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(time)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            format!("https://{authority}/"),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| failed(&e))?.into_parts();
        headers.extend(
            instructions
                .headers()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())),
        );
        Ok(())
    }
}

fn recipient(document: &[u8]) -> Value {
    json!({
        "KeyEncryptionAlgorithm": RECIPIENT_ALGORITHM,
        "AttestationDocument": B64.encode(document),
    })
}

fn blob(answer: &Value, field: &str, operation: &str) -> Result<Vec<u8>, ServiceError> {
    answer
        .get(field)
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .ok_or_else(|| ServiceError(format!("{operation}'s answer has no {field}")))
}

fn context(context: &BTreeMap<String, String>) -> Value {
    json!(context)
}

impl KeyService for KmsClient {
    fn generate_data_key<'a>(&'a self, request: &'a DataKeyRequest) -> ServiceFuture<'a, DataKeyAnswer> {
        Box::pin(async move {
            let answer = self
                .call(
                    "GenerateDataKey",
                    json!({
                        "KeyId": request.key_id,
                        "KeySpec": KEY_SPEC,
                        "EncryptionContext": context(&request.encryption_context),
                        "Recipient": recipient(&request.attestation_document),
                    }),
                )
                .await?;
            if answer.get("Plaintext").is_some_and(|p| !p.is_null()) {
                // A service that ignores Recipient sent the root through the host.
                return Err(ServiceError(
                    "GenerateDataKey answered a Plaintext: the service does not honour Recipient; refusing the key"
                        .into(),
                ));
            }
            Ok(DataKeyAnswer {
                ciphertext_blob: blob(&answer, "CiphertextBlob", "GenerateDataKey")?,
                ciphertext_for_recipient: blob(&answer, "CiphertextForRecipient", "GenerateDataKey")?,
            })
        })
    }

    fn decrypt<'a>(&'a self, request: &'a DecryptRequest) -> ServiceFuture<'a, Vec<u8>> {
        Box::pin(async move {
            let answer = self
                .call(
                    "Decrypt",
                    json!({
                        "KeyId": request.key_id,
                        "CiphertextBlob": B64.encode(&request.ciphertext_blob),
                        "EncryptionContext": context(&request.encryption_context),
                        "Recipient": recipient(&request.attestation_document),
                    }),
                )
                .await?;
            blob(&answer, "CiphertextForRecipient", "Decrypt")
        })
    }
}
