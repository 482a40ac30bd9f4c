//! The one lock helper: a poisoned mutex is still used, because every state it guards stays
//! consistent across a panic of its holder (no invariant spans two unlocked steps), and one
//! panicking task must not take a whole channel down with it.
//! Must not hold any other synchronisation policy.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, recovering the guard of a poisoned one.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
