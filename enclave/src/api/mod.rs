//! The AWS KMS JSON 1.1 API as the enclave serves it: authenticate, route by
//! [`Operation`], parse, run the operation, answer.
//!
//! # Layers
//! `api` is the request layer: **parse → domain → render**. [`handle`]
//! authenticates and authorizes, builds the request context
//! ([`crate::context::Ctx`]) and calls [`dispatch`]; an operation parses its
//! body into a typed request struct, calls the keystore domain
//! ([`crate::keystore`], no JSON), and renders the answer. Errors are
//! [`crate::error::KmsError`] throughout; [`error`] maps them to AWS shapes.
//! What an operation reports for the audit record goes through `ctx.notes`
//! (`key`, `policy`, `policy_time`, `detail`, `recipient`, `checked_pcrs`,
//! and `Ctx::note_encryption_context`), never through globals.
//!
//! # How to add an operation
//! 1. Add its name to [`Operation`] (`enclave/wire/src/operation.rs`): the
//!    `X-Amz-Target`, the policy action and the proxy's metrics label follow.
//! 2. Give it a role in `auth::authorize::need` (the match is exhaustive, so
//!    the build fails until you do) and an arm in [`dispatch`].
//! 3. In its `api/<area>.rs`: a request struct
//!    (`#[derive(Deserialize)] #[serde(rename_all = "PascalCase")]`, AWS field
//!    names, `Option` fields validated with `params::{required, length, …}` so
//!    AWS's messages come out exactly), then `params::parse(body)`, the
//!    domain call (`keystore::keys::resolve_key`, `modify`, …), and the answer.
//! 4. Logic that touches records belongs in `keystore/` (it takes `&Ctx` and
//!    returns `KmsError`); it never imports `api`.
//!    `python3 .ci/check-module-cycles.py` must stay clean.

pub mod access_keys;
pub mod aliases;
pub mod asymmetric;
pub mod attestation_ops;
pub mod audit_log;
pub mod backup;
pub mod crypto;
pub mod custody;
pub mod error;
pub mod import;
pub mod keys;
pub mod lifecycle;
pub mod mac;
pub mod params;
pub mod policies;
pub mod recipient;
pub mod reshare;
pub mod rotation;
pub mod tags;
pub mod tenants;
#[cfg(test)]
mod tests;
pub mod tls_ops;

use keyward_wire::{ApiRequest, ApiResponse, Operation};
use serde_json::Value;
use tracing::Instrument;

use crate::audit::record::{ALLOW, AuditEntry, DENY, ERROR, OPERATOR_CHAIN};
use crate::auth::failures::Verdict;
use crate::auth::{self, authorize, sigv4, sigv4::SignedRequest};
use crate::context::AuditNotes;
pub use crate::context::Ctx;
use crate::service::Enclave;
use crate::store::{Records, StoreTransport};
use error::KmsError;
pub(crate) use params::printable;

/// Handles one request. Never panics on input; every failure is an AWS-shaped response.
pub async fn handle(enclave: &Enclave, request: ApiRequest, transport: &dyn StoreTransport) -> ApiResponse {
    let span = tracing::info_span!(
        "request",
        request_id = %request.request_id,
        op = tracing::field::Empty,
        tenant = tracing::field::Empty
    );
    async move {
        let started = std::time::Instant::now();
        let mut audit = AuditEntry {
            time: (enclave.clock.now().unix_timestamp_nanos() / 1_000_000).max(0) as u64,
            request_id: printable(&request.request_id),
            chain: OPERATOR_CHAIN.to_owned(),
            operation: printable(&header(&request, "x-amz-target").unwrap_or_default()),
            ..Default::default()
        };
        let mut notes = AuditNotes::default();
        let mut unauthenticated = None;
        let custody_op = header(&request, "x-amz-target")
            .and_then(|target| Operation::from_target(&target))
            .filter(|op| op.is_custody());
        let result = serve(
            enclave,
            &request,
            transport,
            &mut audit,
            &mut notes,
            &mut unauthenticated,
        )
        .await;
        audit.attested = notes.attested();
        audit.context = notes.context.take();
        audit.source_context = notes.source_context.take();
        audit.key_arn = notes.key_arn;
        audit.policy_module = notes.policy_module;
        match &result {
            Ok(_) => {
                audit.decision = ALLOW;
                audit.reason = notes.detail;
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
        let result = match unauthenticated {
            // Sealed: no root, so no audit chain to append to. What was
            // refused is in the log (custody steps log their refusals).
            // Custodians poll their checkpoint: it changes nothing and is
            // not audited.
            _ if custody_op == Some(Operation::GetCheckpoint) => result,
            _ if !enclave.is_ready() => {
                if let Err(e) = &result
                    && custody_op.is_none()
                {
                    tracing::debug!(error = %e.message(), "answered while sealed");
                }
                result
            }
            // Not authenticated: no tenant's chain, and a record in the
            // operator's only when sampled (`auth::failures`).
            Some(Verdict::Reject { sample: Some(since) }) => {
                audit.chain = OPERATOR_CHAIN.to_owned();
                audit.role = String::new();
                audit.reason = format!(
                    "{} (sampled: {since} failed authentications since the previous sample)",
                    audit.reason
                );
                if let Err(e) = enclave.audit(audit).await {
                    tracing::warn!(error = %e, "audit sample of a failed authentication not written");
                }
                result
            }
            Some(_) => result,
            // Fail closed: a request whose audit record cannot be made durable is not answered with its result.
            None => match enclave.audit(audit).await {
                Ok(()) => result,
                Err(crate::service::AuditFailure::Refused(e)) => {
                    tracing::error!(error = %e, "audit append refused: the store contradicts the index");
                    Err(KmsError::InternalDetail(format!(
                        "The audit log refused to append: {e}: the store was rolled back or a record was hidden. Nothing was released."
                    )))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit append failed; answering with an internal error");
                    Err(KmsError::Internal)
                }
            },
        };
        let micros = started.elapsed().as_micros() as u64;
        let timing = keyward_wire::Timing {
            enclave_micros: micros,
            policy_micros: notes.policy_micros,
            unauthenticated: unauthenticated.map(|verdict| match verdict {
                Verdict::Reject { .. } => keyward_wire::Unauthenticated::Rejected,
                Verdict::Throttle => keyward_wire::Unauthenticated::Throttled,
            }),
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
    }
    .instrument(span)
    .await
}

impl Enclave {
    /// Handles one request ([`handle`]).
    pub async fn handle(&self, request: ApiRequest, transport: &dyn StoreTransport) -> ApiResponse {
        handle(self, request, transport).await
    }
}

/// Authenticates, authorizes and runs one request; what the operation
/// noted for the audit record is left in `notes`. A request refused before
/// or at authentication leaves what to do with it in `unauthenticated`.
async fn serve(
    enclave: &Enclave,
    request: &ApiRequest,
    transport: &dyn StoreTransport,
    audit: &mut AuditEntry,
    notes: &mut AuditNotes,
    unauthenticated: &mut Option<Verdict>,
) -> Result<Value, KmsError> {
    let address = request.client_addr.as_deref();
    let uptime = enclave.uptime_seconds();
    let signed = SignedRequest {
        method: &request.method,
        path: &request.path,
        query: &request.query,
        headers: &request.headers,
        body: &request.body,
    };
    let claimed_key = sigv4::parse(&signed).map(|a| a.access_key_id).unwrap_or_default();
    // Nothing refuses a request before its signature is checked (a flood
    // naming a tenant's key must not lock the tenant out); failures pay.
    let throttled = || Err(KmsError::Throttling("Rate exceeded".into()));
    let mut refuse = |error: KmsError, access_key_id: &str, audit: &mut AuditEntry| {
        audit.decision = DENY;
        audit.access_key_id = printable(access_key_id);
        let verdict = enclave.auth_failures.fail(address, access_key_id, uptime);
        *unauthenticated = Some(verdict);
        match verdict {
            Verdict::Throttle => throttled(),
            Verdict::Reject { .. } => Err(error),
        }
    };
    // The signature covers a canonicalised path ("/./" and "//" sign as "/"),
    // so the enclave serves exactly "/" and nothing that merely signs like it.
    if request.method != "POST" || request.path != "/" {
        return refuse(
            KmsError::UnknownOperation("The AWS KMS API is served at POST /.".into()),
            &claimed_key,
            audit,
        );
    }
    // The custody operations come before authentication: while sealed no
    // credential can be read, and their inputs authenticate themselves.
    let target = header(request, "x-amz-target").unwrap_or_default();
    if let Some(op) = Operation::from_target(&target).filter(|op| op.is_custody()) {
        tracing::Span::current().record("op", op.target());
        audit.operation = op.target().to_owned();
        // Anonymous by design, so limited per client address (issue 21).
        if !enclave.auth_failures.custody_request(address, uptime) {
            return throttled();
        }
        return custody::serve(enclave, op, parse_body(&request.body)?, transport).await;
    }
    let keyring = enclave.keyring(transport).await.map_err(|e| match e {
        // Sealed: 503 ServiceUnavailableException saying how to unseal.
        crate::bootstrap::BootError::Sealed(message) => KmsError::Sealed(message),
        // A store the enclave refuses (e.g. of an older record format) says why.
        crate::bootstrap::BootError::Store(e) => KmsError::from(e),
        _ => KmsError::Internal,
    })?;
    let records = Records::cached(transport, &keyring.sealer, &enclave.record_cache).with_index(&keyring.index);
    let now = enclave.clock.now();
    let principal = match auth::authenticate(&signed, &enclave.credentials, &records, &enclave.config.region, now).await
    {
        Ok(p) => p,
        // Only a store failure (not the caller's doing) is audited as before.
        Err(failure) if matches!(failure.error, KmsError::Internal) => {
            audit.access_key_id = printable(&failure.access_key_id);
            return Err(failure.error);
        }
        Err(failure) => return refuse(failure.error, &failure.access_key_id, audit),
    };
    audit.chain = principal.tenant.clone();
    audit.access_key_id = principal.access_key_id.clone();
    audit.role = principal.roles_label();
    tracing::Span::current().record("tenant", principal.tenant.as_str());

    let target = header(request, "x-amz-target").unwrap_or_default();
    tracing::Span::current().record("op", printable(&target).as_str());
    let Some(op) = Operation::from_target(&target) else {
        return Err(KmsError::UnknownOperation(format!(
            "Unknown operation {}",
            printable(&target)
        )));
    };
    let denied = |e: KmsError, audit: &mut AuditEntry| {
        audit.decision = DENY;
        Err(e)
    };
    if let Err(e) = authorize::authorize(&principal, op) {
        return denied(e, audit);
    }
    if !enclave.rate_limiter.allow(&principal.tenant, enclave.uptime_seconds()) {
        return denied(KmsError::Throttling("Rate exceeded".into()), audit);
    }
    let mut tenant_policy = None;
    let mut tenant_attestation = None;
    let mut tenant_generation = None;
    if !principal.is_operator() {
        // A tenant record without a generation (an older data dir) is refused here.
        let tenant = crate::keystore::tenants::get(&records, &principal.tenant).await?;
        tenant_generation = tenant.as_ref().and_then(|t| t.generation().ok());
        tenant_policy = tenant.as_ref().and_then(|t| t.policy_module.clone());
        tenant_attestation = tenant.as_ref().and_then(|t| t.attestation.clone());
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
    let mut facts = crate::policy::context::facts_of(op, &body);
    facts.tenant_policy = tenant_policy;
    facts.tenant_attestation = tenant_attestation;
    // A write that found its record changed since the request read it
    // (another request, another node) wrote nothing; when nothing else was
    // written either, the request had no effect and is run again on fresh
    // reads. Otherwise the conflict is answered (`KmsError::Conflict`).
    let mut attempt = 1;
    loop {
        let records = Records::cached(transport, &keyring.sealer, &enclave.record_cache).with_index(&keyring.index);
        let ctx = Ctx::new(enclave, keyring, records, principal.clone(), now).with_facts(facts.clone());
        if let Some(generation) = tenant_generation {
            ctx.set_tenant_generation(generation);
        }
        // The tenant's default module decides on operations that act on no key
        // before they run (on the others, on each key they load).
        let result = match crate::keystore::policy::enforce_keyless(&ctx, op).await {
            Ok(()) => dispatch(&ctx, op, body.clone()).await,
            Err(e) => Err(e),
        };
        if result.is_err() && attempt < CONFLICT_TRIES && ctx.records.conflicted_before_writing() {
            tracing::info!(attempt, "store conflict before any write; running the request again");
            // Random back-off against the other writer (another node's request
            // CASes the same index root), not synchronisation: 0..attempt ms.
            let ceiling = attempt.saturating_mul(1000);
            let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling);
            tokio::time::sleep(std::time::Duration::from_micros(u64::from(wait))).await;
            attempt += 1;
            continue;
        }
        *notes = ctx.notes.take();
        return result;
    }
}

/// Runs of one request that conflicted before writing anything, at most.
const CONFLICT_TRIES: u32 = 16;

/// Runs `op` for `ctx.principal`, who must already be authenticated and
/// authorized for it (as [`handle`] does); public for the fuzz targets
/// (`fuzz/`), which drive it with an in-memory store.
pub async fn dispatch(ctx: &Ctx<'_>, op: Operation, body: Value) -> Result<Value, KmsError> {
    use Operation as O;
    match op {
        O::CreateKey => keys::create_key(ctx, body).await,
        O::DescribeKey => keys::describe_key(ctx, body).await,
        O::ListKeys => keys::list_keys(ctx, body).await,
        O::Encrypt => crypto::encrypt(ctx, body).await,
        O::Decrypt => crypto::decrypt(ctx, body).await,
        O::GenerateDataKey => crypto::generate_data_key(ctx, body, true).await,
        O::GenerateDataKeyWithoutPlaintext => crypto::generate_data_key(ctx, body, false).await,
        O::GenerateRandom => crypto::generate_random(ctx, body).await,
        O::ReEncrypt => crypto::re_encrypt(ctx, body).await,
        O::GenerateDataKeyPair => crypto::generate_data_key_pair(ctx, body, true).await,
        O::GenerateDataKeyPairWithoutPlaintext => crypto::generate_data_key_pair(ctx, body, false).await,
        O::EnableKey => lifecycle::enable_key(ctx, body).await,
        O::DisableKey => lifecycle::disable_key(ctx, body).await,
        O::ScheduleKeyDeletion => lifecycle::schedule_key_deletion(ctx, body).await,
        O::CancelKeyDeletion => lifecycle::cancel_key_deletion(ctx, body).await,
        O::UpdateKeyDescription => lifecycle::update_key_description(ctx, body).await,
        O::EnableKeyRotation => rotation::enable_key_rotation(ctx, body).await,
        O::DisableKeyRotation => rotation::disable_key_rotation(ctx, body).await,
        O::GetKeyRotationStatus => rotation::get_key_rotation_status(ctx, body).await,
        O::RotateKeyOnDemand => rotation::rotate_key_on_demand(ctx, body).await,
        O::ListKeyRotations => rotation::list_key_rotations(ctx, body).await,
        O::CreateAlias => aliases::create_alias(ctx, body).await,
        O::UpdateAlias => aliases::update_alias(ctx, body).await,
        O::DeleteAlias => aliases::delete_alias(ctx, body).await,
        O::ListAliases => aliases::list_aliases(ctx, body).await,
        O::TagResource => tags::tag_resource(ctx, body).await,
        O::UntagResource => tags::untag_resource(ctx, body).await,
        O::ListResourceTags => tags::list_resource_tags(ctx, body).await,
        O::Sign => asymmetric::sign(ctx, body).await,
        O::Verify => asymmetric::verify(ctx, body).await,
        O::GetPublicKey => asymmetric::get_public_key(ctx, body).await,
        O::DeriveSharedSecret => asymmetric::derive_shared_secret(ctx, body).await,
        O::GenerateMac => mac::generate_mac(ctx, body).await,
        O::VerifyMac => mac::verify_mac(ctx, body).await,
        O::GetParametersForImport => import::get_parameters_for_import(ctx, body).await,
        O::ImportKeyMaterial => import::import_key_material(ctx, body).await,
        O::DeleteImportedKeyMaterial => import::delete_imported_key_material(ctx, body).await,
        O::CreateTenant => tenants::create_tenant(ctx, body).await,
        O::ListTenants => tenants::list_tenants(ctx, body).await,
        O::DisableTenant => tenants::set_tenant_enabled(ctx, body, false).await,
        O::EnableTenant => tenants::set_tenant_enabled(ctx, body, true).await,
        O::CreateAccessKey => access_keys::create_access_key(ctx, body).await,
        O::ListAccessKeys => access_keys::list_access_keys(ctx, body).await,
        O::DeleteAccessKey => access_keys::delete_access_key(ctx, body).await,
        O::GetAuditLog => audit_log::get_audit_log(ctx, body).await,
        O::UpdateKeyAttestationPolicy => attestation_ops::update_key_attestation_policy(ctx, body).await,
        O::DescribeKeyAttestationPolicy => attestation_ops::describe_key_attestation_policy(ctx, body).await,
        O::GetAttestationDocument => attestation_ops::get_attestation_document(ctx, body).await,
        O::UpdateTenantAttestationPolicy => attestation_ops::update_tenant_attestation_policy(ctx, body).await,
        O::LockKeyProtection => attestation_ops::lock_key_protection(ctx, body).await,
        O::DescribeKeyProtection => attestation_ops::describe_key_protection(ctx, body).await,
        O::PutKeyPolicyModule => policies::put_key_policy_module(ctx, body).await,
        O::GetKeyPolicyModule => policies::get_key_policy_module(ctx, body).await,
        O::DeleteKeyPolicyModule => policies::delete_key_policy_module(ctx, body).await,
        O::PutTenantPolicyModule => policies::put_tenant_policy_module(ctx, body).await,
        O::DeleteTenantPolicyModule => policies::delete_tenant_policy_module(ctx, body).await,
        O::TestPolicy => policies::test_policy(ctx, body).await,
        O::GetTlsCertificateRequest => tls_ops::get_tls_certificate_request(ctx, body).await,
        O::ImportTlsCertificate => tls_ops::import_tls_certificate(ctx, body).await,
        O::ExportBackup => backup::export_backup(ctx, body).await,
        O::ReshareCustody => reshare::reshare_custody(ctx, body).await,
        // Served before authentication by `handle` (`custody::serve`).
        O::InitCustody | O::GetUnsealDocument | O::Unseal | O::JoinCluster | O::GetCheckpoint => {
            Err(KmsError::UnknownOperation(format!(
                "{op} is served by the request entry point, before authentication"
            )))
        }
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
