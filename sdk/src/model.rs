//! Request and response shapes of the `Keyward.*` extension operations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::audit::{AuditError, AuditRecord, Head, Verified, verify_chain};
use crate::secret::Secret;

/// A tenant access key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Key management: CreateKey, key state, rotation, aliases, tags, access keys, policies.
    KeyAdmin,
    /// Cryptographic use: Encrypt, Decrypt, GenerateDataKey*, Sign, Verify, MACs, …
    KeyUser,
}

impl Role {
    /// The wire name (`KeyAdmin` / `KeyUser`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::KeyAdmin => "KeyAdmin",
            Role::KeyUser => "KeyUser",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is neither `KeyAdmin` nor `KeyUser`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?} (expected KeyAdmin or KeyUser)")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;

    /// `KeyAdmin` or `KeyUser`, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("KeyAdmin") {
            Ok(Role::KeyAdmin)
        } else if s.eq_ignore_ascii_case("KeyUser") {
            Ok(Role::KeyUser)
        } else {
            Err(ParseRoleError(s.to_owned()))
        }
    }
}

/// `Keyward.CreateTenant`'s answer: the new tenant and its first (KeyAdmin)
/// access key. The secret is returned only this once.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedTenant {
    /// The tenant id.
    pub tenant_id: String,
    /// The tenant's first access key id.
    pub access_key_id: String,
    /// Its secret access key.
    pub secret_access_key: Secret,
}

/// One tenant as `Keyward.ListTenants` lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tenant {
    /// The tenant id.
    pub tenant_id: String,
    /// Whether the tenant may make requests.
    pub enabled: bool,
    /// Creation time, seconds since the epoch.
    pub creation_date: f64,
}

/// `Keyward.CreateAccessKey`'s answer. The secret is returned only this once.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreatedAccessKey {
    /// The new access key id.
    pub access_key_id: String,
    /// Its secret access key.
    pub secret_access_key: Secret,
    /// The role it was created with, as the service names it.
    pub role: String,
}

/// One access key as `Keyward.ListAccessKeys` lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessKeyInfo {
    /// The access key id.
    pub access_key_id: String,
    /// Its roles as the service names them (`KeyAdmin`, `KeyUser`).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Creation time, seconds since the epoch.
    pub creation_date: f64,
}

impl AccessKeyInfo {
    /// Whether the key has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r == role.as_str())
    }
}

/// One page of `Keyward.GetAuditLog`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AuditLogPage {
    /// The records of this page, in sequence order.
    #[serde(default)]
    pub records: Vec<AuditRecord>,
    /// Whether more records follow ([`AuditLogPage::next_marker`]).
    #[serde(default)]
    pub truncated: bool,
    /// Where the next page starts.
    #[serde(default)]
    pub next_marker: Option<String>,
    /// The signed head of the caller's chain when the page was read.
    pub head: Head,
    /// The enclave's audit public key as the service reports it: base64
    /// SubjectPublicKeyInfo DER. It comes through the untrusted host; see the
    /// crate docs.
    pub audit_public_key: String,
}

/// A whole audit chain as [`crate::Client::fetch_audit_chain`] read it:
/// not yet verified.
#[derive(Debug, Clone)]
pub struct AuditChain {
    /// Every record, in the order the service returned them.
    pub records: Vec<AuditRecord>,
    /// The head returned with the last page.
    pub head: Head,
    /// The `AuditPublicKey` the service returned (SPKI DER), as reported by
    /// the untrusted host.
    pub audit_public_key: Vec<u8>,
}

impl AuditChain {
    /// [`verify_chain`] of these records and head against
    /// `public_key_spki_der` (pin it; `&self.audit_public_key` only proves
    /// the chain consistent with a key the host handed over).
    pub fn verify_with(&self, public_key_spki_der: &[u8]) -> Result<Verified, AuditError> {
        verify_chain(&self.records, &self.head, public_key_spki_der)
    }
}

// --- request bodies ---

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TenantIdRequest<'a> {
    pub tenant_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListTenantsRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListTenantsResponse {
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    #[serde(default)]
    pub truncated: bool,
    #[serde(default)]
    pub next_marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateAccessKeyRequest {
    pub role: Role,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListAccessKeysResponse {
    #[serde(default)]
    pub access_keys: Vec<AccessKeyInfo>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AccessKeyIdRequest<'a> {
    pub access_key_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct GetAuditLogRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marker: Option<&'a str>,
}

/// The empty JSON object (`{}`), as a request or an ignored response.
#[derive(Serialize, Deserialize)]
pub(crate) struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_serialize() -> Result<(), Box<dyn std::error::Error>> {
        assert_eq!("KeyAdmin".parse::<Role>()?, Role::KeyAdmin);
        assert_eq!("keyuser".parse::<Role>()?, Role::KeyUser);
        assert!("Operator".parse::<Role>().is_err());
        let body = serde_json::to_string(&CreateAccessKeyRequest { role: Role::KeyUser })?;
        assert_eq!(body, r#"{"Role":"KeyUser"}"#);
        Ok(())
    }

    #[test]
    fn optional_fields_are_omitted() -> Result<(), serde_json::Error> {
        let body = serde_json::to_string(&GetAuditLogRequest {
            start_time: Some(10),
            end_time: None,
            limit: Some(5),
            marker: None,
        })?;
        assert_eq!(body, r#"{"StartTime":10,"Limit":5}"#);
        assert_eq!(serde_json::to_string(&Empty {})?, "{}");
        Ok(())
    }

    #[test]
    fn created_tenant_debug_hides_the_secret() -> Result<(), serde_json::Error> {
        let t: CreatedTenant =
            serde_json::from_str(r#"{"TenantId":"t1","AccessKeyId":"AKIA1","SecretAccessKey":"s3cr3t-value"}"#)?;
        assert_eq!(t.secret_access_key.expose(), "s3cr3t-value");
        assert!(!format!("{t:?}").contains("s3cr3t"));
        Ok(())
    }
}
