//! Fair scheduling of sandbox work: compiling a module (upload, a cache
//! miss, `Keyward.TestPolicy`) and any decision that does not fit the inline
//! budget run on tokio's blocking threads, never on the async workers, and
//! only through this scheduler:
//!
//! * a **pool** of [`SchedulerLimits::pool`] jobs at once in all (the
//!   machine's cores: the rest of the enclave keeps its async workers);
//! * at most [`SchedulerLimits::per_tenant`] of them for one tenant (half
//!   the pool), so another tenant always finds a free place;
//! * a **fuel budget** per tenant ([`SchedulerLimits::fuel_per_second`],
//!   bucket [`SchedulerLimits::fuel_burst`]): every decision's fuel is
//!   charged after it ran, inline ones included, and a compilation is charged
//!   [`COMPILE_FUEL_PER_BYTE`] per module byte. A tenant in debt gets no
//!   inline decisions and waits for its budget to refill.
//!
//! A tenant over its share waits at most [`SchedulerLimits::wait`] for it,
//! then gets `ThrottlingException`. Waiting is for a place of its own
//! tenant's, or for its own budget; no tenant waits behind another's work
//! unless the whole pool is busy with the shares of several.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What compiling a module is charged, in fuel per module byte (an
/// estimate: a 1 MiB module costs about three full decisions).
pub const COMPILE_FUEL_PER_BYTE: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerLimits {
    /// Sandbox jobs running at once, all tenants together.
    pub pool: usize,
    /// Of those, one tenant's at most.
    pub per_tenant: usize,
    /// Fuel a tenant may spend a second, on average.
    pub fuel_per_second: f64,
    /// Fuel a tenant may spend at once after a quiet period.
    pub fuel_burst: f64,
    /// How long a request waits for its tenant's share before `ThrottlingException`.
    pub wait: Duration,
}

impl SchedulerLimits {
    /// Limits for a machine of `cpus` cores: a pool of as many jobs (at
    /// least 2), half of it per tenant; 200 M fuel a second per tenant (ten
    /// full decisions), a burst of twice that; 250 ms of waiting.
    pub fn for_cpus(cpus: usize) -> Self {
        let pool = cpus.max(2);
        SchedulerLimits {
            pool,
            per_tenant: (pool / 2).max(1),
            fuel_per_second: 200e6,
            fuel_burst: 400e6,
            wait: Duration::from_millis(250),
        }
    }
}

impl Default for SchedulerLimits {
    fn default() -> Self {
        Self::for_cpus(std::thread::available_parallelism().map_or(2, usize::from))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchedulerError {
    #[error("the tenant's share of the policy sandbox is in use")]
    Throttled,
    #[error("a policy sandbox job failed: {0}")]
    Failed(String),
}

pub struct Scheduler {
    limits: SchedulerLimits,
    pool: Arc<Semaphore>,
    tenants: Mutex<HashMap<String, Share>>,
}

struct Share {
    running: Arc<Semaphore>,
    fuel: f64,
    refilled: Instant,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new(SchedulerLimits::default())
    }
}

impl Scheduler {
    pub fn new(limits: SchedulerLimits) -> Self {
        Scheduler {
            limits,
            pool: Arc::new(Semaphore::new(limits.pool.max(1))),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> SchedulerLimits {
        self.limits
    }

    /// Whether `tenant` has fuel left now (only then may it decide inline).
    pub fn within_budget(&self, tenant: &str) -> bool {
        self.with_share(tenant, |share| share.fuel > 0.0)
    }

    /// Charges `fuel` to `tenant`'s budget (it may go into debt).
    pub fn charge(&self, tenant: &str, fuel: u64) {
        self.with_share(tenant, |share| share.fuel -= fuel as f64);
    }

    /// Runs `work` (which returns its result and the fuel it used) on a
    /// blocking thread within `tenant`'s share, waiting at most
    /// [`SchedulerLimits::wait`] for it.
    pub async fn run<T, F>(&self, tenant: &str, work: F) -> Result<T, SchedulerError>
    where
        T: Send + 'static,
        F: FnOnce() -> (T, u64) + Send + 'static,
    {
        let deadline = Instant::now() + self.limits.wait;
        let running = self.with_share(tenant, |share| Arc::clone(&share.running));
        let _mine = tokio::time::timeout_at(deadline, running.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(SchedulerError::Throttled)?;
        // In debt: wait for the budget to come back above zero, if it does in time.
        let debt = self.with_share(tenant, |share| -share.fuel);
        if debt >= 0.0 {
            let refill = Duration::from_secs_f64((debt + 1.0) / self.limits.fuel_per_second.max(1.0));
            if Instant::now() + refill > deadline {
                return Err(SchedulerError::Throttled);
            }
            // Pacing a tenant over its budget, not synchronisation.
            tokio::time::sleep(refill).await;
        }
        let _slot = tokio::time::timeout_at(deadline, Arc::clone(&self.pool).acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(SchedulerError::Throttled)?;
        let (value, fuel) = tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| SchedulerError::Failed(e.to_string()))?;
        self.charge(tenant, fuel);
        Ok(value)
    }

    fn with_share<R>(&self, tenant: &str, f: impl FnOnce(&mut Share) -> R) -> R {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = self.limits;
        let now = Instant::now();
        let share = tenants.entry(tenant.to_owned()).or_insert_with(|| Share {
            running: Arc::new(Semaphore::new(limits.per_tenant.max(1))),
            fuel: limits.fuel_burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(share.refilled).as_secs_f64();
        share.fuel = (share.fuel + elapsed * limits.fuel_per_second).min(limits.fuel_burst);
        share.refilled = now;
        f(share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SchedulerLimits {
        SchedulerLimits {
            pool: 2,
            per_tenant: 1,
            fuel_per_second: 1000.0,
            fuel_burst: 1000.0,
            wait: Duration::from_millis(200),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_over_its_share_is_throttled_and_others_are_not() {
        let scheduler = Arc::new(Scheduler::new(limits()));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let busy = {
            let scheduler = Arc::clone(&scheduler);
            tokio::spawn(async move {
                scheduler
                    .run("hog", move || {
                        let _ = started_tx.send(());
                        let _ = hold.recv();
                        ((), 10)
                    })
                    .await
            })
        };
        started_rx.await.expect("the hog's job started");
        // The hog's one place is taken: its next job waits, then is throttled.
        assert_eq!(scheduler.run("hog", || ((), 0)).await, Err(SchedulerError::Throttled));
        // Another tenant runs at once, on the pool's other place.
        assert_eq!(scheduler.run("other", || (7, 5)).await, Ok(7));
        release.send(()).expect("release the hog");
        assert_eq!(busy.await.expect("joins"), Ok(()));
        assert_eq!(scheduler.run("hog", || (1, 0)).await, Ok(1), "free again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fuel_debt_stops_inline_work_and_is_paid_back_or_throttled() {
        let scheduler = Scheduler::new(limits());
        assert!(scheduler.within_budget("t"));
        scheduler.charge("t", 1050);
        assert!(!scheduler.within_budget("t"), "in debt");
        assert!(scheduler.within_budget("u"), "budgets are per tenant");
        // 50 in debt at 1000/s: ~50 ms of waiting, within the 200 ms allowed.
        assert_eq!(scheduler.run("t", || (1, 0)).await, Ok(1));
        // A debt that takes longer than the wait to repay is throttled at once.
        scheduler.charge("t", 5000);
        let started = std::time::Instant::now();
        assert_eq!(scheduler.run("t", || (1, 0)).await, Err(SchedulerError::Throttled));
        assert!(started.elapsed() < Duration::from_millis(150), "no pointless wait");
    }
}
