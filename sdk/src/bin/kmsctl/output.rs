//! Printing what the service returned: control characters escaped (the text crossed the untrusted
//! host) and timestamps as RFC 3339.

use std::borrow::Cow;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `s` with control characters (tabs, newlines, terminal escapes) escaped:
/// what the service returns passed through the untrusted host.
pub(crate) fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

fn rfc3339(nanos: i128) -> Option<String> {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

pub(crate) fn epoch_millis(ms: u64) -> String {
    rfc3339(i128::from(ms) * 1_000_000).unwrap_or_else(|| ms.to_string())
}

pub(crate) fn epoch_seconds(seconds: f64) -> String {
    let nanos = (seconds * 1e9).round();
    if nanos.is_finite() && nanos.abs() < 1e30 {
        rfc3339(nanos as i128).unwrap_or_else(|| seconds.to_string())
    } else {
        seconds.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(epoch_seconds(1_700_000_000.0), "2023-11-14T22:13:20Z");
        assert_eq!(epoch_seconds(f64::NAN), "NaN");
    }
}
