//! The proxy's admin listener (`--admin-listen`, plain HTTP, meant for the
//! host only): `GET /healthz` (`ok`: the enclave answers, has its TLS identity
//! and is Ready; `sealed` while it waits for genesis or an unseal),
//! `GET /metrics` (Prometheus text, [`crate::metrics`]) and `GET /ca.pem`
//! (the enclave CA certificate, as the enclave reports it; the host could
//! substitute it, so a client that must not trust the host pins the
//! attested TLS key instead of trusting a bundle fetched here). It never carries
//! tenant data: requests reach the enclave only inside TLS, on the client
//! listener.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::link::EnclaveLink;
use crate::metrics::Metrics;

/// How long `/healthz` and `/metrics` wait for the enclave.
const ENCLAVE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct AdminState {
    pub link: Arc<EnclaveLink>,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/ca.pem", get(ca_pem))
        .with_state(state)
}

/// `ok` (200) when the enclave answers and is Ready; `sealed` (503) while
/// it waits for genesis or an unseal (the enclave says which, in its
/// status); `enclave unavailable` (503) when it does not answer.
async fn healthz(State(state): State<AdminState>) -> Response {
    if !state.link.ping(ENCLAVE_TIMEOUT).await {
        return health(None).into_response();
    }
    let status = state.link.status(ENCLAVE_TIMEOUT).await.ok();
    health(status.as_ref().map(|s| s.health.as_str())).into_response()
}

/// `/healthz`'s answer to what the enclave reported (`None`: it did not
/// answer): only an enclave that says `ok` is healthy.
fn health(reported: Option<&str>) -> (StatusCode, &'static str) {
    match reported {
        Some("ok") => (StatusCode::OK, "ok\n"),
        Some("sealed") => (StatusCode::SERVICE_UNAVAILABLE, "sealed\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "enclave unavailable\n"),
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let enclave = state.link.status(ENCLAVE_TIMEOUT).await.ok();
    let text = state.metrics.render(
        state.link.connected(),
        state.link.configured(),
        enclave.as_ref().map(|s| &s.metrics),
    );
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn ca_pem(State(state): State<AdminState>) -> Response {
    match state.link.status(ENCLAVE_TIMEOUT).await {
        Ok(status) if !status.ca_certificate_pem.is_empty() => {
            let mut response = (StatusCode::OK, status.ca_certificate_pem).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
            response
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "enclave unavailable\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::health;

    #[test]
    fn healthz_says_sealed_with_503_until_the_enclave_is_ready() {
        assert_eq!(health(Some("sealed")), (StatusCode::SERVICE_UNAVAILABLE, "sealed\n"));
        assert_eq!(health(Some("ok")), (StatusCode::OK, "ok\n"));
        // An enclave that does not answer, or says something else.
        assert_eq!(health(None).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(health(Some("")).0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
