//! The output: one line per run as it finishes, the table of every run at the end, and the
//! decrypt-policy / decrypt ratios per concurrency (median over rounds).

use crate::args::Op;
use crate::client::RunResult;
use crate::stats::median;

pub(crate) struct Row {
    pub(crate) op: Op,
    pub(crate) concurrency: usize,
    pub(crate) round: usize,
    pub(crate) what: &'static str,
    pub(crate) result: RunResult,
    pub(crate) ratio: Option<f64>,
}

pub(crate) fn header() -> String {
    format!(
        "{:<18} {:>5} {:<10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}  cpu µs/request",
        "operation", "conns", "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "vs echo"
    )
}

fn format_row(row: &Row) -> String {
    let r = &row.result;
    let cpu: Vec<String> = r
        .cpu_per_request
        .iter()
        .map(|(name, us)| format!("{name} {us:.0}"))
        .collect();
    format!(
        "{:<18} {:>5} {:<10} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>9}  {}",
        row.op.name(),
        row.concurrency,
        row.what,
        r.throughput,
        r.percentile_ms(50.0),
        r.percentile_ms(90.0),
        r.percentile_ms(99.0),
        r.percentile_ms(100.0),
        r.errors,
        row.ratio
            .map(|x| format!("{:.1} %", x * 100.0))
            .unwrap_or_else(|| "-".into()),
        cpu.join(", "),
    )
}

pub(crate) fn print_row(row: &Row) {
    println!("{}", format_row(row));
}

pub(crate) fn print_table(rows: &[Row]) {
    println!("{}", header());
    for row in rows {
        println!("{}", format_row(row));
        if let Some(e) = &row.result.first_error {
            println!("    first error: {}", truncate(e, 300));
        }
    }
    // decrypt-policy / decrypt, per round and concurrency: throughput, and
    // CPU time per request of every measured process (client included: on
    // a machine the client shares, that ratio is what throughput tends to).
    let concurrencies: std::collections::BTreeSet<usize> = rows.iter().map(|r| r.concurrency).collect();
    for &c in &concurrencies {
        let (mut throughput, mut cpu) = (Vec::new(), Vec::new());
        for round in 0..=rows.iter().map(|r| r.round).max().unwrap_or(0) {
            let find = |op: Op| {
                rows.iter()
                    .find(|r| r.what == "keyward" && r.op == op && r.concurrency == c && r.round == round)
            };
            let (Some(policy), Some(plain)) = (find(Op::DecryptPolicy), find(Op::Decrypt)) else {
                continue;
            };
            throughput.push(policy.result.throughput / plain.result.throughput);
            let total = |r: &Row| r.result.cpu_per_request.iter().map(|(_, us)| us).sum::<f64>();
            if total(policy) > 0.0 {
                cpu.push(total(plain) / total(policy));
            }
        }
        let line = |what: &str, ratios: Vec<f64>| {
            let each: Vec<String> = ratios.iter().map(|r| format!("{:.1}", r * 100.0)).collect();
            let Some(median) = median(ratios) else {
                return;
            };
            if each.len() == 1 {
                println!(
                    "decrypt-policy / decrypt at {c} connections, {what}: {:.1} %",
                    median * 100.0
                );
            } else {
                println!(
                    "decrypt-policy / decrypt at {c} connections, {what}: median {:.1} % (rounds: {} %)",
                    median * 100.0,
                    each.join(", ")
                );
            }
        };
        line("throughput", throughput);
        line("CPU per request (inverse)", cpu);
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
