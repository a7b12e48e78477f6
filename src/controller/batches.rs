//! What a replica knows of each pool's holds, shared by the claim reconciles that ask for a
//! hold and the pool's hold task (`hold.rs`) that runs them: the wake-up, the pool as the last
//! hold read or wrote it, each claim's outcome in the last plan, and why holds fail.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::decide::Failure;
use super::plan::{Outcome, Plan};
use crate::api::Pool;

/// Per pool on this replica: a task runs the pool's holds one after another, woken by the
/// claims that need one. A claim's reconcile asks and goes on; the hold's ledger write wakes
/// the claims it served (through the pool watch), and they show their items.
#[derive(Default)]
pub struct Batches {
    pools: Mutex<HashMap<String, Arc<PoolBatch>>>,
}

#[derive(Default)]
pub struct PoolBatch {
    wake: tokio::sync::Notify,
    state: Mutex<BatchState>,
}

#[derive(Default)]
pub struct BatchState {
    /// The pool as this replica last read or wrote it under the lock: newer than the cache
    /// until the watch delivers it.
    pub written: Option<Arc<Pool>>,
    /// Each claim's outcome in the last plan, and the pool version it was planned on.
    outcomes: Arc<BTreeMap<String, Outcome>>,
    planned_at: u64,
    /// Why the last hold failed, while it keeps failing.
    pub failure: Option<Failure>,
}

impl Batches {
    /// Wakes the task of pool `name`; `start` starts it first when the pool has none.
    pub fn request(&self, name: &str, start: impl FnOnce(Arc<PoolBatch>)) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let batch = pools.entry(name.to_string()).or_insert_with(|| {
            let batch = Arc::new(PoolBatch::default());
            start(batch.clone());
            batch
        });
        batch.wake.notify_one();
    }

    /// The task of pool `name` ended (the pool is gone).
    pub fn ended(&self, name: &str) {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// Forgets the copy of pool `name` (of `uid`) the last hold wrote: the pool is gone.
    pub fn forget(&self, name: &str, uid: Option<&str>) {
        if let Some(batch) = self.get(name) {
            let mut state = batch.state();
            if state.written.as_ref().is_some_and(|p| p.metadata.uid.as_deref() == uid) {
                state.written = None;
            }
        }
    }

    fn get(&self, name: &str) -> Option<Arc<PoolBatch>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The pool as this replica last read or wrote it under its lock.
    pub fn written(&self, name: &str) -> Option<Arc<Pool>> {
        self.get(name)?.state().written.clone()
    }

    /// Claim `key`'s outcome in the last plan of pool `name`, if that plan was made on
    /// version `at` of the pool or a newer one.
    pub fn outcome(&self, name: &str, key: &str, at: u64) -> Option<Outcome> {
        let batch = self.get(name)?;
        let state = batch.state();
        (state.planned_at >= at).then(|| state.outcomes.get(key).cloned()).flatten()
    }

    pub fn failure(&self, name: &str) -> Option<Failure> {
        self.get(name)?.state().failure.clone()
    }
}

impl PoolBatch {
    pub fn state(&self) -> MutexGuard<'_, BatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a claim asks for a hold.
    pub async fn requested(&self) {
        self.wake.notified().await
    }

    /// Records why the last hold failed; returns the claims of the last plan when the lock
    /// just became unavailable (they show that, and learn it only from a reconcile).
    pub fn failed(&self, failure: Failure) -> Vec<String> {
        let mut state = self.state();
        let news = failure.lock_unavailable && !state.failure.as_ref().is_some_and(|f| f.lock_unavailable);
        state.failure = Some(failure);
        if news { state.outcomes.keys().cloned().collect() } else { Vec::new() }
    }

    /// Records the outcomes of a plan made on `pool`; returns the claims it newly keeps
    /// waiting (refused, behind another claim, …): no ledger write wakes them, and they
    /// learn it only from a reconcile.
    pub fn planned(&self, pool: &Pool, planned: &Plan) -> Vec<String> {
        let mut state = self.state();
        let before = std::mem::replace(&mut state.outcomes, Arc::new(planned.outcomes.clone()));
        state.planned_at = pool.version();
        news_to_tell(&before, &state.outcomes)
    }
}

/// The claims that `now` keeps waiting for another reason than `before` did. Those it gives
/// or takes items from are woken by its ledger write (through the pool watch), and those it
/// leaves as they are need nothing.
fn news_to_tell(before: &BTreeMap<String, Outcome>, now: &BTreeMap<String, Outcome>) -> Vec<String> {
    now.iter()
        .filter(|(key, outcome)| outcome.keeps_waiting() && before.get(*key) != Some(*outcome))
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_outcomes_that_no_ledger_write_shows_are_told() {
        use crate::ledger::{AllocError, Change};
        let refused = || Outcome::Refused(AllocError::TooSmall { count: 2, capacity: 1 });
        let given = || Outcome::Changed(Change { added: vec![0], removed: Vec::new() });
        let before: BTreeMap<String, Outcome> = [
            ("ns/same".to_string(), refused()),
            ("ns/moved".to_string(), Outcome::Unchanged),
            ("ns/was-given".to_string(), given()),
        ]
        .into();
        let now: BTreeMap<String, Outcome> = [
            ("ns/same".to_string(), refused()),
            ("ns/moved".to_string(), refused()),
            ("ns/new".to_string(), Outcome::BehindLongWait),
            ("ns/given".to_string(), given()),
            // Bound by the last plan: nothing to tell (it would cost every claim a reconcile).
            ("ns/was-given".to_string(), Outcome::Unchanged),
            ("ns/first-seen-bound".to_string(), Outcome::Unchanged),
        ]
        .into();
        assert_eq!(news_to_tell(&before, &now), ["ns/moved", "ns/new"]);
        // The same plan again tells nobody: a told claim that asks for a hold is not woken
        // again by it.
        assert!(news_to_tell(&now, &now).is_empty());
    }
}
