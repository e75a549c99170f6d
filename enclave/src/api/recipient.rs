//! The `Recipient` parameter: parsed and validated here (AWS's messages);
//! the attestation document is verified and secrets are released to it in
//! `keystore::recipient`.

use serde::Deserialize;
use serde_json::Value;

use super::error::KmsError;
use super::params::{blob, length, parse};
use crate::context::Ctx;
use crate::keystore::recipient as domain;

const RSAES_OAEP_SHA_256: &str = "RSAES_OAEP_SHA_256";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecipientParam {
    key_encryption_algorithm: Option<String>,
    attestation_document: Option<String>,
    /// Keyward extension: the nonce the document must carry (base64, 1–512 bytes).
    nonce: Option<String>,
}

/// What a request names as the key whose secret goes to the recipient.
pub enum Named<'a> {
    Key(&'a str),
    /// Decrypt: its `KeyId`, else the key in the ciphertext.
    Ciphertext(&'a [u8], Option<&'a str>),
}

/// [`verify`], and when the Recipient is refused, the key the request names
/// is noted for the audit record (no key has been loaded yet).
pub async fn verify_for(
    ctx: &Ctx<'_>,
    param: Option<Value>,
    named: Named<'_>,
) -> Result<Option<domain::Recipient>, KmsError> {
    let verified = verify(ctx, param);
    if verified.is_err() {
        match named {
            Named::Key(key_id) => crate::keystore::keys::note_named_key(ctx, key_id).await,
            Named::Ciphertext(blob, key_id) => crate::keystore::crypto::note_named_key(ctx, blob, key_id).await,
        }
    }
    verified
}

/// Parses and verifies a `Recipient` parameter; `None` when absent.
pub fn verify(ctx: &Ctx<'_>, param: Option<Value>) -> Result<Option<domain::Recipient>, KmsError> {
    let Some(param) = param else { return Ok(None) };
    let param: RecipientParam = parse(param)?;
    match param.key_encryption_algorithm.as_deref() {
        Some(RSAES_OAEP_SHA_256) => {}
        None => return Err(KmsError::missing("recipient.keyEncryptionAlgorithm")),
        Some(_) => {
            return Err(KmsError::validation(
                "recipient.keyEncryptionAlgorithm",
                "Member must satisfy enum value set: [RSAES_OAEP_SHA_256]",
            ));
        }
    }
    let document = blob(
        "recipient.attestationDocument",
        &param
            .attestation_document
            .ok_or_else(|| KmsError::missing("recipient.attestationDocument"))?,
    )?;
    let nonce = match param.nonce {
        Some(n) => {
            let n = blob("recipient.nonce", &n)?;
            length("recipient.nonce", n.len(), 1, 512)?;
            Some(n)
        }
        None => None,
    };
    domain::verify(ctx, &document, nonce.as_deref()).map(Some)
}
