//! When to look again: the named durations of both controllers and the one retry policy
//! they share, so a delay means the same everywhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::error::Error;

/// A bound claim is checked against its pool's ledger at least this often, so nothing
/// depends on one missed event.
pub const CLAIM_RESYNC: Duration = Duration::from_secs(300);
/// A pool is checked for entries of vanished claims at least this often.
pub const POOL_RESYNC: Duration = Duration::from_secs(60);
/// A pool whose deletion waits for its claims looks again this often.
pub const DELETION_RECHECK: Duration = Duration::from_secs(15);
/// A claim being released, or whose items wait for adoption, looks again after this long
/// at the latest (the pool's ledger write wakes it sooner).
pub const PENDING_RECHECK: Duration = Duration::from_secs(2);
/// A claim the pool's task plans for looks again after this long at the latest: the hold's
/// ledger write wakes it if it gives the claim items, the task itself if it decides
/// anything else about it (refused, waiting, lock unavailable), so this is only a net.
pub const PLANNED_RECHECK: Duration = Duration::from_secs(10);
/// A claim whose pool is missing or being deleted looks again this often.
pub const POOL_MISSING_RECHECK: Duration = Duration::from_secs(60);
/// A claim whose pool is not set up yet (its finalizer) looks again this soon.
pub const POOL_NOT_READY_RECHECK: Duration = Duration::from_secs(5);
/// A claim whose pool's lock is unavailable looks again this soon.
pub const LOCK_UNAVAILABLE_RECHECK: Duration = Duration::from_secs(5);
/// A claim waiting for free items looks again this often (a freeing write wakes it sooner).
pub const EXHAUSTED_RECHECK: Duration = Duration::from_secs(30);
/// A replica waiting for a pool's lock looks this often whether its caches show the work
/// done by the holder, so that it can stop waiting.
pub const LOCK_WAIT_RECHECK: Duration = Duration::from_millis(50);
/// How long a replica leaves a claim's writes to the replica that last wrote its pool's
/// ledger, and how often it looks meanwhile.
pub const DEFER: Duration = Duration::from_secs(3);
pub const DEFER_RECHECK: Duration = Duration::from_millis(500);
/// A retry that only needs a fresh read: another replica holds the lock or wrote the object,
/// or the cache was behind.
pub const FRESH_READ: Duration = Duration::from_millis(200);
/// A claim looks again this soon after a write of its own changed what it decides next.
pub const AGAIN_SOON: Duration = Duration::from_millis(100);
/// Pools a replica holds at once; the others wait their turn (their claims are served by
/// the next hold all the same).
pub const HOLDS_AT_ONCE: usize = 16;
/// A pool's reconcile waits for a listing of the claim cache that includes the pool's claims,
/// and a claim's for one of the pool cache that includes its pool: the first one (20,000
/// claims: about 2 s), or the one a pool just gained starts.
pub const NOT_LISTED_RECHECK: Duration = Duration::from_millis(250);
/// A claim or pool another replica serves is looked at again after this, in case a change of
/// members that gives it to this replica went unnoticed (a change wakes them at once).
pub const NOT_SERVED_RECHECK: Duration = Duration::from_secs(30);
/// The longest a connection to a lock service may take before the reconcile gives up.
pub const LOCK_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest backoff after repeated failures.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Exponential backoff with a cap: 0.5 s, 1 s, 2 s, … up to `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (Duration::from_millis(500) * 2u32.pow(exp)).min(cap)
}

/// How long to wait after `error`, the `failures`th in a row: soon when a fresh read is all
/// it takes, after the epoch's wait when a new lock epoch must wait, else backing off.
pub fn retry_delay(error: &Error, failures: u32) -> Duration {
    match error {
        Error::Fenced { .. } | Error::Changed { .. } | Error::BackendChanged { .. } => FRESH_READ,
        Error::EpochWait { wait, .. } => *wait + Duration::from_millis(100),
        _ => backoff(failures, BACKOFF_CAP),
    }
}

/// Failures in a row per object, for the backoff.
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts a failure of `key`; returns how many in a row.
    pub fn failed(&self, key: &str) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }

    pub fn succeeded(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap), Duration::from_millis(500));
        assert_eq!(backoff(2, cap), Duration::from_secs(1));
        assert_eq!(backoff(4, cap), Duration::from_secs(4));
        assert_eq!(backoff(40, cap), cap);
    }

    #[test]
    fn a_fresh_read_is_retried_soon_and_other_failures_back_off() {
        let fenced = Error::Fenced { pool: "p".into(), token: 3, by: "fencing-token rule" };
        assert_eq!(retry_delay(&fenced, 9), FRESH_READ);
        let wait = Error::EpochWait { pool: "p".into(), wait: Duration::from_secs(2) };
        assert_eq!(retry_delay(&wait, 1), Duration::from_millis(2100));
        let other = Error::Invariant("x".into());
        assert_eq!(retry_delay(&other, 1), Duration::from_millis(500));
        assert_eq!(retry_delay(&other, 20), BACKOFF_CAP);
    }

    #[test]
    fn failures_count_in_a_row_until_a_success() {
        let failures = Failures::default();
        assert_eq!(failures.failed("a"), 1);
        assert_eq!(failures.failed("a"), 2);
        failures.succeeded("a");
        assert_eq!(failures.failed("a"), 1);
    }
}
