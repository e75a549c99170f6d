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

/// The ppid of a process (`/proc/<pid>/stat` field 4).
fn ppid_of(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// [`cpu_ticks`] of `pid` and of every live process descending from it.
pub(crate) fn tree_cpu_ticks(pid: u32) -> Option<u64> {
    let mut stats = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            stats.push((p, ppid_of(&stat), cpu_ticks_of(&stat)));
        }
    }
    let mut tree = vec![pid];
    let mut total = stats.iter().find(|(p, ..)| *p == pid)?.2?;
    // Breadth first: a child's pid may be lower than its parent's.
    let mut i = 0;
    while let Some(&parent) = tree.get(i) {
        for (p, ppid, ticks) in &stats {
            if *ppid == Some(parent) && !tree.contains(p) {
                tree.push(*p);
                total += ticks.unwrap_or(0);
            }
        }
        i += 1;
    }
    Some(total)
}

/// A process whose CPU time the runs measure, under a label (processes with
/// the same label are added up), alone or with its descendants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Measured {
    pub(crate) label: String,
    pub(crate) pid: u32,
    pub(crate) tree: bool,
}

impl Measured {
    /// `PID` (labelled `pid PID`) or `LABEL=PID`.
    pub(crate) fn parse(s: &str, tree: bool) -> anyhow::Result<Measured> {
        let (label, pid) = match s.split_once('=') {
            Some((label, pid)) => (label.trim().to_owned(), pid),
            None => (format!("pid {}", s.trim()), s),
        };
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--pid: {s:?} is not PID or LABEL=PID"))?;
        Ok(Measured { label, pid, tree })
    }

    pub(crate) fn cpu_ticks(&self) -> Option<u64> {
        if self.tree {
            tree_cpu_ticks(self.pid)
        } else {
            cpu_ticks(self.pid)
        }
    }
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
    fn measured_processes_are_pid_or_label_and_pid() -> anyhow::Result<()> {
        let plain = Measured::parse("42", false)?;
        assert_eq!((plain.label.as_str(), plain.pid, plain.tree), ("pid 42", 42, false));
        let labelled = Measured::parse("enclave=7", true)?;
        assert_eq!(
            (labelled.label.as_str(), labelled.pid, labelled.tree),
            ("enclave", 7, true)
        );
        assert!(Measured::parse("enclave=", false).is_err());
        assert!(Measured::parse("x", false).is_err());
        Ok(())
    }

    #[test]
    fn a_tree_counts_at_least_its_root() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap_or_default();
        assert_eq!(ppid_of(&stat), Some(std::os::unix::process::parent_id()));
        // Alone first: the tree, read later, counts at least as much.
        let alone = cpu_ticks(me);
        let tree = tree_cpu_ticks(me);
        assert!(tree.is_some() && alone.is_some());
        assert!(tree >= alone, "{tree:?} < {alone:?}");
        assert_eq!(tree_cpu_ticks(u32::MAX), None, "no such process");
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
