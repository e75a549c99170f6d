//! Per-record write locks, so concurrent read-modify-write operations on one
//! key (tag, rotate, disable…) never lose each other's changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub struct RecordLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub struct RecordGuard {
    _guard: OwnedMutexGuard<()>,
}

impl RecordLocks {
    /// Waits for and takes the lock of `record`.
    pub async fn lock(&self, record: &str) -> RecordGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget locks nobody holds or waits for, so the map stays small.
            if map.len() > 1024 {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            Arc::clone(map.entry(record.to_owned()).or_default())
        };
        RecordGuard {
            _guard: mutex.lock_owned().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_record() {
        let locks = Arc::new(RecordLocks::default());
        let guard = locks.lock("a").await;
        // Another record is independent.
        let _b = locks.lock("b").await;
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("a").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        waiter.await.expect("acquires after release");
    }
}
