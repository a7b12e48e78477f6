//! Lock epochs: a fencing token compares only with tokens of the same lock service, so the
//! first write under another service (a backend switch, a re-created Lease, a replaced lock
//! etcd) opens a new epoch, after the old one was quiet for a TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The epoch a write under a lock of `service` carries, given what the status stores.
#[derive(Debug, PartialEq, Eq)]
pub struct Epoch {
    pub number: i64,
    /// The lock service changed: this write opens a new epoch.
    pub advance: bool,
}

/// `requested`: an administrator asked for a new epoch (the stored token is out of reach).
pub fn next_epoch(
    stored: Option<i64>,
    stored_service: Option<&str>,
    service: &str,
    requested: bool,
) -> Epoch {
    match (stored, stored_service) {
        (Some(n), Some(s)) if s == service && !requested => Epoch { number: n, advance: false },
        (Some(n), _) => Epoch { number: n + 1, advance: true },
        // A pool never written, or written before epochs existed: the first epoch.
        (None, _) => Epoch { number: 1, advance: false },
    }
}

/// Whether the lock service went back in time: the pool stores a token of this service
/// above the lock just taken (`held`), and above every token the service can have issued
/// (`issued_up_to`, read after `held` was). A replica whose lock was lost while another took
/// it sees a higher stored token too, but one the service did issue: that is a fence, never
/// a reason for a new epoch.
pub fn went_back(stored: Option<i64>, held: u64, issued_up_to: Option<u64>) -> bool {
    match (stored, issued_up_to) {
        (Some(stored), Some(issued)) => stored > held as i64 && stored > issued as i64,
        _ => false,
    }
}

/// Per pool: the resourceVersion last seen under the lock and since when, by the local
/// clock (like a Lease's expiry), to tell how long the old epoch has been quiet.
#[derive(Default)]
pub struct Quiet(Mutex<HashMap<String, (String, Instant)>>);

impl Quiet {
    /// How long this replica has seen pool `name` at `resource_version` (zero the first time).
    pub fn unchanged_for(&self, name: &str, resource_version: &str) -> Duration {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry =
            seen.entry(name.to_string()).or_insert_with(|| (resource_version.to_string(), Instant::now()));
        if entry.0 != resource_version {
            *entry = (resource_version.to_string(), Instant::now());
        }
        entry.1.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_back_in_time_is_told_from_a_fence_by_what_it_has_issued() {
        // Restored from a backup: the stored 20_103 was never issued by the etcd as it is now.
        assert!(went_back(Some(20_103), 150, Some(160)));
        // Another replica took the lock after this one lost it: its token was issued.
        assert!(!went_back(Some(170), 150, Some(180)));
        // Nothing stored above the lock, or no way to tell (a Lease): no new epoch.
        assert!(!went_back(Some(100), 150, Some(160)));
        assert!(!went_back(None, 150, Some(160)));
        assert!(!went_back(Some(20_103), 150, None));
    }

    #[test]
    fn the_epoch_advances_exactly_when_the_lock_service_changes() {
        assert_eq!(next_epoch(None, None, "etcd:a", false), Epoch { number: 1, advance: false });
        assert_eq!(next_epoch(Some(3), Some("etcd:a"), "etcd:a", false), Epoch { number: 3, advance: false });
        assert_eq!(next_epoch(Some(3), Some("etcd:a"), "lease:u", false), Epoch { number: 4, advance: true });
        assert_eq!(next_epoch(Some(3), None, "etcd:a", false), Epoch { number: 4, advance: true });
        // Asked for: a new epoch under the same service.
        assert_eq!(next_epoch(Some(3), Some("etcd:a"), "etcd:a", true), Epoch { number: 4, advance: true });
    }

    #[test]
    fn quiet_time_restarts_when_the_version_changes() {
        let quiet = Quiet::default();
        assert!(quiet.unchanged_for("p", "1") < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(quiet.unchanged_for("p", "1") >= Duration::from_millis(20));
        assert!(quiet.unchanged_for("p", "2") < Duration::from_millis(20));
    }
}
