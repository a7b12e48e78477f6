//! The claim cache with the claims of each pool at hand. The reflector's store answers "which
//! claims name pool P" only by a scan of every claim; at 20,000 claims over 200 pools each
//! ledger write paid for one (through the pool watch) and each hold for another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use super::narrow::Coverage;
use crate::api::Claim;

#[derive(Clone)]
pub struct ClaimCache {
    store: Store<Claim>,
    index: Arc<Mutex<ByPool>>,
    listed: Coverage,
    own_writes: Arc<Mutex<OwnWrites>>,
}

/// This replica's status writes the cache has not shown yet: per claim, the resourceVersion
/// the write was made over, and when. Until the watch brings the claim as written, another
/// hold's ledger write may wake it: decided from the copy before the write, it was written
/// again over a version the API server no longer has (refused with 409, logged as a failed
/// reconcile, retried 200 ms later) — for 6 % of the claims of a 2,000-claim burst.
type OwnWrites = HashMap<ObjectRef<Claim>, (String, Instant)>;

/// Past this many unseen writes, those older than [`OWN_WRITE_KEPT`] are forgotten: a
/// claim deleted before its write was seen, or whose watch relisted without it.
const MOST_OWN_WRITES: usize = 4096;
const OWN_WRITE_KEPT: Duration = Duration::from_secs(60);

impl ClaimCache {
    pub fn new(store: Store<Claim>) -> Self {
        Self { store, index: Arc::default(), listed: Coverage::default(), own_writes: Arc::default() }
    }

    /// This replica wrote the status of claim `read` and the API server answered `written`.
    /// A write that changed nothing leaves the version as it was: nothing to wait for.
    pub fn wrote_status(&self, read: &Claim, written: &Claim) {
        let Some(over) = read.resource_version() else { return };
        if written.resource_version().as_ref() == Some(&over) {
            return;
        }
        let mut writes = self.own_writes();
        if writes.len() >= MOST_OWN_WRITES {
            writes.retain(|_, (_, at)| at.elapsed() < OWN_WRITE_KEPT);
        }
        writes.insert(ObjectRef::from_obj(read), (over, Instant::now()));
    }

    /// Whether `claim` (from the cache) is the version this replica last wrote its status
    /// over: the cache has not shown that write yet, and its event will bring the claim again.
    pub fn behind_own_write(&self, claim: &Claim) -> bool {
        let version = claim.resource_version();
        self.own_writes()
            .get(&ObjectRef::from_obj(claim))
            .is_some_and(|(over, _)| version.as_deref() == Some(over.as_str()))
    }

    /// What the claim watch's listings leave out: the watch tells it which pools each listing
    /// leaves out, the cache when a listing is complete.
    pub fn coverage(&self) -> &Coverage {
        &self.listed
    }

    /// Follows the claim watch; called with each event after the store has applied it.
    pub fn observe(&self, event: &watcher::Event<Claim>) {
        self.index().observe(event);
        self.listed.observe(event);
        match event {
            watcher::Event::Apply(claim) | watcher::Event::InitApply(claim) => {
                let mut writes = self.own_writes();
                let claim_ref = ObjectRef::from_obj(claim);
                if writes
                    .get(&claim_ref)
                    .is_some_and(|(over, _)| claim.resource_version().as_ref() != Some(over))
                {
                    writes.remove(&claim_ref);
                }
            }
            watcher::Event::Delete(claim) => {
                self.own_writes().remove(&ObjectRef::from_obj(claim));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    /// Whether the cache holds every claim of `pool` the server had at its last complete
    /// listing: listed, and not left out of that listing (a pool just gained was). Before,
    /// a claim of it missing from the cache says nothing about the server.
    pub fn covers(&self, pool: &str) -> bool {
        self.listed.covers(pool)
    }

    pub fn get(&self, claim: &ObjectRef<Claim>) -> Option<Arc<Claim>> {
        self.store.get(claim)
    }

    /// The cached claims that name `pool`. The index and the store are updated one after the
    /// other, so for an instant a claim may be in one only: it is left out, and its own event
    /// (or the next change of the pool) brings it back.
    pub fn of_pool(&self, pool: &str) -> Vec<Arc<Claim>> {
        let index = self.index();
        let Some(refs) = index.claims.get(pool) else { return Vec::new() };
        refs.iter().filter_map(|r| self.store.get(r)).filter(|c| c.spec.pool_ref == pool).collect()
    }

    fn index(&self) -> MutexGuard<'_, ByPool> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn own_writes(&self) -> MutexGuard<'_, OwnWrites> {
        self.own_writes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Claims by the pool they name, rebuilt on each relisting as the store is.
#[derive(Default)]
struct ByPool {
    claims: HashMap<String, HashSet<ObjectRef<Claim>>>,
    pool_of: HashMap<ObjectRef<Claim>, String>,
    relisted: Option<Box<ByPool>>,
}

impl ByPool {
    fn observe(&mut self, event: &watcher::Event<Claim>) {
        match event {
            watcher::Event::Apply(claim) => self.insert(claim),
            watcher::Event::Delete(claim) => self.remove(&ObjectRef::from_obj(claim)),
            watcher::Event::Init => self.relisted = Some(Box::default()),
            watcher::Event::InitApply(claim) => self.relisted.get_or_insert_default().insert(claim),
            watcher::Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    *self = *relisted;
                }
            }
        }
    }

    fn insert(&mut self, claim: &Claim) {
        let claim_ref = ObjectRef::from_obj(claim);
        self.remove(&claim_ref);
        self.claims.entry(claim.spec.pool_ref.clone()).or_default().insert(claim_ref.clone());
        self.pool_of.insert(claim_ref, claim.spec.pool_ref.clone());
    }

    fn remove(&mut self, claim: &ObjectRef<Claim>) {
        let Some(pool) = self.pool_of.remove(claim) else { return };
        if let Some(claims) = self.claims.get_mut(&pool) {
            claims.remove(claim);
            if claims.is_empty() {
                self.claims.remove(&pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClaimSpec;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn claim(name: &str, pool: &str) -> Claim {
        let mut claim = Claim::new(name, ClaimSpec { pool_ref: pool.into(), count: 1, items: None });
        claim.metadata.namespace = Some("ns".into());
        claim
    }

    /// A cache fed the way the watch feeds it: the store first, then the index.
    fn fed(events: &[Event<Claim>]) -> ClaimCache {
        let (store, mut writer) = reflector::store();
        let cache = ClaimCache::new(store);
        for event in events {
            writer.apply_watcher_event(event);
            cache.observe(event);
        }
        cache
    }

    fn at_version(name: &str, version: &str) -> Claim {
        let mut claim = claim(name, "p");
        claim.metadata.resource_version = Some(version.into());
        claim
    }

    #[test]
    fn a_claim_is_behind_this_replicas_write_until_the_watch_brings_it_as_written() {
        let read = at_version("a", "1");
        let cache = fed(&[Event::Apply(read.clone())]);
        assert!(!cache.behind_own_write(&read), "nothing written yet");
        // A write that changed nothing keeps the version: the cache is not behind.
        cache.wrote_status(&read, &read);
        assert!(!cache.behind_own_write(&read), "a write that changed nothing");
        cache.wrote_status(&read, &at_version("a", "2"));
        assert!(cache.behind_own_write(&read), "the copy the write was made over");
        assert!(!cache.behind_own_write(&at_version("b", "1")), "another claim");
        // The write's own event: the cache shows what was written, and the record goes.
        cache.observe(&Event::Apply(at_version("a", "2")));
        assert!(!cache.behind_own_write(&at_version("a", "2")));
        assert!(cache.own_writes().is_empty());
        // A claim deleted before its write was seen is forgotten too.
        cache.wrote_status(&at_version("a", "2"), &at_version("a", "3"));
        cache.observe(&Event::Delete(at_version("a", "3")));
        assert!(cache.own_writes().is_empty());
    }

    fn names(cache: &ClaimCache, pool: &str) -> Vec<String> {
        let mut names: Vec<String> =
            cache.of_pool(pool).iter().map(|c| c.metadata.name.clone().unwrap_or_default()).collect();
        names.sort();
        names
    }

    #[test]
    fn claims_are_found_by_their_pool_and_forgotten_when_deleted() {
        let cache = fed(&[
            Event::Apply(claim("a", "p")),
            Event::Apply(claim("b", "p")),
            Event::Apply(claim("c", "q")),
            Event::Apply(claim("a", "p")),
            Event::Delete(claim("b", "p")),
        ]);
        assert_eq!(names(&cache, "p"), ["a"]);
        assert_eq!(names(&cache, "q"), ["c"]);
        assert!(names(&cache, "r").is_empty());
    }

    #[test]
    fn a_claim_seen_again_with_another_pool_moves() {
        // Deleted and created again under its name while the watch missed the delete.
        let cache = fed(&[Event::Apply(claim("a", "p")), Event::Apply(claim("a", "q"))]);
        assert!(names(&cache, "p").is_empty());
        assert_eq!(names(&cache, "q"), ["a"]);
    }

    #[test]
    fn a_relisting_replaces_the_index_once_it_is_complete() {
        let before = [Event::Apply(claim("gone", "p")), Event::Apply(claim("kept", "p")), Event::Init];
        let listed = [Event::InitApply(claim("kept", "p")), Event::InitApply(claim("new", "q"))];
        let listing: Vec<Event<Claim>> = before.iter().chain(&listed).cloned().collect();
        // Until the listing is complete, the index answers as before it began.
        let cache = fed(&listing);
        assert_eq!(names(&cache, "p"), ["gone", "kept"]);
        assert!(names(&cache, "q").is_empty());
        let cache = fed(&[listing, vec![Event::InitDone]].concat());
        assert_eq!(names(&cache, "p"), ["kept"]);
        assert_eq!(names(&cache, "q"), ["new"]);
        assert_eq!(cache.index().pool_of.len(), 2, "the claim gone meanwhile is forgotten");
    }

    #[test]
    fn listed_once_the_first_listing_is_complete() {
        let listing = [Event::Init, Event::InitApply(claim("a", "p"))];
        assert!(!fed(&listing).covers("p"), "a claim missing now may exist on the server");
        assert!(fed(&[&listing[..], &[Event::InitDone]].concat()).covers("p"));
    }
}
