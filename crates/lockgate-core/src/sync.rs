//! [`lock`]: the one way Lockgate takes a mutex.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, tolerating poison: a panic in a user function is caught and reported
/// where it happens (the batch fails with the operator's name), so a lock it poisoned
/// guards data that is still consistent, and the engine must go on to stop cleanly
/// rather than panic again on every later lock.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
