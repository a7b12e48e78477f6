//! Failpoints for demos and tests, set by an environment variable, like etcd's gofail:
//! `LOCKGUARD_FAILPOINT=name[,name…]`.
//!
//! - `stop-before-ledger-write`: the first ledger write of this process stops the whole
//!   process (SIGSTOP) while it holds the pool's lock, so a demo can thaw it (SIGCONT)
//!   after the lock's TTL and show its stale write rejected.
//! - `stop-before-status-write`: the same at the first claim status write that records an
//!   allocation, after the lock was released.
//! - `fence-off`: ledger writes go without the fencing token and without the
//!   resourceVersion precondition. Only for the chaos suite's negative control, which must
//!   see the invariants break without the fence.

use std::sync::atomic::{AtomicBool, Ordering};

pub const ENV: &str = "LOCKGUARD_FAILPOINT";
pub const STOP_BEFORE_LEDGER_WRITE: &str = "stop-before-ledger-write";
pub const STOP_BEFORE_STATUS_WRITE: &str = "stop-before-status-write";
pub const FENCE_OFF: &str = "fence-off";

/// Whether failpoint `name` is switched on for this process.
pub fn enabled(name: &str) -> bool {
    std::env::var(ENV).is_ok_and(|v| v.split(',').any(|n| n.trim() == name))
}

/// Called under a pool's lock just before its ledger is written.
pub fn before_ledger_write(pool: &str, token: u64) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    if stop_once(STOP_BEFORE_LEDGER_WRITE, &FIRED) {
        tracing::warn!(pool, token, "failpoint: resumed (SIGCONT); writing the ledger with the old token");
    }
}

/// Called just before a claim's status records an allocation.
pub fn before_status_write(claim: &str) {
    static FIRED: AtomicBool = AtomicBool::new(false);
    if stop_once(STOP_BEFORE_STATUS_WRITE, &FIRED) {
        tracing::warn!(claim, "failpoint: resumed (SIGCONT); writing the claim's status");
    }
}

/// Stops this process the first time `name` is reached; true when it did.
fn stop_once(name: &str, fired: &AtomicBool) -> bool {
    if !enabled(name) || fired.swap(true, Ordering::AcqRel) {
        return false;
    }
    tracing::warn!("failpoint {name}: stopping this process (SIGSTOP)");
    // SAFETY: raise(3) on the calling process.
    unsafe { libc::raise(libc::SIGSTOP) };
    true
}
