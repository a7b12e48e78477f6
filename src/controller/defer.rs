//! Which claim writes this replica leaves, for a moment, to the replica that last wrote the
//! claim's pool: every replica sees every claim, and three replicas racing for the same write
//! cost the API server three requests, two of them refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::policy::{DEFER, DEFER_RECHECK};

/// The claim writes that one replica makes while the others wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deferred {
    /// Showing the items of a hold in the claim's status.
    Status,
}

/// Per claim and write: since when this replica leaves it to another.
#[derive(Default)]
pub struct Deferrals(Mutex<HashMap<(String, Deferred), Instant>>);

impl Deferrals {
    /// `Some(wait)` while this replica (`identity`) leaves `write` of claim `key` to
    /// `writer`, the replica that last wrote the pool's ledger. After that it writes itself:
    /// that replica may be gone.
    pub fn defer(
        &self,
        key: &str,
        write: Deferred,
        writer: Option<&str>,
        identity: &str,
    ) -> Option<Duration> {
        if writer.is_none_or(|w| w == identity) {
            return None;
        }
        let mut deferred = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let since = deferred.entry((key.to_string(), write)).or_insert_with(Instant::now);
        // Looked at again soon: while the replicas' caches disagree on who wrote last, each
        // may take another for the writer, and that passes as soon as the watch delivers.
        DEFER.checked_sub(since.elapsed()).filter(|wait| !wait.is_zero()).map(|wait| wait.min(DEFER_RECHECK))
    }

    /// `write` of claim `key` is done (by whichever replica): nothing to wait for.
    pub fn done(&self, key: &str, write: Deferred) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&(key.to_string(), write));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_writer_is_waited_for_and_only_for_a_while() {
        let deferrals = Deferrals::default();
        assert_eq!(deferrals.defer("ns/c", Deferred::Status, None, "me"), None);
        assert_eq!(deferrals.defer("ns/c", Deferred::Status, Some("me"), "me"), None);
        let wait = deferrals.defer("ns/c", Deferred::Status, Some("other"), "me").expect("waits");
        assert!(wait <= DEFER_RECHECK);
        deferrals.done("ns/c", Deferred::Status);
        assert!(deferrals.defer("ns/c", Deferred::Status, Some("other"), "me").is_some(), "a new wait");
    }
}
