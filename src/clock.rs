//! Time helpers shared by the core: the wall clock in the units the wire and the sequence
//! counter use, and an optional deadline to wait on inside `select!`.
//!
//! Owns: nothing but these conversions. Must not touch any state.

use tokio::time::Instant;

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds since the Unix epoch, as CDP and the frame header carry them.
pub fn wall_clock_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Resolves at `at`, never when `None` (a `select!` branch that is off until a deadline is set).
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
