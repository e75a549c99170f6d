//! The key is usable only during working hours: 06:00–22:00 UTC.
//!
//! Every action outside the window is denied, by the enclave's clock
//! (`environment.time_ms`).

use keyward_policy::{Context, Decision};

/// Start of the window, seconds after 00:00 UTC (inclusive).
pub const OPENS: u32 = 6 * 3600;
/// End of the window, seconds after 00:00 UTC (exclusive).
pub const CLOSES: u32 = 22 * 3600;

pub fn decide(ctx: &Context) -> Decision {
    let now = ctx.environment.utc_seconds_of_day();
    let window = format!("{}-{} UTC", hh_mm(OPENS), hh_mm(CLOSES));
    if (OPENS..CLOSES).contains(&now) {
        Decision::allow(format!("{} allowed: {} UTC is within {window}", ctx.action, hh_mm(now)))
    } else {
        Decision::deny(format!("{} denied: {} UTC is outside {window}", ctx.action, hh_mm(now)))
    }
}

fn hh_mm(seconds_of_day: u32) -> String {
    format!("{:02}:{:02}", seconds_of_day / 3600, seconds_of_day / 60 % 60)
}

keyward_policy::export!(decide);

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z.
    const MIDNIGHT_MS: u64 = 1_704_067_200_000;

    fn at(hours: u64, minutes: u64, seconds: u64) -> Context {
        let mut ctx = Context::sample();
        ctx.environment.time_ms = MIDNIGHT_MS + ((hours * 60 + minutes) * 60 + seconds) * 1000 + 500;
        ctx
    }

    #[test]
    fn working_hours_are_allowed() {
        for (h, m, s) in [(6, 0, 0), (12, 0, 0), (21, 59, 59)] {
            let decision = decide(&at(h, m, s));
            assert!(decision.is_allowed(), "{h}:{m}:{s}: {}", decision.reason());
        }
        assert_eq!(
            decide(&at(12, 5, 0)).reason(),
            "kms:Decrypt allowed: 12:05 UTC is within 06:00-22:00 UTC"
        );
    }

    #[test]
    fn the_night_is_denied() {
        for (h, m, s) in [(0, 0, 0), (5, 59, 59), (22, 0, 0), (23, 59, 59)] {
            let decision = decide(&at(h, m, s));
            assert!(!decision.is_allowed(), "{h}:{m}:{s}: {}", decision.reason());
        }
        assert_eq!(
            decide(&at(23, 15, 0)).reason(),
            "kms:Decrypt denied: 23:15 UTC is outside 06:00-22:00 UTC"
        );
        // Another day, same hour.
        let mut ctx = at(3, 0, 0);
        ctx.environment.time_ms += 400 * 86_400_000;
        assert!(!decide(&ctx).is_allowed());
    }
}
