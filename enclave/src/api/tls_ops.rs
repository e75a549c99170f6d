//! The operator-CA path of the enclave's TLS identity (`docs/tls.md`):
//! `Keyward.GetTlsCertificateRequest` returns a PKCS#10 request for the
//! serving key, `Keyward.ImportTlsCertificate {CertificateChain}` installs
//! the chain the operator's CA made from it (validated, sealed, persisted,
//! served to new connections at once). Operator role only.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::KmsError;
use super::params::{parse, render, required};
use crate::context::Ctx;
use crate::tls::{LiveTls, TlsError};

/// The live TLS state (loaded on first use, e.g. by an in-process enclave).
pub async fn live(ctx: &Ctx<'_>) -> Result<Arc<LiveTls>, KmsError> {
    ctx.enclave
        .tls(&ctx.records, super::error::refusal)
        .await
        .map(Arc::clone)
        .map_err(|e| {
            tracing::error!(error = %e, "TLS identity unavailable");
            KmsError::Internal
        })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetTlsCertificateRequestResponse {
    certificate_signing_request: String,
}

pub async fn get_tls_certificate_request(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let _: Empty = parse(body)?;
    let csr = live(ctx).await?.certificate_request_pem().await.map_err(|e| {
        tracing::error!(error = %e, "cannot make the certificate request");
        KmsError::Internal
    })?;
    render(&GetTlsCertificateRequestResponse {
        certificate_signing_request: csr,
    })
}

#[derive(Deserialize)]
struct Empty {}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImportTlsCertificateRequest {
    certificate_chain: Option<String>,
}

pub async fn import_tls_certificate(ctx: &Ctx<'_>, body: Value) -> Result<Value, KmsError> {
    let req: ImportTlsCertificateRequest = parse(body)?;
    let chain = required("certificateChain", req.certificate_chain)?;
    let live = live(ctx).await?;
    // Validity is checked against the real clock, as certificates are dated.
    match live
        .import_chain(&ctx.records, chain.as_bytes(), time::OffsetDateTime::now_utc())
        .await
    {
        Ok(()) => {
            ctx.notes.detail("installed an operator certificate chain");
            Ok(Value::Object(Default::default()))
        }
        Err(TlsError::Import(e)) => Err(KmsError::Validation(e.to_string())),
        Err(TlsError::Store(e)) => Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "certificate import failed");
            Err(KmsError::Internal)
        }
    }
}
