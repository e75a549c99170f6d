//! Attestation extensions: `Keyward.UpdateKeyAttestationPolicy`,
//! `Keyward.DescribeKeyAttestationPolicy`, `Keyward.UpdateTenantAttestationPolicy`,
//! `Keyward.LockKeyProtection`, `Keyward.DescribeKeyProtection` and
//! `Keyward.GetAttestationDocument`
//! (the enclave attests itself, binding its audit public key, or with
//! `KeyId` the BYOK wrapping key of that key's outstanding import parameters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{b64, blob, length, parse, render, required};
use crate::context::Ctx;
use crate::keys::record::AttestationPolicy;
use crate::keystore::attestation::{self, KeyAttestation};
use crate::keystore::protection::{self, Protection};

/// At most this many allowed values per PCR.
const MAX_PCR_VALUES: usize = 16;
/// The Nitro Enclaves measurements a policy may name: PCR0 (the image,
/// AWS's `ImageSha384`), PCR1 (kernel and boot), PCR2 (application), PCR3
/// (IAM role of the parent), PCR4 (parent instance id), PCR8 (signing
/// certificate of the image).
const MEASURED_PCRS: &[u8] = &[0, 1, 2, 3, 4, 8];
/// Nitro PCRs are SHA-384 values.
const PCR_LEN: usize = 48;

/// An attestation policy as requests state it (`AttestationPolicy` of
/// CreateKey, the body of `UpdateKeyAttestationPolicy` and
/// `UpdateTenantAttestationPolicy`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyParam {
    /// Accepted for compatibility: a policy always requires a Recipient
    /// (`false` with a policy is refused).
    require_recipient: Option<bool>,
    #[serde(rename = "AllowedPCRs")]
    allowed_pcrs: Option<BTreeMap<String, Vec<String>>>,
    /// AWS's name for PCR0 (`kms:RecipientAttestation:ImageSha384`).
    image_sha384: Option<Vec<String>>,
    /// Explicitly admit any attested enclave, with no measurement (weak).
    allow_any_enclave: Option<bool>,
}

fn invalid(message: &str) -> KmsError {
    KmsError::validation("attestationPolicy", message)
}

/// PCR values: 1–16 of them, SHA-384 in hex; normalized to lower case.
fn pcr_values(values: Vec<String>) -> Result<Vec<String>, KmsError> {
    if values.is_empty() || values.len() > MAX_PCR_VALUES {
        return Err(KmsError::validation(
            "allowedPCRs",
            "Each PCR lists 1-16 allowed values",
        ));
    }
    values
        .into_iter()
        .map(|value| {
            let bytes = hex::decode(&value).map_err(|_| KmsError::validation("allowedPCRs", "PCR values are hex"))?;
            if bytes.len() != PCR_LEN {
                return Err(KmsError::validation(
                    "allowedPCRs",
                    "PCR values are SHA-384 measurements (48 bytes, 96 hex digits)",
                ));
            }
            Ok(hex::encode(bytes))
        })
        .collect()
}

/// Validates an attestation policy parameter. Nothing (or only `false`
/// flags): no policy. Otherwise a policy that requires a Recipient, with
/// its measurements: PCR0 (or `ImageSha384`) at least, optionally PCR1, 2,
/// 3, 4 and 8; or, with no measurement, `AllowAnyEnclave: true`.
pub fn policy(param: PolicyParam) -> Result<Option<AttestationPolicy>, KmsError> {
    let mut allowed_pcrs = BTreeMap::new();
    for (index, values) in param.allowed_pcrs.unwrap_or_default() {
        let index: u8 = index
            .parse()
            .ok()
            .filter(|i| MEASURED_PCRS.contains(i))
            .ok_or_else(|| KmsError::validation("allowedPCRs", "PCR indexes are 0, 1, 2, 3, 4 and 8"))?;
        allowed_pcrs.insert(index, pcr_values(values)?);
    }
    if let Some(image) = param.image_sha384 {
        if allowed_pcrs.contains_key(&0) {
            return Err(invalid(
                "ImageSha384 is PCR0: give it once, as ImageSha384 or as AllowedPCRs 0",
            ));
        }
        allowed_pcrs.insert(0, pcr_values(image)?);
    }
    let allow_any = param.allow_any_enclave == Some(true);
    let any_policy = allow_any || !allowed_pcrs.is_empty() || param.require_recipient == Some(true);
    if !any_policy {
        return Ok(None);
    }
    if param.require_recipient == Some(false) {
        return Err(invalid(
            "An attestation policy always requires a Recipient: RequireRecipient cannot be false",
        ));
    }
    if allow_any && !allowed_pcrs.is_empty() {
        return Err(invalid("AllowAnyEnclave cannot be combined with measurements"));
    }
    if !allow_any && allowed_pcrs.is_empty() {
        return Err(invalid(
            "The attestation policy has no measurement, so any attested enclave of any AWS account would \
             qualify: list PCR0 (ImageSha384) in AllowedPCRs, or say AllowAnyEnclave: true",
        ));
    }
    if !allow_any && !allowed_pcrs.contains_key(&0) {
        return Err(invalid(
            "An attestation policy names PCR0 (the enclave image, ImageSha384) at least",
        ));
    }
    Ok(Some(AttestationPolicy {
        require_recipient: true,
        allowed_pcrs,
    }))
}

/// An attestation policy as responses show it (no policy: nothing
/// required, `RequireRecipient: false`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PolicyView<'a> {
    require_recipient: bool,
    /// PCR index (as a string) → allowed values in hex.
    #[serde(rename = "AllowedPCRs")]
    allowed_pcrs: &'a BTreeMap<u8, Vec<String>>,
    allow_any_enclave: bool,
    /// Set for a policy that admits any enclave.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
}

impl<'a> PolicyView<'a> {
    pub(crate) fn of(policy: Option<&'a AttestationPolicy>) -> PolicyView<'a> {
        static NONE: BTreeMap<u8, Vec<String>> = BTreeMap::new();
        match policy {
            Some(p) => PolicyView {
                require_recipient: true,
                allowed_pcrs: &p.allowed_pcrs,
                allow_any_enclave: p.allows_any_enclave(),
                warning: p.allows_any_enclave().then_some(attestation::WEAK_POLICY_WARNING),
            },
            None => PolicyView {
                require_recipient: false,
                allowed_pcrs: &NONE,
                allow_any_enclave: false,
                warning: None,
            },
        }
    }
}

/// A key's attestation policy as `UpdateKeyAttestationPolicy` and
/// `DescribeKeyAttestationPolicy` answer it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AttestationPolicyResponse<'a> {
    key_id: &'a str,
    #[serde(flatten)]
    policy: PolicyView<'a>,
}

fn describe(key: &KeyAttestation) -> Result<Value, KmsError> {
    render(&AttestationPolicyResponse {
        key_id: &key.key_arn,
        policy: PolicyView::of(key.policy.as_ref()),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateRequest {
    key_id: Option<String>,
    #[serde(flatten)]
    policy: PolicyParam,
}

/// The members a policy update may carry: a member this operation does not
/// know (a misspelt one, or the policy wrapped in an object) would otherwise
/// read as "no policy" and remove the protection the caller meant to set.
const POLICY_MEMBERS: [&str; 5] = [
    "RequireRecipient",
    "AllowedPCRs",
    "ImageSha384",
    "AllowAnyEnclave",
    "DryRun",
];

fn known_members_only(body: &Value, others: &[&str]) -> Result<(), KmsError> {
    let Some(members) = body.as_object() else {
        return Ok(());
    };
    match members
        .keys()
        .find(|m| !POLICY_MEMBERS.contains(&m.as_str()) && !others.contains(&m.as_str()))
    {
        Some(member) => Err(invalid(&format!(
            "Unknown member {}: an attestation policy update names its members at the top level \
             (RequireRecipient, AllowedPCRs, ImageSha384, AllowAnyEnclave); none of them removes the policy",
            crate::text::printable(member)
        ))),
        None => Ok(()),
    }
}

pub async fn update_key_attestation_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    known_members_only(&body, &["KeyId"])?;
    let req: UpdateRequest = parse(body)?;
    let new_policy = policy(req.policy)?;
    describe(&attestation::update_policy(ctx, req.key_id, new_policy).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeRequest {
    key_id: Option<String>,
}

pub async fn describe_key_attestation_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeRequest = parse(body)?;
    describe(&attestation::policy(ctx, &required("keyId", req.key_id)?).await?)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TenantPolicyResponse<'a> {
    tenant_id: &'a str,
    #[serde(flatten)]
    policy: PolicyView<'a>,
}

/// `Keyward.UpdateTenantAttestationPolicy`: the tenant's default attestation
/// policy (the same members as a key's; none removes it).
pub async fn update_tenant_attestation_policy(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    known_members_only(&body, &[])?;
    let param: PolicyParam = parse(body)?;
    let new_policy = policy(param)?;
    attestation::update_tenant_policy(ctx, new_policy.clone()).await?;
    render(&TenantPolicyResponse {
        tenant_id: &ctx.principal.tenant,
        policy: PolicyView::of(new_policy.as_ref()),
    })
}

/// `Keyward.DescribeKeyProtection` and `Keyward.LockKeyProtection` answer this.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProtectionResponse<'a> {
    key_id: &'a str,
    /// The key's own policy (`null`: none).
    attestation_policy: Option<PolicyView<'a>>,
    /// The tenant's default (`null`: none); it applies when the key has none.
    tenant_attestation_policy: Option<PolicyView<'a>>,
    /// `Key`, `Tenant` or `None`: which policy governs the key.
    effective_attestation_policy: &'static str,
    policy_module_sha256: Option<&'a str>,
    tenant_policy_module_sha256: Option<&'a str>,
    protection_locked: bool,
}

fn describe_protection(p: &Protection) -> Result<Value, KmsError> {
    render(&ProtectionResponse {
        key_id: &p.key_arn,
        attestation_policy: p.attestation.as_ref().map(|a| PolicyView::of(Some(a))),
        tenant_attestation_policy: p.tenant_attestation.as_ref().map(|a| PolicyView::of(Some(a))),
        effective_attestation_policy: match (&p.attestation, &p.tenant_attestation) {
            (Some(_), _) => "Key",
            (None, Some(_)) => "Tenant",
            (None, None) => "None",
        },
        policy_module_sha256: p.policy_module.as_deref(),
        tenant_policy_module_sha256: p.tenant_policy_module.as_deref(),
        protection_locked: p.locked,
    })
}

/// `Keyward.LockKeyProtection {KeyId}`.
pub async fn lock_key_protection(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeRequest = parse(body)?;
    describe_protection(&protection::lock(ctx, req.key_id).await?)
}

/// `Keyward.DescribeKeyProtection {KeyId}`.
pub async fn describe_key_protection(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: DescribeRequest = parse(body)?;
    describe_protection(&protection::describe(ctx, &required("keyId", req.key_id)?).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentRequest {
    nonce: Option<String>,
    /// Bind this key's BYOK wrapping public key instead of the audit key.
    key_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetAttestationDocumentResponse {
    /// Base64 of the COSE_Sign1 document.
    attestation_document: String,
}

/// A document from the enclave's own NSM (see
/// [`crate::keystore::attestation::document`] for what it binds).
pub async fn get_attestation_document(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: GetAttestationDocumentRequest = parse(body)?;
    let nonce = match req.nonce {
        Some(n) => {
            let n = blob("nonce", &n)?;
            length("nonce", n.len(), 1, 512)?;
            Some(n)
        }
        None => None,
    };
    let tls = super::tls_ops::live(ctx).await?;
    let document = attestation::document(ctx, nonce.as_deref(), req.key_id.as_deref(), tls.spki_sha256()).await?;
    render(&GetAttestationDocumentResponse {
        attestation_document: b64(&document),
    })
}
