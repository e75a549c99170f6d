//! The memory budget (`--memory-budget`): pure arithmetic that sizes the
//! enclave's memory-hungry parts from the memory it has, so that their worst
//! cases together fit with headroom. A budget that cannot hold the minimum
//! of each refuses to start, naming the knob.
//!
//! From the budget `B`: a base of [`BASE_BYTES`] (the process, its runtime,
//! wasmtime's engine, record and credential caches, the kernel's share in an
//! enclave) is reserved, and of the rest only 80 % is handed out (25 %
//! headroom over the sum of the worst cases). That usable part is shared:
//! * [`SANDBOX_SHARE`] to the sandbox pool: slots of
//!   [`MAX_MEMORY_BYTES`] each (a hostile module can fill all of its linear
//!   memory), at most [`MAX_SLOTS`] (the old fixed pool), at least
//!   [`MIN_SLOTS`];
//! * [`CACHE_SHARE`] to the compiled-module cache: [`CACHE_ENTRY_BYTES`] per
//!   entry (the machine code of a module of up to 1 MiB and its metadata),
//!   at most 256 entries, at least [`MIN_CACHE_ENTRIES`]; each tenant may
//!   hold at most half of it (and at most 16);
//! * [`BODY_SHARE`] to request bodies in flight: a body of `n` bytes costs
//!   about [`JSON_EXPANSION`]`× n` once parsed into JSON values, so the bytes
//!   of bodies in flight at once are capped at share / expansion (at least
//!   one body of the largest size);
//! * [`STREAM_SHARE`] to client streams: [`STREAM_BYTES`] each (TLS
//!   buffers, the HTTP connection), at least [`MIN_STREAMS`], at most
//!   `--max-client-streams`.
//!
//! Default: in nitro mode the enclave's memory (`MemTotal` of
//! `/proc/meminfo`); otherwise [`DEFAULT_BUDGET_MIB`].

use crate::policy::modules::CacheLimits;
use crate::policy::sandbox::MAX_MEMORY_BYTES;

const MIB: u64 = 1024 * 1024;
/// The default budget outside nitro mode (the runbook's enclave size).
pub const DEFAULT_BUDGET_MIB: u64 = 1024;
/// Reserved for everything the budget does not size.
pub const BASE_BYTES: u64 = 128 * MIB;
/// Headroom: the sized parts' worst cases sum to at most 100/(100+25) of what remains.
pub const HEADROOM_PERCENT: u64 = 25;
/// Shares of the usable part, in percent.
pub const SANDBOX_SHARE: u64 = 40;
pub const CACHE_SHARE: u64 = 15;
pub const BODY_SHARE: u64 = 35;
pub const STREAM_SHARE: u64 = 10;
/// Sandbox slots: the old fixed pool size is the ceiling.
pub const MAX_SLOTS: u32 = 256;
pub const MIN_SLOTS: u32 = 4;
/// Estimated bytes of one compiled module in the cache.
pub const CACHE_ENTRY_BYTES: u64 = 2 * MIB;
pub const MAX_CACHE_ENTRIES: usize = 256;
pub const MIN_CACHE_ENTRIES: usize = 4;
/// Per-tenant ceiling of the module cache.
pub const MAX_CACHE_PER_TENANT: usize = 16;
/// Memory of a request parsed into JSON values, per byte of body (measured ~16×).
pub const JSON_EXPANSION: u64 = 17;
/// Estimated bytes of one client stream (TLS state and buffers, HTTP/1 connection).
pub const STREAM_BYTES: u64 = 128 * 1024;
pub const MIN_STREAMS: usize = 16;

/// What a budget sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The budget itself, in bytes.
    pub total_bytes: u64,
    /// Sandbox pool slots (instances at once).
    pub sandbox_slots: u32,
    /// The compiled-module cache.
    pub cache: CacheLimits,
    /// Bytes of request bodies being read or handled at once.
    pub body_bytes_in_flight: usize,
    /// Client streams served at once.
    pub client_streams: usize,
}

/// Why a budget cannot be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetError {
    pub budget_mib: u64,
    pub what: String,
    pub needed_mib: u64,
    /// The other knob that lowers the need, if any.
    pub knob: Option<&'static str>,
}

impl std::fmt::Display for BudgetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--memory-budget {} MiB cannot hold {} (needs at least {} MiB); raise --memory-budget",
            self.budget_mib, self.what, self.needed_mib
        )?;
        match self.knob {
            Some(knob) => write!(f, " or lower {knob}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for BudgetError {}

impl Budget {
    /// Sizes everything from `budget_mib` MiB; `max_body` is the largest
    /// request body, `max_streams` the ceiling of client streams.
    pub fn size(budget_mib: u64, max_body: usize, max_streams: usize) -> Result<Budget, BudgetError> {
        let total = budget_mib.saturating_mul(MIB);
        let usable = total.saturating_sub(BASE_BYTES) * 100 / (100 + HEADROOM_PERCENT);
        let share = |percent: u64| usable / 100 * percent;
        // The smallest budget that meets `need` bytes from a `percent` share.
        let needed_mib = |need: u64, percent: u64| {
            let usable = need.div_ceil(percent) * 100;
            (BASE_BYTES + usable * (100 + HEADROOM_PERCENT) / 100).div_ceil(MIB)
        };
        let refuse = |what: String, need: u64, percent: u64, knob: Option<&'static str>| BudgetError {
            budget_mib,
            what,
            needed_mib: needed_mib(need, percent),
            knob,
        };
        let slot = MAX_MEMORY_BYTES as u64;
        let slots = (share(SANDBOX_SHARE) / slot).min(u64::from(MAX_SLOTS));
        if slots < u64::from(MIN_SLOTS) {
            return Err(refuse(
                format!("{MIN_SLOTS} policy sandbox slots of {} MiB", slot / MIB),
                u64::from(MIN_SLOTS) * slot,
                SANDBOX_SHARE,
                None,
            ));
        }
        let entries = usize::try_from(share(CACHE_SHARE) / CACHE_ENTRY_BYTES)
            .unwrap_or(usize::MAX)
            .min(MAX_CACHE_ENTRIES);
        if entries < MIN_CACHE_ENTRIES {
            return Err(refuse(
                format!("{MIN_CACHE_ENTRIES} compiled policy modules"),
                MIN_CACHE_ENTRIES as u64 * CACHE_ENTRY_BYTES,
                CACHE_SHARE,
                None,
            ));
        }
        let body_bytes = share(BODY_SHARE) / JSON_EXPANSION;
        if body_bytes < max_body as u64 {
            return Err(refuse(
                format!("one request body of {max_body} bytes expanded {JSON_EXPANSION}× as JSON"),
                max_body as u64 * JSON_EXPANSION,
                BODY_SHARE,
                Some("the largest request body"),
            ));
        }
        let streams = usize::try_from(share(STREAM_SHARE) / STREAM_BYTES)
            .unwrap_or(usize::MAX)
            .min(max_streams);
        if streams < MIN_STREAMS.min(max_streams) {
            return Err(refuse(
                format!("{MIN_STREAMS} client streams"),
                MIN_STREAMS as u64 * STREAM_BYTES,
                STREAM_SHARE,
                Some("--max-client-streams"),
            ));
        }
        Ok(Budget {
            total_bytes: total,
            // Both below their ceilings (256), so they convert.
            sandbox_slots: u32::try_from(slots).unwrap_or(MAX_SLOTS),
            cache: CacheLimits {
                total: entries,
                per_tenant: (entries / 2).clamp(1, MAX_CACHE_PER_TENANT),
            },
            body_bytes_in_flight: usize::try_from(body_bytes).unwrap_or(usize::MAX),
            client_streams: streams,
        })
    }

    /// The sum of the sized parts' worst cases, in bytes.
    pub fn worst_case_bytes(&self) -> u64 {
        u64::from(self.sandbox_slots) * MAX_MEMORY_BYTES as u64
            + self.cache.total as u64 * CACHE_ENTRY_BYTES
            + self.body_bytes_in_flight as u64 * JSON_EXPANSION
            + self.client_streams as u64 * STREAM_BYTES
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: usize = 2 * 1024 * 1024;

    #[test]
    fn the_default_budget_sizes_everything_within_it() {
        let b = Budget::size(DEFAULT_BUDGET_MIB, BODY, 4096).expect("1 GiB fits");
        assert_eq!(b.sandbox_slots, 17);
        assert_eq!(
            b.cache,
            CacheLimits {
                total: 53,
                per_tenant: 16
            }
        );
        assert_eq!(b.body_bytes_in_flight / 1024, 15_111);
        assert_eq!(b.client_streams, 573);
        assert!(BASE_BYTES + b.worst_case_bytes() * 5 / 4 <= b.total_bytes);
    }

    #[test]
    fn every_budget_that_starts_fits_with_headroom() {
        for mib in (300..=65_536).step_by(37) {
            if let Ok(b) = Budget::size(mib, BODY, 4096) {
                let sized = b.worst_case_bytes();
                assert!(BASE_BYTES + sized * 5 / 4 <= b.total_bytes, "{mib} MiB: {b:?}");
                assert!(b.sandbox_slots <= MAX_SLOTS && b.cache.total <= MAX_CACHE_ENTRIES);
                assert!(b.cache.per_tenant < b.cache.total, "one tenant cannot fill the cache");
            }
        }
        let big = Budget::size(65_536, BODY, 4096).expect("64 GiB fits");
        assert_eq!(
            (big.sandbox_slots, big.cache.total, big.client_streams),
            (256, 256, 4096)
        );
    }

    #[test]
    fn a_budget_that_cannot_fit_is_refused_naming_the_knob() {
        let e = Budget::size(256, BODY, 4096).expect_err("256 MiB is too small");
        let text = e.to_string();
        assert!(
            text.starts_with("--memory-budget 256 MiB cannot hold 4 policy sandbox slots"),
            "{text}"
        );
        assert!(text.contains("raise --memory-budget"), "{text}");
        // The minimum it names does start.
        assert!(Budget::size(e.needed_mib - 1, BODY, 4096).is_err());
        let at_min = Budget::size(e.needed_mib, BODY, 4096).expect("the named minimum fits");
        assert_eq!(at_min.sandbox_slots, MIN_SLOTS);
        // 512 MiB (the capped test environment) starts.
        let capped = Budget::size(512, BODY, 4096).expect("512 MiB fits");
        assert_eq!(capped.sandbox_slots, 7);
        // A body limit too large for the budget names the body limit.
        let e = Budget::size(512, 64 * 1024 * 1024, 4096).expect_err("64 MiB bodies");
        assert!(e.to_string().contains("lower the largest request body"), "{e}");
        assert_eq!(Budget::size(0, BODY, 4096).map_err(|e| e.budget_mib), Err(0));
    }

    #[test]
    fn streams_are_capped_by_the_flag_and_the_budget() {
        assert_eq!(Budget::size(1024, BODY, 100).map(|b| b.client_streams), Ok(100));
        assert_eq!(Budget::size(1024, BODY, 1).map(|b| b.client_streams), Ok(1));
    }

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let text = "MemTotal:        1012345 kB\nMemFree:  5 kB\n";
        assert_eq!(mem_total_mib(text), Some(988));
        assert_eq!(mem_total_mib("MemFree: 5 kB\n"), None);
        assert_eq!(mem_total_mib("MemTotal: x kB\n"), None);
    }
}
