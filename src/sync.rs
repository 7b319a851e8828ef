//! The one poison-tolerant lock helper.
//!
//! A panic while a lock is held (a bug) poisons a `std::sync::Mutex`. The daemon's shared state
//! is counters, snapshots and queues, each left consistent between statements, so the right
//! answer is to keep going with what the lock holds rather than take a second task down with
//! the first: every `Mutex` in `src/` is locked through [`lock`]. This leaf imports nothing of
//! the crate.

use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

/// Locks `m`, taking the data even if a panicking holder poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks `m` if nobody holds it now (`None` if somebody does), taking the data even if a
/// panicking holder poisoned it. For readers on async threads that have an answer without the
/// lock (a cached figure) and must not wait out a holder's disk I/O.
pub fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_lock_gives_way_to_a_holder() {
        let m = Mutex::new(1);
        let held = lock(&m);
        assert!(try_lock(&m).is_none());
        drop(held);
        assert_eq!(try_lock(&m).map(|g| *g), Some(1));
    }

    #[test]
    fn a_poisoned_lock_still_gives_its_data() {
        let m = std::sync::Arc::new(Mutex::new(41));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = lock(&m2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 42);
    }
}
