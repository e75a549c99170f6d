//! Authentication: who sent this request. SigV4 is verified here, inside the
//! enclave, against credentials the enclave sealed itself.

pub mod authorize;
pub mod credentials;
pub mod failures;
pub mod ratelimit;
pub mod sigv4;

use time::OffsetDateTime;

use crate::error::KmsError;
use credentials::{CredentialCache, Role};
use sigv4::{SigV4Error, SignedRequest};

/// SigV4 service name every request must be signed for.
pub const SERVICE: &str = "kms";

/// The tenant field of the operator principal (tenant ids are 12 digits, so
/// it never names a tenant).
pub const OPERATOR: &str = "operator";

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The tenant, or [`OPERATOR`].
    pub tenant: String,
    pub access_key_id: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        self.roles.contains(&Role::Operator)
    }

    /// Roles as the audit log writes them.
    pub fn roles_label(&self) -> String {
        self.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// A failed authentication, with the principal the request claimed to be
/// when its access key exists (so the failure is audited in that chain).
#[derive(Debug)]
pub struct AuthFailure {
    pub error: KmsError,
    pub claimed: Option<Principal>,
    pub access_key_id: String,
}

/// Verifies the request's SigV4 signature and returns its principal.
pub async fn authenticate(
    req: &SignedRequest<'_>,
    cache: &CredentialCache,
    records: &crate::store::Records<'_>,
    region: &str,
    now: OffsetDateTime,
) -> Result<Principal, AuthFailure> {
    let auth = sigv4::parse(req).map_err(|e| AuthFailure {
        error: map_sigv4(e),
        claimed: None,
        access_key_id: String::new(),
    })?;
    let akid = auth.access_key_id.clone();
    let credential = cache
        .lookup(&auth.access_key_id, records)
        .await
        .map_err(|e| AuthFailure {
            error: e.into(),
            claimed: None,
            access_key_id: akid.clone(),
        })?
        .ok_or_else(|| AuthFailure {
            error: KmsError::UnrecognizedClient("The security token included in the request is invalid.".into()),
            claimed: None,
            access_key_id: akid.clone(),
        })?;
    let principal = Principal {
        tenant: credential.tenant.clone(),
        access_key_id: akid.clone(),
        roles: credential.roles.clone(),
    };
    let key = credential.signing_key(&auth.scope_date, &auth.region, &auth.service);
    match sigv4::verify(req, &auth, &key, now, region, SERVICE) {
        Ok(()) => Ok(principal),
        Err(e) => Err(AuthFailure {
            error: map_sigv4(e),
            claimed: Some(principal),
            access_key_id: akid,
        }),
    }
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
