//! Time, injectable so tests need not wait for it.

use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The enclave's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// The wall clock shifted by a fixed number of seconds (mock mode's
/// `--mock-clock-offset`, for tests of dates days or years away).
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    pub offset_seconds: i64,
}

impl Clock for OffsetClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc().saturating_add(time::Duration::seconds(self.offset_seconds))
    }
}
