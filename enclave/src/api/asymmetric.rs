//! ECC_NIST_P256 keys: Sign, Verify, GetPublicKey (SIGN_VERIFY) and
//! DeriveSharedSecret (KEY_AGREEMENT).

use serde_json::Value;

use super::Ctx;
use super::error::KmsError;

pub async fn sign(_ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    Err(KmsError::UnsupportedOperation("Sign is not implemented yet.".into()))
}

pub async fn verify(_ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    Err(KmsError::UnsupportedOperation("Verify is not implemented yet.".into()))
}

pub async fn get_public_key(_ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    Err(KmsError::UnsupportedOperation(
        "GetPublicKey is not implemented yet.".into(),
    ))
}

pub async fn derive_shared_secret(_ctx: &Ctx<'_>, _body: Value) -> Result<Value, KmsError> {
    Err(KmsError::UnsupportedOperation(
        "DeriveSharedSecret is not implemented yet.".into(),
    ))
}
