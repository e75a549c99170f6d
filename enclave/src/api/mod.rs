//! The AWS KMS JSON 1.1 API as the enclave serves it: authenticate, route by
//! `X-Amz-Target`, parse, run the operation, answer.

pub mod access_keys;
pub mod aliases;
pub mod asymmetric;
pub mod attestation_ops;
pub mod audit_log;
pub mod crypto;
pub mod error;
pub mod import;
pub mod keys;
pub mod lifecycle;
pub mod mac;
pub mod params;
pub mod policies;
pub mod recipient;
pub mod rotation;
pub mod tags;
pub mod tenants;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};

use keyward_wire::{ApiRequest, ApiResponse};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::Instrument;

use crate::audit::record::{ALLOW, AuditEntry, DENY, ERROR, OPERATOR_CHAIN};
use crate::auth::{self, Principal, authorize, sigv4::SignedRequest};
use crate::bootstrap::{Keyring, TENANT_NAMESPACE, TenantRecord};
use crate::service::Enclave;
use crate::store::{Records, StoreTransport};
use error::KmsError;

/// Everything an operation needs.
pub struct Ctx<'a> {
    pub enclave: &'a Enclave,
    pub keyring: &'a Keyring,
    pub records: Records<'a>,
    pub principal: Principal,
    pub now: OffsetDateTime,
}

impl Ctx<'_> {
    pub fn region(&self) -> &str {
        &self.enclave.config.region
    }
}

tokio::task_local! {
    /// The ARN of the key the current request acted on, for its audit record.
    static AUDITED_KEY: RefCell<String>;
    /// The policy module that decided the current request, for its audit record.
    static AUDITED_POLICY: RefCell<String>;
    /// What a successful request did that its record should say (key-material
    /// fingerprints of BYOK imports and deletions), for its audit `Reason`.
    static AUDITED_DETAIL: RefCell<String>;
    /// Microseconds the current request spent in policy enforcement (metrics).
    static POLICY_MICROS: Cell<u64>;
}

/// Notes what the current request did, for its audit record's `Reason` when
/// it succeeds (no-op outside a request). Never pass a secret.
pub fn note_detail(detail: &str) {
    let _ = AUDITED_DETAIL.try_with(|d| detail.clone_into(&mut d.borrow_mut()));
}

/// Adds time spent in policy enforcement to the current request's (no-op
/// outside a request).
pub fn note_policy_time(spent: std::time::Duration) {
    let micros = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
    let _ = POLICY_MICROS.try_with(|m| m.set(m.get().saturating_add(micros)));
}

/// Notes the policy module that decided (no-op outside a request).
pub fn note_policy(sha256_hex: &str) {
    let _ = AUDITED_POLICY.try_with(|p| sha256_hex.clone_into(&mut p.borrow_mut()));
}

/// Notes the key the current request acts on (no-op outside a request).
pub fn note_key(arn: &str) {
    let _ = AUDITED_KEY.try_with(|k| arn.clone_into(&mut k.borrow_mut()));
}

pub async fn handle(enclave: &Enclave, request: ApiRequest, transport: &dyn StoreTransport) -> ApiResponse {
    let span = tracing::info_span!(
        "request",
        request_id = %request.request_id,
        op = tracing::field::Empty,
        tenant = tracing::field::Empty
    );
    let in_scope = async move {
        AUDITED_KEY
            .scope(RefCell::new(String::new()), async move {
                let started = std::time::Instant::now();
                let mut audit = AuditEntry {
                    time: (enclave.clock.now().unix_timestamp_nanos() / 1_000_000).max(0) as u64,
                    request_id: printable(&request.request_id),
                    chain: OPERATOR_CHAIN.to_owned(),
                    operation: printable(&header(&request, "x-amz-target").unwrap_or_default()),
                    ..Default::default()
                };
                let result = serve(enclave, &request, transport, &mut audit).await;
                audit.key_arn = AUDITED_KEY.with(|k| k.borrow().clone());
                audit.policy_module = AUDITED_POLICY.with(|p| p.borrow().clone());
                match &result {
                    Ok(_) => {
                        audit.decision = ALLOW;
                        audit.reason = AUDITED_DETAIL.with(|d| d.borrow().clone());
                    }
                    Err(e) => {
                        // Refusals by policy (attestation, later WASM) are denials too.
                        if audit.decision.is_empty() {
                            audit.decision = if matches!(e, KmsError::AccessDenied(_)) {
                                DENY
                            } else {
                                ERROR
                            };
                        }
                        audit.reason = format!("{}: {}", e.aws_type(), e.message());
                    }
                }
                // Fail closed: a request whose audit record cannot be made durable is not answered with its result.
                let result = match enclave.audit(audit).await {
                    Ok(()) => result,
                    Err(e) => {
                        tracing::error!(error = %e, "audit append failed; answering with an internal error");
                        Err(KmsError::Internal)
                    }
                };
                let micros = started.elapsed().as_micros() as u64;
                let timing = keyward_wire::Timing {
                    enclave_micros: micros,
                    policy_micros: POLICY_MICROS.try_with(Cell::get).unwrap_or(0),
                };
                match result {
                    Ok(body) => {
                        tracing::info!(status = 200, micros, "done");
                        ApiResponse {
                            status: 200,
                            error_type: None,
                            body: body.to_string().into_bytes(),
                            timing,
                        }
                    }
                    Err(e) => {
                        tracing::info!(status = e.status(), error = e.aws_type(), micros, "done");
                        ApiResponse {
                            timing,
                            ..e.to_response()
                        }
                    }
                }
            })
            .await
    };
    POLICY_MICROS
        .scope(
            Cell::new(0),
            AUDITED_POLICY.scope(
                RefCell::new(String::new()),
                AUDITED_DETAIL.scope(RefCell::new(String::new()), in_scope),
            ),
        )
        .instrument(span)
        .await
}

async fn serve(
    enclave: &Enclave,
    request: &ApiRequest,
    transport: &dyn StoreTransport,
    audit: &mut AuditEntry,
) -> Result<Value, KmsError> {
    // The signature covers a canonicalised path ("/./" and "//" sign as "/"),
    // so the enclave serves exactly "/" and nothing that merely signs like it.
    if request.method != "POST" || request.path != "/" {
        audit.decision = DENY;
        return Err(KmsError::UnknownOperation(
            "The AWS KMS API is served at POST /.".into(),
        ));
    }
    let keyring = enclave.keyring(transport).await.map_err(|_| KmsError::Internal)?;
    let records = Records::new(transport, &keyring.sealer);
    let now = enclave.clock.now();
    let signed = SignedRequest {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &request.headers,
        body: &request.body,
    };
    let principal = match auth::authenticate(&signed, &enclave.credentials, &records, &enclave.config.region, now).await
    {
        Ok(p) => p,
        Err(failure) => {
            audit.decision = DENY;
            audit.access_key_id = printable(&failure.access_key_id);
            if let Some(claimed) = failure.claimed {
                audit.chain = claimed.tenant.clone();
                audit.role = claimed.roles_label();
            }
            return Err(failure.error);
        }
    };
    audit.chain = principal.tenant.clone();
    audit.access_key_id = principal.access_key_id.clone();
    audit.role = principal.roles_label();
    tracing::Span::current().record("tenant", principal.tenant.as_str());

    let target = header(request, "x-amz-target").unwrap_or_default();
    tracing::Span::current().record("op", printable(&target).as_str());
    let Some(need) = authorize::need(&target) else {
        return Err(KmsError::UnknownOperation(format!(
            "Unknown operation {}",
            printable(&target)
        )));
    };
    let denied = |e: KmsError, audit: &mut AuditEntry| {
        audit.decision = DENY;
        Err(e)
    };
    if let Err(e) = authorize::authorize(&principal, need, &target) {
        return denied(e, audit);
    }
    if !enclave.rate_limiter.allow(&principal.tenant, enclave.uptime_seconds()) {
        return denied(KmsError::Throttling("Rate exceeded".into()), audit);
    }
    let mut tenant_policy = None;
    if !principal.is_operator() {
        let tenant = records.get::<TenantRecord>(TENANT_NAMESPACE, &principal.tenant).await?;
        tenant_policy = tenant.as_ref().and_then(|t| t.policy_module.clone());
        if !tenant.is_some_and(|t| t.enabled) {
            return denied(
                KmsError::AccessDenied(format!("Tenant {} is disabled.", principal.tenant)),
                audit,
            );
        }
    }

    let body = parse_body(&request.body)?;
    // DryRun: authorized and would run; AWS answers 412 DryRunOperationException.
    if body.get("DryRun").and_then(Value::as_bool) == Some(true) {
        return Err(KmsError::DryRunOperation(
            "The request would have succeeded, but the DryRun flag is set.".into(),
        ));
    }
    let mut facts = crate::policy::context::facts_of(&target, &body);
    facts.tenant_policy = tenant_policy;
    let ctx = Ctx {
        enclave,
        keyring,
        records,
        principal,
        now,
    };
    crate::policy::context::FACTS
        .scope(RefCell::new(facts), dispatch(&ctx, &target, body))
        .await
}

/// Runs the operation named by `target` for `ctx.principal`, who must already
/// be authenticated and authorized for it (as [`handle`] does); public for
/// the fuzz targets (`fuzz/`), which drive it with an in-memory store.
pub async fn dispatch(ctx: &Ctx<'_>, target: &str, body: Value) -> Result<Value, KmsError> {
    let (service, op) = target.split_once('.').unwrap_or(("", ""));
    if service == "Keyward" {
        return extensions(ctx, op, body).await;
    }
    match op {
        "CreateKey" => keys::create_key(ctx, body).await,
        "DescribeKey" => keys::describe_key(ctx, body).await,
        "ListKeys" => keys::list_keys(ctx, body).await,
        "Encrypt" => crypto::encrypt(ctx, body).await,
        "Decrypt" => crypto::decrypt(ctx, body).await,
        "GenerateDataKey" => crypto::generate_data_key(ctx, body, true).await,
        "GenerateDataKeyWithoutPlaintext" => crypto::generate_data_key(ctx, body, false).await,
        "GenerateRandom" => crypto::generate_random(ctx, body).await,
        "ReEncrypt" => crypto::re_encrypt(ctx, body).await,
        "GenerateDataKeyPair" => crypto::generate_data_key_pair(ctx, body, true).await,
        "GenerateDataKeyPairWithoutPlaintext" => crypto::generate_data_key_pair(ctx, body, false).await,
        "EnableKey" => lifecycle::enable_key(ctx, body).await,
        "DisableKey" => lifecycle::disable_key(ctx, body).await,
        "ScheduleKeyDeletion" => lifecycle::schedule_key_deletion(ctx, body).await,
        "CancelKeyDeletion" => lifecycle::cancel_key_deletion(ctx, body).await,
        "UpdateKeyDescription" => lifecycle::update_key_description(ctx, body).await,
        "EnableKeyRotation" => rotation::enable_key_rotation(ctx, body).await,
        "DisableKeyRotation" => rotation::disable_key_rotation(ctx, body).await,
        "GetKeyRotationStatus" => rotation::get_key_rotation_status(ctx, body).await,
        "RotateKeyOnDemand" => rotation::rotate_key_on_demand(ctx, body).await,
        "ListKeyRotations" => rotation::list_key_rotations(ctx, body).await,
        "CreateAlias" => aliases::create_alias(ctx, body).await,
        "UpdateAlias" => aliases::update_alias(ctx, body).await,
        "DeleteAlias" => aliases::delete_alias(ctx, body).await,
        "ListAliases" => aliases::list_aliases(ctx, body).await,
        "TagResource" => tags::tag_resource(ctx, body).await,
        "UntagResource" => tags::untag_resource(ctx, body).await,
        "ListResourceTags" => tags::list_resource_tags(ctx, body).await,
        "Sign" => asymmetric::sign(ctx, body).await,
        "Verify" => asymmetric::verify(ctx, body).await,
        "GetPublicKey" => asymmetric::get_public_key(ctx, body).await,
        "DeriveSharedSecret" => asymmetric::derive_shared_secret(ctx, body).await,
        "GenerateMac" => mac::generate_mac(ctx, body).await,
        "VerifyMac" => mac::verify_mac(ctx, body).await,
        "GetParametersForImport" => import::get_parameters_for_import(ctx, body).await,
        "ImportKeyMaterial" => import::import_key_material(ctx, body).await,
        "DeleteImportedKeyMaterial" => import::delete_imported_key_material(ctx, body).await,
        _ => Err(KmsError::UnknownOperation(format!(
            "Unknown operation {}",
            printable(target)
        ))),
    }
}

async fn extensions(ctx: &Ctx<'_>, op: &str, body: Value) -> Result<Value, KmsError> {
    match op {
        "CreateTenant" => tenants::create_tenant(ctx, body).await,
        "ListTenants" => tenants::list_tenants(ctx, body).await,
        "DisableTenant" => tenants::set_tenant_enabled(ctx, body, false).await,
        "EnableTenant" => tenants::set_tenant_enabled(ctx, body, true).await,
        "CreateAccessKey" => access_keys::create_access_key(ctx, body).await,
        "ListAccessKeys" => access_keys::list_access_keys(ctx, body).await,
        "DeleteAccessKey" => access_keys::delete_access_key(ctx, body).await,
        "GetAuditLog" => audit_log::get_audit_log(ctx, body).await,
        "UpdateKeyAttestationPolicy" => attestation_ops::update_key_attestation_policy(ctx, body).await,
        "DescribeKeyAttestationPolicy" => attestation_ops::describe_key_attestation_policy(ctx, body).await,
        "GetAttestationDocument" => attestation_ops::get_attestation_document(ctx, body).await,
        "PutKeyPolicyModule" => policies::put_key_policy_module(ctx, body).await,
        "GetKeyPolicyModule" => policies::get_key_policy_module(ctx, body).await,
        "DeleteKeyPolicyModule" => policies::delete_key_policy_module(ctx, body).await,
        "PutTenantPolicyModule" => policies::put_tenant_policy_module(ctx, body).await,
        "DeleteTenantPolicyModule" => policies::delete_tenant_policy_module(ctx, body).await,
        "TestPolicy" => policies::test_policy(ctx, body).await,
        _ => Err(KmsError::UnknownOperation(format!(
            "Unknown operation Keyward.{}",
            printable(op)
        ))),
    }
}

/// The first value of header `name` as UTF-8, if any.
fn header(request: &ApiRequest, name: &str) -> Option<String> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(|v| v.trim().to_owned())
}

/// A request body: a JSON object (an empty body counts as `{}`).
pub fn parse_body(body: &[u8]) -> Result<Value, KmsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(KmsError::Serialization(
            "The request body must be a JSON object.".into(),
        )),
        Err(e) => Err(KmsError::Serialization(format!("Malformed JSON: {e}"))),
    }
}

/// Echo untrusted text in messages only in a bounded, printable form.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
