//! The safety invariants at every committed revision, not only at the end.
//!
//! A [`Recorder`] watches pools and claims and keeps every change with its
//! resourceVersion. Both kinds live in the API server's one etcd, so their
//! resourceVersions are the revisions of one log: replaying the changes in that order
//! rebuilds the exact sequence of cluster states, and [`replay`] checks
//! [`Scope::Safety`] after each one. A violation that lasted a few milliseconds (a
//! status written ahead of the ledger, a stale ledger write) is caught even though the
//! system healed it at once.
//!
//! When a watch breaks (an API server restart) the recorder re-lists; the states between
//! the break and the re-list are unknown, so no check runs in that window.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{Scope, Violation, check_pool, claim_key, limits_passed};
use crate::api::{Claim, Pool};

/// One recorded change.
// Nearly every change is a pool or a claim, so boxing them would only add an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    Pool(Pool),
    PoolGone(String),
    Claim(Claim),
    ClaimGone(String),
    /// A re-list of one kind completed: objects of that kind not in `keys` are gone, and
    /// the states since `since` were not observed.
    Relisted {
        pools: bool,
        keys: HashSet<String>,
        since: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub revision: u64,
    pub change: Change,
}

/// A violation at one revision, and what the pool and claim looked like then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub revision: u64,
    pub violation: Violation,
    /// The pool's resourceVersion, token and last writer, and the claim's resourceVersion.
    pub context: String,
}

/// What a replay found.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    pub changes: usize,
    /// Re-lists after a broken watch, each an unobserved window.
    pub gaps: usize,
    /// The unobserved windows: (last revision seen, revision of the re-list].
    pub windows: Vec<(u64, u64)>,
    /// The first time each distinct violation was seen.
    pub violations: Vec<Seen>,
}

/// Watches pools and claims in the background until dropped or [`Recorder::finish`].
pub struct Recorder {
    log: Arc<Mutex<Vec<Recorded>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Recorder {
    pub fn start(client: Client) -> Self {
        let log = Arc::new(Mutex::new(Vec::new()));
        let tasks = vec![
            tokio::spawn(record::<Pool>(Api::all(client.clone()), log.clone(), true)),
            tokio::spawn(record::<Claim>(Api::all(client), log.clone(), false)),
        ];
        Self { log, tasks }
    }

    /// Changes recorded so far.
    pub fn len(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replays what was recorded so far, and goes on recording.
    pub fn replay_now(&self) -> Replay {
        replay(self.log.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Stops watching and replays everything recorded.
    pub fn finish(self) -> Replay {
        for task in &self.tasks {
            task.abort();
        }
        let log = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        replay(log)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn revision_of<K: Resource>(object: &K) -> u64 {
    object.meta().resource_version.as_deref().and_then(|rv| rv.parse().ok()).unwrap_or_default()
}

fn key_of<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", object.meta().name.clone().unwrap_or_default()),
        None => object.meta().name.clone().unwrap_or_default(),
    }
}

trait Recordable: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static {
    fn changed(self) -> Change;
    fn gone(key: String) -> Change;
}

impl Recordable for Pool {
    fn changed(self) -> Change {
        Change::Pool(self)
    }
    fn gone(key: String) -> Change {
        Change::PoolGone(key)
    }
}

impl Recordable for Claim {
    fn changed(self) -> Change {
        Change::Claim(self)
    }
    fn gone(key: String) -> Change {
        Change::ClaimGone(key)
    }
}

async fn record<K: Recordable>(api: Api<K>, log: Arc<Mutex<Vec<Recorded>>>, pools: bool) {
    let mut events = watcher(api).boxed();
    let mut tracker = Tracker { pools, ..Tracker::default() };
    while let Some(event) = events.next().await {
        let Ok(event) = event else { continue };
        let recorded = tracker.on(event);
        log.lock().unwrap_or_else(|e| e.into_inner()).extend(recorded);
    }
}

/// Turns one kind's watcher events into recorded changes, and marks what a re-list could
/// not observe.
#[derive(Default)]
struct Tracker {
    pools: bool,
    /// The newest revision up to which this stream has seen every change.
    seen: u64,
    listing: Option<Listing>,
}

struct Listing {
    since: u64,
    keys: HashSet<String>,
    newest: u64,
}

impl Tracker {
    fn on<K: Recordable>(&mut self, event: Event<K>) -> Vec<Recorded> {
        match event {
            Event::Apply(object) => {
                self.seen = self.seen.max(revision_of(&object));
                vec![Recorded { revision: revision_of(&object), change: object.changed() }]
            }
            Event::Delete(object) => {
                self.seen = self.seen.max(revision_of(&object));
                vec![Recorded { revision: revision_of(&object), change: K::gone(key_of(&object)) }]
            }
            Event::Init => {
                // A listing that starts over (the API server went away mid-list) is still
                // blind from where the first attempt began.
                let since = self.listing.take().map_or(self.seen, |l| l.since);
                self.listing = Some(Listing { since, keys: HashSet::new(), newest: self.seen });
                Vec::new()
            }
            Event::InitApply(object) => {
                if let Some(listing) = self.listing.as_mut() {
                    listing.keys.insert(key_of(&object));
                    listing.newest = listing.newest.max(revision_of(&object));
                }
                vec![Recorded { revision: revision_of(&object), change: object.changed() }]
            }
            Event::InitDone => match self.listing.take() {
                Some(Listing { since, keys, newest }) => {
                    self.seen = newest;
                    vec![Recorded {
                        revision: newest,
                        change: Change::Relisted { pools: self.pools, keys, since },
                    }]
                }
                None => Vec::new(),
            },
        }
    }
}

fn watcher<K: Recordable>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> {
    use kube::runtime::WatchStreamExt;
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

/// Replays `log` in revision order and checks the safety invariants after every change.
pub fn replay(mut log: Vec<Recorded>) -> Replay {
    // A re-list sorts after the objects it listed at the same revision.
    log.sort_by_key(|r| (r.revision, matches!(r.change, Change::Relisted { .. })));
    let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
    let mut claims: BTreeMap<String, Claim> = BTreeMap::new();
    // Windows after a broken watch, known before the replay reaches them: (since, re-list].
    let mut initial = [true, true];
    let unobserved: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|r| match &r.change {
            Change::Relisted { pools, since, .. } => {
                (!std::mem::take(&mut initial[usize::from(*pools)])).then_some((*since, r.revision))
            }
            _ => None,
        })
        .collect();
    let mut result = Replay {
        changes: log.len(),
        gaps: unobserved.len(),
        windows: unobserved.clone(),
        ..Replay::default()
    };
    let mut seen: HashSet<Violation> = HashSet::new();

    for Recorded { revision, change } in log {
        let touched: Option<String> = match change {
            Change::Pool(pool) => {
                let name = pool.name_any();
                let passed = match pools.get(&name) {
                    Some(before) if before.uid() == pool.uid() => limits_passed(before, &pool),
                    _ => Vec::new(),
                };
                for violation in passed {
                    if seen.insert(violation.clone()) {
                        let context = describe(Some(&pool), None);
                        result.violations.push(Seen { revision, violation, context });
                    }
                }
                pools.insert(name.clone(), pool);
                Some(name)
            }
            Change::PoolGone(name) => {
                pools.remove(&name);
                Some(name)
            }
            Change::Claim(claim) => {
                let pool = claim.spec.pool_ref.clone();
                claims.insert(claim_key(&claim), claim);
                Some(pool)
            }
            Change::ClaimGone(key) => claims.remove(&key).map(|c| c.spec.pool_ref),
            Change::Relisted { pools: of_pools, keys, .. } => {
                if of_pools {
                    pools.retain(|k, _| keys.contains(k));
                } else {
                    claims.retain(|k, _| keys.contains(k));
                }
                None
            }
        };
        let Some(pool_name) = touched else { continue };
        if unobserved.iter().any(|&(from, to)| revision > from && revision <= to) {
            continue;
        }
        let of_pool: Vec<&Claim> = claims.values().filter(|c| c.spec.pool_ref == pool_name).collect();
        // Claims of a pool that is gone keep their items for it to adopt: nothing to check.
        let found = match pools.get(&pool_name) {
            Some(pool) => check_pool(pool, &of_pool, Scope::Safety).1,
            None => Vec::new(),
        };
        for violation in found {
            if seen.insert(violation.clone()) {
                let context =
                    describe(pools.get(&pool_name), violation.claim.as_ref().and_then(|c| claims.get(c)));
                result.violations.push(Seen { revision, violation, context });
            }
        }
    }
    result
}

fn describe(pool: Option<&Pool>, claim: Option<&Claim>) -> String {
    let pool = pool.map(|p| {
        let s = p.status.clone().unwrap_or_default();
        format!(
            "pool rv={} token={:?} holder={:?} entries={}",
            p.resource_version().unwrap_or_default(),
            s.fencing_token,
            s.lock_holder,
            s.ledger.len()
        )
    });
    let claim = claim.map(|c| {
        format!("claim rv={} uid={}", c.resource_version().unwrap_or_default(), c.uid().unwrap_or_default())
    });
    [pool, claim].into_iter().flatten().collect::<Vec<_>>().join("; ")
}

/// Counts of violations by kind, for summaries.
pub fn by_kind<'a>(violations: impl IntoIterator<Item = &'a Violation>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for v in violations {
        *counts.entry(format!("{:?}", v.kind)).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::super::tests::{claim, pool};
    use super::*;
    use crate::audit::Kind;

    fn at<K: Resource>(mut object: K, revision: u64) -> K {
        object.meta_mut().resource_version = Some(revision.to_string());
        object
    }

    /// A claim of 4 items shrinks to 2: its status and the pool's ledger change at
    /// revisions 12 and 13, in the order given.
    fn shrink(status_first: bool) -> Vec<Recorded> {
        let (status_at, ledger_at) = if status_first { (12, 13) } else { (13, 12) };
        vec![
            Recorded { revision: 10, change: Change::Pool(at(pool("p", 10, &[("a/x", "u", "0-3")]), 10)) },
            Recorded {
                revision: 11,
                change: Change::Claim(at(claim("a/x", "u", "p", 4, &[0, 1, 2, 3], true), 11)),
            },
            Recorded {
                revision: status_at,
                change: Change::Claim(at(claim("a/x", "u", "p", 2, &[0, 1], true), status_at)),
            },
            Recorded {
                revision: ledger_at,
                change: Change::Pool(at(pool("p", 10, &[("a/x", "u", "0-1")]), ledger_at)),
            },
            Recorded { revision: 14, change: Change::ClaimGone("a/x".into()) },
        ]
    }

    #[test]
    fn a_shrink_that_frees_the_ledger_before_the_status_is_caught() {
        let replay = replay(shrink(false));
        assert_eq!(replay.violations.len(), 1, "{:?}", replay.violations);
        assert_eq!(replay.violations[0].revision, 12);
        assert_eq!(replay.violations[0].violation.kind, Kind::StatusAheadOfLedger);
    }

    #[test]
    fn status_first_then_ledger_is_clean() {
        assert!(replay(shrink(true)).violations.is_empty());
    }

    #[test]
    fn a_listing_that_starts_over_is_blind_from_its_first_start() {
        let mut tracker = Tracker { pools: true, ..Tracker::default() };
        let pool_at = |rv| Event::InitApply(at(pool("p", 10, &[]), rv));
        tracker.on(Event::Apply(at(pool("p", 10, &[]), 40)));
        tracker.on::<Pool>(Event::Init);
        tracker.on(pool_at(55));
        tracker.on::<Pool>(Event::Init); // the API server went away mid-list
        tracker.on(pool_at(60));
        let done = tracker.on::<Pool>(Event::InitDone);
        match &done[..] {
            [Recorded { revision: 60, change: Change::Relisted { since: 40, pools: true, .. } }] => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_is_judged_inside_an_unobserved_window() {
        let log = vec![
            Recorded { revision: 10, change: Change::Pool(at(pool("p", 10, &[("a/x", "u", "0-3")]), 10)) },
            Recorded {
                revision: 11,
                change: Change::Claim(at(claim("a/x", "u", "p", 4, &[0, 1, 2, 3], true), 11)),
            },
            Recorded {
                revision: 11,
                change: Change::Relisted { pools: false, keys: HashSet::from(["a/x".into()]), since: 0 },
            },
            Recorded {
                revision: 10,
                change: Change::Relisted { pools: true, keys: HashSet::from(["p".into()]), since: 0 },
            },
            // The claim watch broke after 11; the status write at 12 was missed, the
            // re-list shows the claim as of 12 and completes at 13.
            Recorded { revision: 12, change: Change::Pool(at(pool("p", 10, &[("a/x", "u", "0-1")]), 12)) },
            Recorded {
                revision: 13,
                change: Change::Claim(at(claim("a/x", "u", "p", 2, &[0, 1], true), 13)),
            },
            Recorded {
                revision: 13,
                change: Change::Relisted { pools: false, keys: HashSet::from(["a/x".into()]), since: 11 },
            },
        ];
        let replay = replay(log);
        assert!(replay.violations.is_empty(), "{:?}", replay.violations);
        assert_eq!(replay.gaps, 1);
    }
}
