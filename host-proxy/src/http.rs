//! The HTTP front end: AWS KMS JSON 1.1 on `POST /`, plus `GET /healthz` and
//! `GET /metrics` (Prometheus text, see [`crate::metrics`]).
//!
//! The proxy does not interpret requests: it forwards method, path, query,
//! headers and body to the enclave, which authenticates and answers. The only
//! errors it makes itself are for requests it cannot deliver.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use keyward_wire::ApiRequest;
use tracing::Instrument as _;

use crate::link::{EnclaveLink, LinkError};
use crate::metrics::{Metrics, operation_label};

/// Largest request body forwarded (well inside a wire frame).
pub const MAX_BODY: usize = 2 * 1024 * 1024;
/// Most headers forwarded.
const MAX_HEADERS: usize = 64;

#[derive(Clone)]
pub struct AppState {
    pub link: Arc<EnclaveLink>,
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(forward)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.link.ping(Duration::from_secs(2)).await {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "enclave unavailable\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(state.link.connected(), state.link.configured());
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

async fn forward(State(state): State<AppState>, request: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("request", request_id = %request_id);
    forward_request(state, request, request_id).instrument(span).await
}

async fn forward_request(state: AppState, request: Request<Body>, request_id: String) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let operation = operation_label(parts.headers.get("x-amz-target").map(HeaderValue::as_bytes));
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return aws_error(
                &request_id,
                StatusCode::PAYLOAD_TOO_LARGE,
                "ValidationException",
                &format!("The request body exceeds {MAX_BODY} bytes."),
            );
        }
    };
    if parts.headers.len() > MAX_HEADERS {
        return aws_error(
            &request_id,
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Too many headers.",
        );
    }
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                serde_bytes::ByteBuf::from(value.as_bytes().to_vec()),
            )
        })
        .collect();
    let forwarded = ApiRequest {
        request_id: request_id.clone(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        headers,
        body: body.to_vec(),
        client_addr: None,
    };
    let result = state.link.call(forwarded, state.request_timeout).await;
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    match result {
        Ok(answer) => {
            tracing::debug!(
                status = answer.status,
                error = answer.error_type.as_deref(),
                micros,
                enclave_micros = answer.timing.enclave_micros,
                "forwarded"
            );
            state.metrics.answered(
                operation,
                answer.status,
                answer.error_type.as_deref(),
                elapsed,
                answer.timing,
            );
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            respond(&request_id, status, answer.body)
        }
        Err(e) => {
            tracing::warn!(error = %e, micros, "request not served by the enclave");
            let (status, kind, reason) = match e {
                LinkError::Timeout => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "DependencyTimeoutException",
                    "timeout",
                ),
                LinkError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "ValidationException", "too_large"),
                LinkError::Lost => (StatusCode::INTERNAL_SERVER_ERROR, "KMSInternalException", "lost"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "KMSInternalException", "unavailable"),
            };
            state.metrics.failed(operation, reason, kind, elapsed);
            aws_error(&request_id, status, kind, &e.to_string())
        }
    }
}

fn respond(request_id: &str, status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", v);
    }
    response
}

fn aws_error(request_id: &str, status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": kind, "message": message })
        .to_string()
        .into_bytes();
    respond(request_id, status, body)
}
