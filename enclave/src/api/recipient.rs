//! The `Recipient` parameter: parsed and validated here (AWS's messages);
//! the attestation document is verified and secrets are released to it in
//! `keystore::recipient`.

use serde::Deserialize;
use serde_json::Value;

use super::error::KmsError;
use super::params::{blob, parse};
use crate::context::Ctx;
use crate::keystore::recipient as domain;

const RSAES_OAEP_SHA_256: &str = "RSAES_OAEP_SHA_256";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecipientParam {
    key_encryption_algorithm: Option<String>,
    attestation_document: Option<String>,
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
    domain::verify(ctx, &document).map(Some)
}
