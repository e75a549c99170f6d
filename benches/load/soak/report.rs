//! The soak's report: per operation (requests, errors during and outside
//! disruptions, latency percentiles, error kinds), a timeline (requests,
//! errors, p50/p99, RSS of both processes per interval), the disruptions and
//! the memory samples.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::soak::service::Disruption;
use crate::soak::workload::{Event, SoakOp};
use crate::stats::rss_kib;

/// After a disruption's service answered again, errors within this grace are
/// still counted as the disruption's (connections kept from before it fail
/// at their next request).
const GRACE: Duration = Duration::from_secs(2);

/// RSS of both processes at one moment.
pub(crate) struct Sample {
    pub(crate) at: Duration,
    pub(crate) proxy_kib: Option<u64>,
    pub(crate) enclave_kib: Option<u64>,
}

impl Sample {
    pub(crate) fn take(at: Duration, proxy_pid: u32, enclave_pid: u32) -> Sample {
        Sample {
            at,
            proxy_kib: rss_kib(proxy_pid, "VmRSS:"),
            enclave_kib: rss_kib(enclave_pid, "VmRSS:"),
        }
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
}

/// The `p`th percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

fn during_disruption(at: Duration, disruptions: &[Disruption]) -> bool {
    disruptions
        .iter()
        .any(|d| at + GRACE >= d.at && at <= d.at + d.downtime + GRACE)
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

pub(crate) fn per_op(events: &[Event], disruptions: &[Disruption], load: Duration) {
    println!();
    println!(
        "per operation over {:.0} s ({} requests, {:.1} req/s); errors 'disrupted' are within {} s of a kill or restart:",
        load.as_secs_f64(),
        events.len(),
        events.len() as f64 / load.as_secs_f64().max(1e-9),
        GRACE.as_secs()
    );
    println!(
        "{:<18} {:>9} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "operation", "requests", "errors", "error %", "disrupted", "steady", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut kinds: BTreeMap<(SoakOp, String), u64> = BTreeMap::new();
    for op in SoakOp::ALL {
        let of_op: Vec<&Event> = events.iter().filter(|e| e.op == op).collect();
        let mut ok: Vec<u32> = of_op
            .iter()
            .filter(|e| e.error.is_none())
            .map(|e| micros(e.latency))
            .collect();
        ok.sort_unstable();
        let errors: Vec<&&Event> = of_op.iter().filter(|e| e.error.is_some()).collect();
        let disrupted = errors.iter().filter(|e| during_disruption(e.at, disruptions)).count();
        for e in &errors {
            if let Some(kind) = &e.error {
                *kinds.entry((op, kind.clone())).or_default() += 1;
            }
        }
        println!(
            "{:<18} {:>9} {:>9} {:>7.2}% {:>9} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            op.name(),
            of_op.len(),
            errors.len(),
            100.0 * errors.len() as f64 / of_op.len().max(1) as f64,
            disrupted,
            errors.len() - disrupted,
            percentile_ms(&ok, 50.0),
            percentile_ms(&ok, 90.0),
            percentile_ms(&ok, 99.0),
            percentile_ms(&ok, 100.0),
        );
    }
    if !kinds.is_empty() {
        println!("errors by kind:");
        for ((op, kind), n) in &kinds {
            println!("    {:<18} {kind}: {n}", op.name());
        }
    }
}

pub(crate) fn timeline(
    events: &[Event],
    samples: &[Sample],
    disruptions: &[Disruption],
    every: Duration,
    load: Duration,
) {
    println!();
    println!("timeline (latencies of answered requests; RSS: the highest sample of the interval, MiB):");
    println!(
        "{:>13} {:>9} {:>7} {:>8} {:>8} {:>9} {:>11} {:>7} {:>8}",
        "seconds", "requests", "errors", "p50 ms", "p99 ms", "proxy RSS", "enclave RSS", "kills", "restarts"
    );
    let mut from = Duration::ZERO;
    // (A last interval shorter than half a second is left out.)
    while from + Duration::from_millis(500) < load {
        let to = from + every;
        let inside = |at: Duration| at >= from && at < to;
        let of: Vec<&Event> = events.iter().filter(|e| inside(e.at)).collect();
        let mut ok: Vec<u32> = of
            .iter()
            .filter(|e| e.error.is_none())
            .map(|e| micros(e.latency))
            .collect();
        ok.sort_unstable();
        let rss = |pick: fn(&Sample) -> Option<u64>| samples.iter().filter(|s| inside(s.at)).filter_map(pick).max();
        let count = |what: &str| {
            disruptions
                .iter()
                .filter(|d| inside(d.at) && d.what.starts_with(what))
                .count()
        };
        println!(
            "{:>6.0}-{:<6.0} {:>9} {:>7} {:>8.2} {:>8.2} {:>9} {:>11} {:>7} {:>8}",
            from.as_secs_f64(),
            to.min(load).as_secs_f64(),
            of.len(),
            of.iter().filter(|e| e.error.is_some()).count(),
            percentile_ms(&ok, 50.0),
            percentile_ms(&ok, 99.0),
            mib(rss(|s| s.proxy_kib)),
            mib(rss(|s| s.enclave_kib)),
            count("enclave"),
            disruptions
                .iter()
                .filter(|d| inside(d.at) && !d.what.starts_with("enclave"))
                .count(),
        );
        from = to;
    }
}

pub(crate) fn disruptions(disruptions: &[Disruption]) {
    if disruptions.is_empty() {
        return;
    }
    let mut downtimes: Vec<f64> = disruptions.iter().map(|d| d.downtime.as_secs_f64()).collect();
    downtimes.sort_by(f64::total_cmp);
    println!();
    println!(
        "{} disruptions; time until answering again: median {:.2} s, max {:.2} s",
        disruptions.len(),
        downtimes[downtimes.len() / 2],
        downtimes[downtimes.len() - 1]
    );
    let peaks: Vec<String> = disruptions
        .iter()
        .filter_map(|d| d.enclave_peak_kib)
        .map(|k| format!("{:.0}", k as f64 / 1024.0))
        .collect();
    if !peaks.is_empty() {
        println!(
            "peak RSS (VmHWM) of each killed enclave, in order, MiB: {}",
            peaks.join(" ")
        );
    }
}

pub(crate) fn memory(samples: &[Sample]) {
    let series = |pick: fn(&Sample) -> Option<u64>| {
        let values: Vec<u64> = samples.iter().filter_map(pick).collect();
        let first = values.iter().take(3).max().copied();
        let last = values.iter().rev().take(3).max().copied();
        (values.iter().min().copied(), first, last, values.iter().max().copied())
    };
    let (pmin, pfirst, plast, pmax) = series(|s| s.proxy_kib);
    let (emin, efirst, elast, emax) = series(|s| s.enclave_kib);
    println!(
        "RSS samples ({}): proxy min {} / first {} / last {} / max {} MiB; enclave min {} / first {} / last {} / max {} MiB",
        samples.len(),
        mib(pmin),
        mib(pfirst),
        mib(plast),
        mib(pmax),
        mib(emin),
        mib(efirst),
        mib(elast),
        mib(emax)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_sorted_samples() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn errors_near_a_disruption_are_its_own() {
        let d = [Disruption {
            what: "enclave SIGKILL",
            at: Duration::from_secs(30),
            downtime: Duration::from_secs(1),
            enclave_peak_kib: None,
        }];
        assert!(during_disruption(Duration::from_secs(29), &d));
        assert!(during_disruption(Duration::from_secs(33), &d));
        assert!(!during_disruption(Duration::from_secs(20), &d));
        assert!(!during_disruption(Duration::from_secs(34), &d));
    }
}
