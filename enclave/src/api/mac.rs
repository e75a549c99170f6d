//! HMAC keys: GenerateMac and VerifyMac.

use serde_json::Value;

use super::Ctx;
use super::error::KmsError;

pub async fn generate_mac(_ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    Err(KmsError::UnsupportedOperation(
        "GenerateMac is not implemented yet.".into(),
    ))
}

pub async fn verify_mac(_ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    Err(KmsError::UnsupportedOperation(
        "VerifyMac is not implemented yet.".into(),
    ))
}
