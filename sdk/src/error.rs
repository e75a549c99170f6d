//! The SDK's error type.

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The service answered with an AWS-style error (`{"__type": …,
    /// "message": …}`), e.g. `AccessDeniedException`.
    #[error("{error_type}: {message} (HTTP {status})")]
    Service {
        /// The AWS error type without any `namespace#` prefix, e.g.
        /// `AccessDeniedException`.
        error_type: String,
        /// The error message (may be empty).
        message: String,
        /// The HTTP status code.
        status: u16,
        /// `x-amzn-RequestId` of the response, when present.
        request_id: Option<String>,
    },
    /// A non-success HTTP response whose body is not an AWS error document
    /// (e.g. from something in front of the service).
    #[error("HTTP {status} without an AWS error document: {body}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The start of the body, lossily decoded and truncated.
        body: String,
    },
    /// The request could not be sent or the response not received.
    #[error("transport error: {0}")]
    Transport(String),
    /// No complete response within the client's timeout.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The endpoint URL is not usable.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be signed or built (e.g. a region with
    /// characters a header cannot carry).
    #[error("cannot build the request: {0}")]
    Request(String),
    /// A success response whose body is not what the operation returns, or
    /// a response over the size limit.
    #[error("malformed response to {operation}: {reason}")]
    Decode {
        /// The `X-Amz-Target` of the call.
        operation: String,
        /// What is wrong with the body.
        reason: String,
    },
}

impl Error {
    /// The AWS error type (`AccessDeniedException`, `ThrottlingException`, …)
    /// when the service answered with one.
    pub fn error_type(&self) -> Option<&str> {
        match self {
            Error::Service { error_type, .. } => Some(error_type),
            _ => None,
        }
    }

    /// The HTTP status of the response, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Service { status, .. } | Error::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `err` and its chain of sources, joined by `: ` (hyper's errors say little
/// at the top level).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
