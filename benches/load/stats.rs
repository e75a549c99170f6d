//! Measurements from `/proc` (peak and current RSS, CPU time of a process) and the median the
//! report uses for ratios over rounds.

pub(crate) fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    rss_kib(pid, "VmHWM:")
}

/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat`'s CPU times: 100 on
/// every architecture Linux exposes it to user space with (`sysconf` would
/// need `unsafe`).
pub(crate) const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU time of every thread `pid` has run, in clock ticks
/// (`/proc/<pid>/stat` fields 14 and 15, counted after the parenthesised
/// command name, which may itself contain spaces).
pub(crate) fn cpu_ticks(pid: u32) -> Option<u64> {
    cpu_ticks_of(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_ticks_of(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The median (the mean of the middle two for an even count); `None` for none.
pub(crate) fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_after_the_command_name() {
        // A command name with spaces and a ')' of its own; utime 1200, stime 34.
        let stat = "4242 (tokio rt) worker) S 1 4242 4242 0 -1 4194560 100 0 0 0 1200 34 0 0 20 0 9 0 55 0 0";
        assert_eq!(cpu_ticks_of(stat), Some(1234));
        assert_eq!(cpu_ticks_of("4242 (truncated) S 1 2"), None);
        assert_eq!(cpu_ticks_of("no command name at all"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![0.9]), Some(0.9));
        assert_eq!(median(vec![1.2, 0.8, 1.0]), Some(1.0));
        assert_eq!(median(vec![1.0, 0.5, 0.9, 0.7]), Some(0.8));
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        // The count is whole ticks: burn CPU until one is counted (a
        // process that never ran would read 0 forever).
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_ticks(std::process::id()).is_none_or(|t| t == 0) {
            assert!(Instant::now() < give_up, "no CPU time counted after 20 s of work");
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert_eq!(cpu_ticks(u32::MAX), None, "no such process");
    }
}
