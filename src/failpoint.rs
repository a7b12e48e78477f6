//! A failpoint for demos and tests, set by an environment variable, like etcd's gofail:
//! `LOCKGUARD_FAILPOINT=stop-before-ledger-write` makes the first ledger write of this
//! process stop the whole process (SIGSTOP) while it holds the pool's lock, so a demo can
//! thaw it (SIGCONT) after the lock's TTL and show its stale write rejected.

use std::sync::atomic::{AtomicBool, Ordering};

pub const ENV: &str = "LOCKGUARD_FAILPOINT";
pub const STOP_BEFORE_LEDGER_WRITE: &str = "stop-before-ledger-write";

static FIRED: AtomicBool = AtomicBool::new(false);

/// Called under a pool's lock just before its ledger is written.
pub fn before_ledger_write(pool: &str, token: u64) {
    if std::env::var(ENV).as_deref() != Ok(STOP_BEFORE_LEDGER_WRITE) || FIRED.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::warn!(
        pool,
        token,
        "failpoint {STOP_BEFORE_LEDGER_WRITE}: stopping this process (SIGSTOP) while it holds the lock"
    );
    // SAFETY: raise(3) on the calling process.
    unsafe { libc::raise(libc::SIGSTOP) };
    tracing::warn!(pool, token, "failpoint: resumed (SIGCONT); writing the ledger with the old token");
}
