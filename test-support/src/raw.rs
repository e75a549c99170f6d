//! A raw HTTP answer (status, headers, body) and assertions on AWS JSON
//! error bodies.

use serde_json::Value;

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lower-case names; printed in failure messages through `Debug`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `__type` of an AWS JSON error body.
    pub fn error_type(&self) -> Option<String> {
        self.json().get("__type").and_then(|t| t.as_str()).map(str::to_string)
    }

    /// Asserts an AWS JSON error with this status and `__type`, and a message.
    #[track_caller]
    pub fn assert_error(&self, what: &str, status: u16, code: &str) {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{what}: wrong status; body: {body}");
        assert_eq!(
            self.error_type().as_deref(),
            Some(code),
            "{what}: wrong __type; body: {body}"
        );
        let json = self.json();
        let has_message = json
            .get("message")
            .or_else(|| json.get("Message"))
            .is_some_and(|m| m.is_string());
        assert!(has_message, "{what}: error body has no message: {body}");
    }
}
