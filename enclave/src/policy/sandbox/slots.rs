//! The bounds around decisions that are not per store: the instance slots
//! (how many decisions run at once) and the epoch ticker (wall-clock time).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::{EPOCH_TICK, PolicyError};

/// A counting semaphore over the instance slots.
pub(super) struct Slots {
    state: Mutex<SlotCount>,
    freed: Condvar,
}

struct SlotCount {
    free: u32,
    /// Callers waiting in [`Slots::acquire`]: a release wakes one only when
    /// there is one (a `Condvar` notification is a futex system call even
    /// with nobody waiting, on every decision).
    waiting: u32,
}

pub(super) struct SlotGuard(Arc<Slots>);

impl Slots {
    pub(super) fn new(count: u32) -> Self {
        Slots {
            state: Mutex::new(SlotCount {
                free: count,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotCount> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Slots free right now.
    #[cfg(test)]
    pub(super) fn free(&self) -> u32 {
        self.lock().free
    }

    pub(super) fn acquire(slots: &Arc<Self>, wait: Duration) -> Option<SlotGuard> {
        let mut state = slots.lock();
        if state.free == 0 {
            let deadline = Instant::now() + wait;
            state.waiting += 1;
            while state.free == 0 {
                let now = Instant::now();
                if now >= deadline {
                    state.waiting -= 1;
                    return None;
                }
                state = slots
                    .freed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            state.waiting -= 1;
        }
        state.free -= 1;
        Some(SlotGuard(Arc::clone(slots)))
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.free += 1;
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.0.freed.notify_one();
        }
    }
}

/// The thread that advances the engine's epoch every `EPOCH_TICK`; it stops
/// when the engine is dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub(super) fn start(engine: &Engine) -> Result<Self, PolicyError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("keyward-policy-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| PolicyError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
