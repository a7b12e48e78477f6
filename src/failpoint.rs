//! Failpoints for demos and tests, set by an environment variable, like etcd's gofail:
//! `LOCKGUARD_FAILPOINT=name[,name…]`. They exist only in a build with the cargo feature
//! `failpoints` (the demo, the tests, the chaos suite); a release build refuses to start
//! when the variable is set, rather than run without the fault someone asked for.
//!
//! - `stop-before-ledger-write`: the first ledger write of this process stops the whole
//!   process (SIGSTOP) while it holds the pool's lock, so a demo can thaw it (SIGCONT)
//!   after the lock's TTL and show its stale write rejected. `stop-before-ledger-write:N`
//!   stops before every Nth ledger write instead (the chaos suite).
//! - `stop-before-status-write`: the same at the first claim status write that records an
//!   allocation, after the lock was released.
//! - `fence-off`: ledger writes go with the largest token there is (which the API server's
//!   token rules let through) and without the resourceVersion precondition. Only for the chaos suite's negative control, which must
//!   see the invariants break without the fence.

#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};

pub const ENV: &str = "LOCKGUARD_FAILPOINT";
pub const STOP_BEFORE_LEDGER_WRITE: &str = "stop-before-ledger-write";
pub const STOP_BEFORE_STATUS_WRITE: &str = "stop-before-status-write";
pub const FENCE_OFF: &str = "fence-off";

/// Whether this binary has failpoints.
pub const COMPILED: bool = cfg!(feature = "failpoints");

/// Why this process must not start given `LOCKGUARD_FAILPOINT=value`: a binary built without
/// failpoints cannot honour one, and running as if it did would hide a wrong image.
pub fn refusal(value: Option<&str>, compiled: bool) -> Option<String> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    (!compiled).then(|| {
        format!(
            "{ENV}={value} is set, but this binary was built without failpoints (they are test-only: \
             cargo feature \"failpoints\"); unset {ENV}, or run a test build"
        )
    })
}

/// Whether failpoint `name` is switched on for this process.
#[cfg(feature = "failpoints")]
pub fn enabled(name: &str) -> bool {
    every(name).is_some()
}

/// `Some(0)` for a bare `name` (once), `Some(n)` for `name:n` (every nth time).
#[cfg(feature = "failpoints")]
fn every(name: &str) -> Option<u64> {
    parse_every(&std::env::var(ENV).ok()?, name)
}

#[cfg(feature = "failpoints")]
fn parse_every(value: &str, name: &str) -> Option<u64> {
    value.split(',').map(str::trim).find_map(|entry| match entry.split_once(':') {
        Some((n, count)) if n == name => count.parse().ok(),
        None if entry == name => Some(0),
        _ => None,
    })
}

/// Called under a pool's lock just before its ledger is written.
#[cfg(feature = "failpoints")]
pub fn before_ledger_write(pool: &str, token: u64) {
    static REACHED: AtomicU64 = AtomicU64::new(0);
    if stop_at(STOP_BEFORE_LEDGER_WRITE, &REACHED) {
        tracing::warn!(pool, token, "failpoint: resumed (SIGCONT); writing the ledger with the old token");
    }
}

/// Called just before a claim's status records an allocation.
#[cfg(feature = "failpoints")]
pub fn before_status_write(claim: &str) {
    static REACHED: AtomicU64 = AtomicU64::new(0);
    if stop_at(STOP_BEFORE_STATUS_WRITE, &REACHED) {
        tracing::warn!(claim, "failpoint: resumed (SIGCONT); writing the claim's status");
    }
}

#[cfg(not(feature = "failpoints"))]
pub fn before_ledger_write(_pool: &str, _token: u64) {}

#[cfg(not(feature = "failpoints"))]
pub fn before_status_write(_claim: &str) {}

/// Stops this process when `name` is reached the first time (or every nth time); true
/// when it did.
#[cfg(feature = "failpoints")]
fn stop_at(name: &str, reached: &AtomicU64) -> bool {
    let Some(every) = every(name) else { return false };
    let n = reached.fetch_add(1, Ordering::AcqRel) + 1;
    let due = if every == 0 { n == 1 } else { n.is_multiple_of(every) };
    if !due {
        return false;
    }
    tracing::warn!("failpoint {name}: stopping this process (SIGSTOP)");
    // SAFETY: raise(3) on the calling process.
    unsafe { libc::raise(libc::SIGSTOP) };
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_without_failpoints_refuses_a_failpoint_setting() {
        let refused = refusal(Some("fence-off"), false).expect("refused");
        assert!(refused.contains("LOCKGUARD_FAILPOINT=fence-off") && refused.contains("without failpoints"));
        assert_eq!(refusal(Some("fence-off"), true), None);
        // The demo starts replicas with the variable set but empty.
        assert_eq!(refusal(Some(" "), false), None);
        assert_eq!(refusal(None, false), None);
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn failpoints_are_named_with_an_optional_period() {
        let value = "fence-off, stop-before-ledger-write:8";
        assert_eq!(parse_every(value, FENCE_OFF), Some(0));
        assert_eq!(parse_every(value, STOP_BEFORE_LEDGER_WRITE), Some(8));
        assert_eq!(parse_every(value, STOP_BEFORE_STATUS_WRITE), None);
        assert_eq!(parse_every("stop-before-ledger-write:x", STOP_BEFORE_LEDGER_WRITE), None);
    }
}
