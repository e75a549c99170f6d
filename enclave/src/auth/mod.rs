//! Authentication: who sent this request. SigV4 is verified here, inside the
//! enclave, against credentials the enclave sealed itself.

pub mod credentials;
pub mod sigv4;

use time::OffsetDateTime;

use crate::api::error::KmsError;
use credentials::{CredentialCache, Role};
use sigv4::{SigV4Error, SignedRequest};

/// SigV4 service name every request must be signed for.
pub const SERVICE: &str = "kms";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: String,
    pub access_key_id: String,
    pub roles: Vec<Role>,
}

/// Verifies the request's SigV4 signature and returns its principal.
pub async fn authenticate(
    req: &SignedRequest<'_>,
    cache: &CredentialCache,
    records: &crate::store::Records<'_>,
    region: &str,
    now: OffsetDateTime,
) -> Result<Principal, KmsError> {
    let auth = sigv4::parse(req).map_err(map_sigv4)?;
    let credential = cache
        .lookup(&auth.access_key_id, records)
        .await?
        .ok_or_else(|| KmsError::UnrecognizedClient("The security token included in the request is invalid.".into()))?;
    let key = credential.signing_key(&auth.scope_date, &auth.region, &auth.service);
    sigv4::verify(req, &auth, &key, now, region, SERVICE).map_err(map_sigv4)?;
    Ok(Principal {
        tenant: credential.tenant.clone(),
        access_key_id: auth.access_key_id,
        roles: credential.roles.clone(),
    })
}

fn map_sigv4(e: SigV4Error) -> KmsError {
    match e {
        SigV4Error::Missing => {
            KmsError::UnrecognizedClient("Missing Authentication Token: the request must be signed with SigV4.".into())
        }
        SigV4Error::Expired { request_time, now } => KmsError::InvalidSignature(format!(
            "Signature expired: {request_time} is outside the allowed 5 minutes of the server time {now}."
        )),
        SigV4Error::SignatureMismatch => KmsError::InvalidSignature(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into(),
        ),
        other => KmsError::InvalidSignature(other.to_string()),
    }
}
