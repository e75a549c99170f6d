//! What the caller requires of a document beyond a valid signature and chain: freshness against
//! its clock, the nonce, allowed PCR values and whether debug-mode enclaves are accepted.

use std::collections::BTreeMap;
use std::time::Duration;

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::super::document::AttestationDocument;
use super::{AttestationError, DEFAULT_MAX_AGE, DEFAULT_MAX_FUTURE};

/// What a verified document must also satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    /// When set, the document's nonce must equal it.
    pub nonce: Option<Vec<u8>>,
    /// PCR index → allowed values; the document's PCR must equal one of them
    /// (an empty list allows nothing).
    pub pcrs: BTreeMap<u8, Vec<Vec<u8>>>,
    /// Accept debug-mode enclaves (PCR0, PCR1 and PCR2 all zero).
    pub allow_debug: bool,
    /// Largest accepted `now - timestamp`; `None` skips the check.
    pub max_age: Option<Duration>,
    /// Largest accepted `timestamp - now` (clock skew).
    pub max_future: Duration,
}

impl Default for Expectations {
    /// No nonce or PCR requirement, debug mode refused, documents at most
    /// [`DEFAULT_MAX_AGE`] old and [`DEFAULT_MAX_FUTURE`] ahead.
    fn default() -> Self {
        Self {
            nonce: None,
            pcrs: BTreeMap::new(),
            allow_debug: false,
            max_age: Some(DEFAULT_MAX_AGE),
            max_future: DEFAULT_MAX_FUTURE,
        }
    }
}

pub(super) fn check_freshness(
    timestamp_ms: u64,
    now: OffsetDateTime,
    expect: &Expectations,
) -> Result<(), AttestationError> {
    let now_ms = now.unix_timestamp_nanos() / 1_000_000;
    let age_ms = now_ms - i128::from(timestamp_ms);
    if -age_ms > i128::try_from(expect.max_future.as_millis()).unwrap_or(i128::MAX) {
        return Err(AttestationError::FromTheFuture);
    }
    if let Some(max_age) = expect.max_age
        && age_ms > i128::try_from(max_age.as_millis()).unwrap_or(i128::MAX)
    {
        return Err(AttestationError::Stale {
            age_ms: u64::try_from(age_ms).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

pub(super) fn check_nonce(doc: &AttestationDocument, expect: &Expectations) -> Result<(), AttestationError> {
    let Some(expected) = &expect.nonce else {
        return Ok(());
    };
    match &doc.nonce {
        Some(actual) if bool::from(actual.as_slice().ct_eq(expected.as_slice())) => Ok(()),
        _ => Err(AttestationError::NonceMismatch),
    }
}

/// Every PCR named in `expect` must equal one of its allowed values (compared in constant time).
pub(super) fn check_pcrs(doc: &AttestationDocument, expect: &Expectations) -> Result<(), AttestationError> {
    for (&index, allowed) in &expect.pcrs {
        let actual = doc.pcrs.get(&index).ok_or(AttestationError::PcrMismatch { index })?;
        let mut matched = subtle::Choice::from(0);
        for value in allowed {
            matched |= actual.as_slice().ct_eq(value.as_slice());
        }
        if !bool::from(matched) {
            return Err(AttestationError::PcrMismatch { index });
        }
    }
    Ok(())
}
