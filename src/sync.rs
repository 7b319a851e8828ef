//! The one poison-tolerant lock helper.
//!
//! A panic while a lock is held (a bug) poisons a `std::sync::Mutex`. The daemon's shared state
//! is counters, snapshots and queues, each left consistent between statements, so the right
//! answer is to keep going with what the lock holds rather than take a second task down with
//! the first: every `Mutex` in `src/` is locked through [`lock`]. This leaf imports nothing of
//! the crate.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking the data even if a panicking holder poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

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
