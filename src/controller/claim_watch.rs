//! The claims a replica asks the API server for. With the pools divided, a replica needs only
//! the claims of the pools it serves: every other claim cost it (and the API server) an event
//! to send and decode for nothing, twice per bound claim. The watch leaves out the pools other
//! members serve by a field selector on `spec.poolRef` (the CRD declares the field selectable),
//! and starts again, listing anew, when that set changes; the reflector replaces its cache with
//! each complete listing, so the claims of pools left out since leave the cache with it.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::time::Instant;

use super::claim_cache::{ClaimCache, LeftOut};
use super::members::Members;
use super::shard;
use crate::api::{Claim, Pool};

/// At most this many pools are left out by name (a longer selector is a longer request line);
/// the claims of the others are still dropped by the controller, as without a selector.
const MOST_LEFT_OUT: usize = 400;

/// How long after a change that gives this replica pools whose claims the watch leaves out it
/// starts again: a burst of member changes costs one new listing, not one each.
const SETTLE: Duration = Duration::from_millis(200);

/// How long after a change that only leaves out more (pools created, a member joined) the
/// watch starts again. The claims it could leave out are dropped by the controller meanwhile;
/// replicas starting together see each other one by one, and would each list anew each time.
/// Not so for a replica's first watch in its first seconds: it listed the members before
/// those starting with it announced themselves, and would take every claim of their pools
/// (decoded, then dropped) for this long; narrowed at once, it has received few of them.
const NARROW_AFTER: Duration = Duration::from_secs(5);

/// Decides which pools the claim watch leaves out: those another live member serves.
pub struct Scope {
    members: Arc<Members>,
    pools: Store<Pool>,
    /// How many pools the last computation saw.
    pools_counted: AtomicUsize,
    left_out: watch::Sender<LeftOut>,
}

impl Scope {
    pub fn new(members: Arc<Members>, pools: Store<Pool>) -> (Self, watch::Receiver<LeftOut>) {
        let (left_out, changes) = watch::channel(LeftOut::default());
        (Self { members, pools, pools_counted: AtomicUsize::new(0), left_out }, changes)
    }

    /// Follows the pool watch (after its cache applied `event`). Only a pool created or
    /// deleted, or a new listing, changes what to leave out; most events are ledger writes of
    /// pools already counted, and are not worth a computation over every pool.
    pub fn pool_event(&self, event: &watcher::Event<Pool>) {
        match event {
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            watcher::Event::Apply(_) if self.pools.len() == self.pools_counted.load(Ordering::Acquire) => {}
            _ => self.refresh(),
        }
    }

    /// Computes the pools to leave out again; called when the pools or the members change.
    /// Without division (`--shard=false`) or before the members are known, none.
    pub fn refresh(&self) {
        if !self.members.sharded() || !self.members.is_listed() {
            return;
        }
        let pools = self.pools.state();
        self.pools_counted.store(pools.len(), Ordering::Release);
        let names = pools.iter().map(|p| p.metadata.name.as_deref().unwrap_or_default());
        let wanted =
            shard::served_by_others(names, &self.members.live(), self.members.identity(), MOST_LEFT_OUT);
        self.left_out.send_if_modified(|now| {
            let changed = **now != wanted;
            if changed {
                *now = Arc::new(wanted);
            }
            changed
        });
    }
}

/// The field selector that leaves out the claims of `pools`.
fn selector(pools: &BTreeSet<String>) -> String {
    pools.iter().map(|pool| format!("spec.poolRef!={}", escape(pool))).collect::<Vec<_>>().join(",")
}

/// A field selector value as the API server parses it (`\`, `,` and `=` escaped). Pool names
/// are DNS names and need none of it, but a selector must never be split by a name.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=")
}

/// Claim events from a watch that leaves out the pools `left_out` names, started again on
/// each change of it. Each watch's pools are told to `cache` before it lists, so the cache
/// knows which pools its listing covers. An API server that cannot select claims by pool (a
/// CRD older than this operator) gets a watch of every claim, for the life of the process.
pub fn claims(
    api: Api<Claim>,
    left_out: watch::Receiver<LeftOut>,
    cache: ClaimCache,
) -> impl Stream<Item = Result<watcher::Event<Claim>, watcher::Error>> + Send {
    let state = Switching {
        api,
        left_out,
        cache,
        current: None,
        pools: LeftOut::default(),
        restart_at: None,
        first_started: None,
        following: true,
        unselectable: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        // The first watch starts at the first poll: the pools to leave out are known by then.
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
                        tracing::warn!(error = %e, "the API server cannot select claims by pool (is the Claim CRD older than this operator?); watching every claim");
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

type Events = Pin<Box<dyn Stream<Item = Result<watcher::Event<Claim>, watcher::Error>> + Send>>;

/// The claim watch under way and what decides when it starts again.
struct Switching {
    api: Api<Claim>,
    left_out: watch::Receiver<LeftOut>,
    cache: ClaimCache,
    current: Option<Events>,
    /// The pools the current watch leaves out.
    pools: LeftOut,
    /// When the watch starts again, to leave out what `left_out` says by then.
    restart_at: Option<Instant>,
    /// When the first watch started, while it is the one under way.
    first_started: Option<Instant>,
    following: bool,
    unselectable: bool,
}

impl Switching {
    /// A watch that leaves out `pools`, told to the cache before it lists.
    fn start(&mut self, pools: LeftOut) -> Events {
        let config = watcher::Config::default();
        let config = if pools.is_empty() { config } else { config.fields(&selector(&pools)) };
        tracing::info!(pools_left_out = pools.len(), "claim watch starting");
        self.first_started = None;
        self.cache.listing_leaves_out(pools.clone());
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
        assert_eq!(selector(&pools), "spec.poolRef!=a,spec.poolRef!=b");
        assert_eq!(selector(&BTreeSet::new()), "");
        let odd: BTreeSet<String> = ["x,y=z\\"].map(String::from).into();
        assert_eq!(selector(&odd), "spec.poolRef!=x\\,y\\=z\\\\");
    }

    #[test]
    fn a_pool_gained_restarts_the_watch_soon_and_more_left_out_later() {
        let set = |names: &[&str]| -> BTreeSet<String> { names.iter().map(|n| n.to_string()).collect() };
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
