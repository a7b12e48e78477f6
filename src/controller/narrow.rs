//! The pools and claims a replica asks the API server for. With the pools divided, a replica
//! needs only the pools it serves and their claims: every ledger write of another member's
//! pool (the whole ledger, with the API server's field ownership of each entry) and every claim
//! of its pools cost this replica, and the API server, an event to send and decode for nothing.
//! Both watches leave out the pools other members serve, by field selectors (`metadata.name`
//! for pools; `spec.poolRef` for claims, which the CRD declares selectable), and start again,
//! listing anew, when that set changes. A reflector replaces its cache with each complete
//! listing, so what is left out since leaves the cache with it; [`Coverage`] tells which pools
//! the last complete listing included, so that nothing takes a pool or claim missing from a
//! cache that never listed it for one missing on the server.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::Instant;

use super::members::Members;
use super::shard;
use crate::api::Pool;

/// Pools a listing leaves out (those another member serves).
pub type LeftOut = Arc<BTreeSet<String>>;

/// The field that names the pool: of a pool, its name; of a claim, the pool it claims from.
pub const POOL_NAME: &str = "metadata.name";
pub const CLAIM_POOL: &str = "spec.poolRef";

/// At most this many pools are left out by name (a longer selector is a longer request line);
/// the others' events are still dropped by the controllers, as without a selector.
const MOST_LEFT_OUT: usize = 400;

/// How long after a change that gives this replica pools the watch leaves out it starts
/// again: a burst of member changes costs one new listing, not one each.
const SETTLE: Duration = Duration::from_millis(200);

/// How long after a change that only leaves out more (pools created, a member joined) the
/// watch starts again. What it could leave out is dropped by the controllers meanwhile;
/// replicas starting together see each other one by one, and would each list anew each time.
/// Not so for a replica's first watch in its first seconds: it listed the members before
/// those starting with it announced themselves, and would take every claim and ledger write
/// of their pools (decoded, then dropped) for this long; narrowed at once, it has received few.
const NARROW_AFTER: Duration = Duration::from_secs(5);

/// Decides which pools the watches leave out: those another live member serves.
pub struct Scope {
    members: Arc<Members>,
    /// What the pool watch's listings leave out.
    pools_listed: Coverage,
    known: Mutex<KnownPools>,
    left_out: watch::Sender<LeftOut>,
}

impl Scope {
    pub fn new(members: Arc<Members>, pools_listed: Coverage) -> (Self, watch::Receiver<LeftOut>) {
        let (left_out, changes) = watch::channel(LeftOut::default());
        (Self { members, pools_listed, known: Mutex::default(), left_out }, changes)
    }

    /// Follows the pool watch (after its cache and coverage applied `event`). Only a pool
    /// created or deleted, or a listing that changes the names known, changes what to leave
    /// out; most events are ledger writes of pools already known.
    pub fn pool_event(&self, event: &watcher::Event<Pool>) {
        if self.known().observe(event, || self.pools_listed.left_out()) {
            self.refresh();
        }
    }

    /// Computes the pools to leave out again, and this replica's share of the pools (its turns
    /// to hold them); called when the pools or the members change. Without division
    /// (`--shard=false`) or before the members are known, none left out.
    pub fn refresh(&self) {
        if !self.members.sharded() || !self.members.is_listed() {
            return;
        }
        let live = self.members.live();
        let me = self.members.identity();
        let wanted = {
            let known = self.known();
            let names = || known.names.iter().map(String::as_str);
            let served = names().filter(|pool| shard::owner(pool, &live) == Some(me)).count();
            self.members.set_share(served, known.names.len());
            shard::served_by_others(names(), &live, me, MOST_LEFT_OUT)
        };
        self.left_out.send_if_modified(|now| {
            let changed = **now != wanted;
            if changed {
                *now = Arc::new(wanted);
            }
            changed
        });
    }

    fn known(&self) -> MutexGuard<'_, KnownPools> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The names of the pools that exist, as far as the pool watch tells. It leaves out the pools
/// other members serve, so their names are kept from the listings that included them, and a
/// pool deleted while left out is known until a listing includes it again (it costs a
/// selector term, nothing else).
#[derive(Default)]
struct KnownPools {
    names: BTreeSet<String>,
    /// The names of the listing under way.
    listing: BTreeSet<String>,
}

impl KnownPools {
    /// Follows the pool watch; true when the names changed. `left_out`: what the listing an
    /// `InitDone` completes left out (asked for only then).
    fn observe(&mut self, event: &watcher::Event<Pool>, left_out: impl FnOnce() -> LeftOut) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing.clear();
                false
            }
            watcher::Event::InitApply(pool) => {
                self.listing.insert(pool.name_any());
                false
            }
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut self.listing);
                let left_out = left_out();
                let names: BTreeSet<String> = self
                    .names
                    .iter()
                    .filter(|name| left_out.contains(*name))
                    .cloned()
                    .chain(listed)
                    .collect();
                let changed = names != self.names;
                self.names = names;
                changed
            }
            watcher::Event::Apply(pool) => self.names.insert(pool.name_any()),
            watcher::Event::Delete(pool) => self.names.remove(&pool.name_any()),
        }
    }
}

/// Which pools the last complete listing of a narrowed watch included: the watch tells which
/// pools each listing leaves out as it starts it, its cache when the listing is complete.
#[derive(Clone, Default)]
pub struct Coverage(Arc<Mutex<Listings>>);

/// The pools left out of the listing under way and of the last complete one.
#[derive(Default)]
struct Listings {
    started: LeftOut,
    complete: Option<LeftOut>,
}

impl Coverage {
    /// The watch starts a listing that leaves out `pools`.
    pub fn listing_leaves_out(&self, pools: LeftOut) {
        self.listings().started = pools;
    }

    /// Follows the watch; called with each event after the cache applied it.
    pub fn observe<K>(&self, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            let mut listings = self.listings();
            listings.complete = Some(listings.started.clone());
        }
    }

    /// Whether the cache holds what the server had of `pool` at the last complete listing:
    /// listed, and not left out of that listing (a pool just gained was). Before, something
    /// of it missing from the cache says nothing about the server.
    pub fn covers(&self, pool: &str) -> bool {
        self.listings().complete.as_ref().is_some_and(|left_out| !left_out.contains(pool))
    }

    /// What the last complete listing left out.
    pub fn left_out(&self) -> LeftOut {
        self.listings().complete.clone().unwrap_or_default()
    }

    fn listings(&self) -> MutexGuard<'_, Listings> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The field selector that leaves out `pools`, each named by `field`.
fn selector(field: &str, pools: &BTreeSet<String>) -> String {
    pools.iter().map(|pool| format!("{field}!={}", escape(pool))).collect::<Vec<_>>().join(",")
}

/// A field selector value as the API server parses it (`\`, `,` and `=` escaped). Pool names
/// are DNS names and need none of it, but a selector must never be split by a name.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=")
}

/// Events from a watch of `api` that leaves out the pools `left_out` names (by `field`),
/// started again on each change of it. Each watch's pools are told to `coverage` before it
/// lists. An API server that cannot select by `field` (a Claim CRD older than this operator)
/// gets a watch of everything, for the life of the process.
pub fn narrowed<K>(
    api: Api<K>,
    field: &'static str,
    left_out: watch::Receiver<LeftOut>,
    coverage: Coverage,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    let state = Switching {
        api,
        kind: K::kind(&K::DynamicType::default()).into_owned(),
        field,
        left_out,
        coverage,
        current: None,
        pools: LeftOut::default(),
        restart_at: None,
        first_started: None,
        following: true,
        unselectable: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        // The first watch starts at the first poll, leaving out what is known to leave out then.
        let mut current = match s.current.take() {
            Some(current) => current,
            None => {
                let wanted = s.left_out.borrow_and_update().clone();
                let first = s.start(wanted);
                s.first_started = Some(Instant::now());
                first
            }
        };
        loop {
            let restart_at = s.restart_at;
            tokio::select! {
                changed = s.left_out.changed(), if s.following => {
                    if changed.is_err() {
                        s.following = false;
                        continue;
                    }
                    let starting = s.first_started.is_some_and(|at| at.elapsed() < NARROW_AFTER);
                    let wait =
                        restart_after(&s.pools, &s.left_out.borrow(), starting).filter(|_| !s.unselectable);
                    s.restart_at = wait.map(|wait| {
                        let at = Instant::now() + wait;
                        restart_at.map_or(at, |earlier| earlier.min(at))
                    });
                }
                () = sleep_until(restart_at) => {
                    s.restart_at = None;
                    let wanted = s.left_out.borrow_and_update().clone();
                    if wanted != s.pools {
                        current = s.start(wanted);
                    }
                }
                event = current.next() => {
                    let event = event?;
                    if let Err(e) = &event
                        && !s.pools.is_empty()
                        && refuses_selector(e)
                    {
                        let kind = s.kind.to_lowercase();
                        tracing::warn!(error = %e, field = s.field, "the API server cannot select {kind}s by pool (is the CRD older than this operator?); watching every {kind}");
                        s.unselectable = true;
                        s.restart_at = None;
                        current = s.start(LeftOut::default());
                        continue;
                    }
                    s.current = Some(current);
                    return Some((event, s));
                }
            }
        }
    })
}

type Events<K> = Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

/// The watch under way and what decides when it starts again.
struct Switching<K> {
    api: Api<K>,
    kind: String,
    field: &'static str,
    left_out: watch::Receiver<LeftOut>,
    coverage: Coverage,
    current: Option<Events<K>>,
    /// The pools the current watch leaves out.
    pools: LeftOut,
    /// When the watch starts again, to leave out what `left_out` says by then.
    restart_at: Option<Instant>,
    /// When the first watch started, while it is the one under way.
    first_started: Option<Instant>,
    following: bool,
    unselectable: bool,
}

impl<K> Switching<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    /// A watch that leaves out `pools`, told to the coverage before it lists.
    fn start(&mut self, pools: LeftOut) -> Events<K> {
        let config = watcher::Config::default();
        let config = if pools.is_empty() { config } else { config.fields(&selector(self.field, &pools)) };
        tracing::info!(kind = %self.kind, pools_left_out = pools.len(), "watch starting");
        self.first_started = None;
        self.coverage.listing_leaves_out(pools.clone());
        self.pools = pools;
        Box::pin(watcher(self.api.clone(), config))
    }
}

/// Sleeps until `at`; never returns without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long to wait before the watch that leaves out `watched` starts again to leave out
/// `wanted` instead; `None` when they are the same. `starting`: it is the replica's first
/// watch, started moments ago.
fn restart_after(watched: &BTreeSet<String>, wanted: &BTreeSet<String>, starting: bool) -> Option<Duration> {
    if watched == wanted {
        None
    } else if starting || watched.difference(wanted).next().is_some() {
        Some(SETTLE)
    } else {
        Some(NARROW_AFTER)
    }
}

/// The API server's answer to a field selector on a field the CRD does not declare selectable.
fn refuses_selector(error: &watcher::Error) -> bool {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status,
        watcher::Error::WatchError(status) => status,
        _ => return false,
    };
    status.code == 400 && status.message.contains("field label not supported")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_leaves_out_each_pool_by_name() {
        let pools: BTreeSet<String> = ["b", "a"].map(String::from).into();
        assert_eq!(selector(CLAIM_POOL, &pools), "spec.poolRef!=a,spec.poolRef!=b");
        assert_eq!(selector(POOL_NAME, &pools), "metadata.name!=a,metadata.name!=b");
        assert_eq!(selector(CLAIM_POOL, &BTreeSet::new()), "");
        let odd: BTreeSet<String> = ["x,y=z\\"].map(String::from).into();
        assert_eq!(selector(CLAIM_POOL, &odd), "spec.poolRef!=x\\,y\\=z\\\\");
    }

    fn pool(name: &str) -> Pool {
        Pool::new(name, crate::api::PoolSpec::of_range(0, 1))
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_replica_takes_hold_turns_in_proportion_to_the_pools_it_serves() {
        use crate::controller::policy::HOLDS_AT_ONCE;
        use crate::controller::turns::holds_at_once;
        let pools: Vec<String> = (0..200).map(|i| format!("pool-{i}")).collect();
        let turns_with = |others: &[&str]| {
            let members = Arc::new(Members::listed_with("me", others));
            let (scope, _left_out) = Scope::new(members.clone(), Coverage::default());
            assert_eq!(members.holds_at_once(), HOLDS_AT_ONCE, "no pools known yet");
            for name in &pools {
                scope.pool_event(&watcher::Event::Apply(pool(name)));
            }
            let live = members.live();
            let served = pools.iter().filter(|p| shard::owner(p, &live) == Some("me")).count();
            (members.holds_at_once(), served)
        };
        let (turns, served) = turns_with(&["a", "b"]);
        assert!((40..100).contains(&served), "{served} of 200");
        assert_eq!(turns, holds_at_once(served, pools.len()));
        assert!(turns < HOLDS_AT_ONCE / 2, "{turns} turns for {served} of 200 pools");
        assert_eq!(turns_with(&[]), (HOLDS_AT_ONCE, pools.len()), "alone: every turn");
    }

    #[test]
    fn pools_left_out_stay_known_and_others_missing_from_a_listing_are_forgotten() {
        let mut known = KnownPools::default();
        let none = BTreeSet::new();
        let given = |set: &BTreeSet<String>| {
            let set = LeftOut::new(set.clone());
            move || set
        };
        let listing = |known: &mut KnownPools, names: &[&str], left_out: &BTreeSet<String>| {
            known.observe(&watcher::Event::Init, given(left_out));
            for name in names {
                assert!(!known.observe(&watcher::Event::InitApply(pool(name)), given(left_out)));
            }
            known.observe(&watcher::Event::InitDone, given(left_out))
        };
        assert!(listing(&mut known, &["a", "b", "c"], &none));
        assert!(!known.observe(&watcher::Event::Apply(pool("a")), given(&none)), "a ledger write");
        assert!(known.observe(&watcher::Event::Apply(pool("d")), given(&none)), "a pool created");
        // A listing that leaves out "b" and "c": they are still known; "d", not left out and
        // not listed, was deleted meanwhile.
        assert!(listing(&mut known, &["a"], &set(&["b", "c"])));
        assert_eq!(known.names, set(&["a", "b", "c"]));
        assert!(known.observe(&watcher::Event::Delete(pool("a")), given(&none)));
        assert!(!listing(&mut known, &[], &set(&["b", "c"])), "nothing new");
        // "c" gained and listed again; "b", gone while left out, is forgotten once included.
        assert!(listing(&mut known, &["c"], &none));
        assert_eq!(known.names, set(&["c"]));
    }

    #[test]
    fn a_pool_left_out_is_covered_only_once_a_listing_that_includes_it_is_complete() {
        let coverage = Coverage::default();
        coverage.listing_leaves_out(LeftOut::new(set(&["q"])));
        assert!(!coverage.covers("p"), "nothing listed yet");
        assert!(coverage.left_out().is_empty());
        coverage.observe(&watcher::Event::<Pool>::InitDone);
        assert!(coverage.covers("p"));
        assert!(!coverage.covers("q"), "left out");
        assert_eq!(*coverage.left_out(), set(&["q"]));
        // The pool is gained: a new listing starts, and until it is complete "q" is not covered.
        coverage.listing_leaves_out(LeftOut::default());
        coverage.observe(&watcher::Event::<Pool>::Init);
        coverage.observe(&watcher::Event::InitApply(pool("q")));
        assert!(!coverage.covers("q"));
        coverage.observe(&watcher::Event::<Pool>::InitDone);
        assert!(coverage.covers("q") && coverage.covers("p"));
    }

    #[test]
    fn a_pool_gained_restarts_the_watch_soon_and_more_left_out_later() {
        for starting in [false, true] {
            assert_eq!(restart_after(&set(&["a", "b"]), &set(&["a", "b"]), starting), None);
            // "b" is no longer left out: its claims are needed.
            assert_eq!(restart_after(&set(&["a", "b"]), &set(&["a"]), starting), Some(SETTLE));
            assert_eq!(restart_after(&set(&["a", "b"]), &set(&["a", "c"]), starting), Some(SETTLE));
        }
        // Only more to leave out: the controller drops those claims meanwhile.
        assert_eq!(restart_after(&set(&["a"]), &set(&["a", "c"]), false), Some(NARROW_AFTER));
        assert_eq!(restart_after(&set(&[]), &set(&["a"]), false), Some(NARROW_AFTER));
        // A replica's first watch, moments after it listed the members, before the replicas
        // starting with it announced themselves: it would take their pools' claims.
        assert_eq!(restart_after(&set(&[]), &set(&["a"]), true), Some(SETTLE));
    }

    #[test]
    fn only_a_field_the_crd_does_not_select_counts_as_refused() {
        let status = |code: u16, message: &str| -> Box<kube::core::Status> {
            Box::new(
                serde_json::from_value(
                    serde_json::json!({ "code": code, "message": message, "reason": "BadRequest" }),
                )
                .expect("status"),
            )
        };
        let refused = status(400, "field label not supported: spec.poolRef");
        assert!(refuses_selector(&watcher::Error::InitialListFailed(kube::Error::Api(refused.clone()))));
        assert!(refuses_selector(&watcher::Error::WatchError(refused)));
        assert!(!refuses_selector(&watcher::Error::InitialListFailed(kube::Error::Api(status(
            500,
            "etcdserver: request timed out"
        )))));
        assert!(!refuses_selector(&watcher::Error::NoResourceVersion));
    }
}
