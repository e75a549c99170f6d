//! A memory-capped enclave (issue 21): the tests that run hostile policy
//! modules and floods move the spawned mock enclave into a cgroup of its own
//! capped at [`ENCLAVE_CAP_MIB`] MiB without swap (an enclave has none), start
//! it with the matching `--memory-budget`, and check at the end that the
//! kernel OOM-killed nothing in it (and report its peak memory).
//!
//! `setrlimit(RLIMIT_AS)` cannot do this: wasmtime's pooling allocator
//! reserves many GiB of address space it never touches. A cgroup limits what
//! is resident, like the enclave's fixed memory.
//!
//! cgroup v2 (`/sys/fs/cgroup` with the `memory` controller): a child
//! `keyward-test-<pid>-<n>` with `memory.max` and `memory.swap.max=0`; OOM
//! kills from `memory.events`, the peak from `memory.peak`. cgroup v1 (a
//! `memory` hierarchy): a child of the test process's own memory cgroup with
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` where swap is
//! accounted), `move_charge_at_immigrate` so the enclave's memory so far
//! moves with it; OOM kills from `memory.oom_control`, the peak from
//! `memory.max_usage_in_bytes`. The enclave is moved right after it printed
//! its pid, before the test's load. Needs root (CI runs as root). Where no
//! writable memory cgroup exists the test says so loudly on stderr and runs
//! uncapped; under `CI=true` it fails instead.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::Sandbox;

/// The cap, like a small enclave's memory.
pub const ENCLAVE_CAP_MIB: u64 = 512;

/// Adds the matching `--memory-budget` to `sandbox`'s starts.
pub fn budget_for_cap(sandbox: &mut Sandbox) {
    sandbox.extra_args.push(format!("--memory-budget={ENCLAVE_CAP_MIB}"));
}

enum Version {
    V2,
    V1,
}

/// One capped cgroup holding the enclave; removed on drop.
pub struct MemoryCap {
    dir: PathBuf,
    version: Version,
    /// The enclave's pid.
    pid: u32,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
    })
}

impl MemoryCap {
    fn create(bytes: u64) -> Result<MemoryCap, String> {
        let name = format!(
            "keyward-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let v2_root = Path::new("/sys/fs/cgroup");
        let controllers = std::fs::read_to_string(v2_root.join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "memory") {
            let dir = v2_root.join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let cap = MemoryCap {
                dir,
                version: Version::V2,
                pid: 0,
            };
            write(&cap.dir.join("memory.max"), &bytes.to_string())?;
            write(&cap.dir.join("memory.swap.max"), "0")?;
            return Ok(cap);
        }
        // cgroup v1: below this process's own memory cgroup.
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let path = own
            .lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers.split(',').any(|c| c == "memory").then(|| path.to_owned())
            })
            .ok_or("no cgroup v2 memory controller and no cgroup v1 memory hierarchy")?;
        let parent = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let cap = MemoryCap {
            dir,
            version: Version::V1,
            pid: 0,
        };
        write(&cap.dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
        let memsw = cap.dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &bytes.to_string())?;
        }
        // Deprecated (refused by newer kernels): best effort.
        let _ = write(&cap.dir.join("memory.move_charge_at_immigrate"), "3");
        Ok(cap)
    }

    /// Moves the enclave `pid` into a new cgroup capped at
    /// [`ENCLAVE_CAP_MIB`]. `None` (after a loud warning) where no memory
    /// cgroup is writable; panics instead under `CI=true`.
    pub fn for_enclave(pid: u32) -> Option<MemoryCap> {
        let created = MemoryCap::create(ENCLAVE_CAP_MIB * 1024 * 1024).and_then(|mut cap| {
            cap.pid = pid;
            write(&cap.dir.join("cgroup.procs"), &pid.to_string()).map(|()| cap)
        });
        match created {
            Ok(cap) => Some(cap),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "CI must run the enclave under a {ENCLAVE_CAP_MIB} MiB memory cgroup: {e}"
                );
                eprintln!(
                    "WARNING: NOT MEMORY-CAPPED: no writable memory cgroup ({e}); the enclave runs without the {ENCLAVE_CAP_MIB} MiB cap"
                );
                None
            }
        }
    }

    /// OOM kills in the cgroup so far.
    pub fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let text = std::fs::read_to_string(self.dir.join(file)).expect("read the cgroup's OOM counter");
        field(&text, "oom_kill").expect("the cgroup reports oom_kill")
    }

    /// The most memory the cgroup held, in bytes.
    pub fn peak_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.peak",
            Version::V1 => "memory.max_usage_in_bytes",
        };
        std::fs::read_to_string(self.dir.join(file)).ok()?.trim().parse().ok()
    }

    /// The enclave's peak resident memory (`VmHWM`), in bytes.
    fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
        Some(kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
    }

    /// Asserts that nothing was OOM-killed and prints the peaks (`what`: the
    /// test): the cgroup's (charged since the move) and the enclave's RSS.
    pub fn assert_no_oom_kill(&self, what: &str) {
        let mib = |bytes: Option<u64>| bytes.unwrap_or(0) / (1024 * 1024);
        eprintln!(
            "{what}: enclave under a {ENCLAVE_CAP_MIB} MiB cap: cgroup peak {} MiB, enclave peak RSS {} MiB, OOM kills {}",
            mib(self.peak_bytes()),
            mib(self.peak_rss_bytes()),
            self.oom_kills()
        );
        assert_eq!(self.oom_kills(), 0, "{what}: the enclave was OOM-killed under the cap");
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        // The enclave may outlive this (`keyward dev` is often dropped
        // later): hand it back to the parent cgroup, then remove this one.
        if self.pid != 0
            && let Some(parent) = self.dir.parent()
        {
            let _ = write(&parent.join("cgroup.procs"), &self.pid.to_string());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
