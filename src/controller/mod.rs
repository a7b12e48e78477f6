//! The operator: a Claim controller and a Pool controller, active-active on every replica.
//!
//! Reconciling a claim: take the pool's lock (backend from the pool) → read the ledger →
//! allocate or free (a pure function, `crate::ledger`) → write the ledger with the token and
//! a resourceVersion precondition → write the claim's status → release.

mod batch;
mod claim;
mod context;
mod decide;
mod gauges;
mod plan;
mod pool;
mod pool_ledger;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::ResourceExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

pub use context::{Context, Locks};

use crate::metrics::Metrics;

use crate::api::{Claim, Pool};
use crate::ledger::LedgerError;
use lockguard_lock::LockError;

/// The finalizer that returns a claim's items before the claim goes away.
pub const FINALIZER: &str = "lockguard.dev/release-items";
/// The finalizer that keeps a pool while claims hold its items.
pub const POOL_FINALIZER: &str = "lockguard.dev/pool-in-use";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lock: {0}")]
    Lock(#[from] LockError),
    #[error("pool {pool}: corrupt ledger: {source}")]
    Ledger { pool: String, source: LedgerError },
    #[error(
        "pool {pool}: ledger write with token {token} rejected by its {by}: another holder wrote the ledger, this one lost its lock"
    )]
    Fenced { pool: String, token: u64, by: &'static str },
    #[error("could not {action} the finalizer {FINALIZER}: {source}")]
    Finalizer { action: &'static str, source: kube::Error },
    #[error("{claim} changed since it was read; retrying from a fresh read")]
    Changed { claim: String },
    #[error("invariant: {0}")]
    Invariant(String),
    #[error(
        "pool {pool}: its lock backend changed to {wanted:?} while this replica held the {held:?} lock; retrying under the new lock"
    )]
    BackendChanged { pool: String, held: lockguard_lock::Backend, wanted: lockguard_lock::Backend },
    #[error(
        "pool {pool}: a new lock service opens a new epoch once the old one was quiet for a TTL; {wait:?} to go"
    )]
    EpochWait { pool: String, wait: Duration },
}

/// Runs one reconcile and records its duration and outcome.
async fn timed(
    ctx: &Context,
    controller: &'static str,
    reconcile: impl std::future::Future<Output = Result<controller::Action, Error>>,
) -> Result<controller::Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics.reconciled(
        controller,
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::kind),
    );
    result
}

impl Error {
    /// A metric and log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Lock(_) => "lock",
            Error::Ledger { .. } => "ledger",
            Error::Fenced { .. } => "fenced",
            Error::Finalizer { .. } => "finalizer",
            Error::Changed { .. } => "changed",
            Error::Invariant(_) => "invariant",
            Error::BackendChanged { .. } => "backend_changed",
            Error::EpochWait { .. } => "epoch_wait",
        }
    }
}

/// Turns `ready` true once each of several watch streams has had its first complete listing
/// (its first `InitDone`; relistings later do not count again).
struct CacheSync {
    ready: Arc<AtomicBool>,
    listed: Vec<AtomicBool>,
    pending: AtomicUsize,
}

impl CacheSync {
    fn new(ready: Arc<AtomicBool>, streams: usize) -> Self {
        Self {
            ready,
            listed: (0..streams).map(|_| AtomicBool::new(false)).collect(),
            pending: streams.into(),
        }
    }

    /// Stream `i` delivered `event`.
    fn listed<K>(&self, i: usize, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone)
            && !self.listed[i].swap(true, Ordering::AcqRel)
            && self.pending.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.ready.store(true, Ordering::Release);
            tracing::info!("caches synced; ready");
        }
    }
}

/// Settings of `lockguard run`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub identity: String,
    pub concurrency: u16,
}

/// Runs both controllers until SIGTERM/SIGINT; `ready` turns true once both caches synced.
pub async fn run(
    client: Client,
    locks: Locks,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let claims: Api<Claim> = Api::all(client.clone());
    let pools: Api<Pool> = Api::all(client.clone());
    let config = controller::Config::default().concurrency(settings.concurrency);

    // Ready once both caches have their first complete listing, seen on their own streams
    // (not with Store::wait_until_ready: its signal wakes only the last of several waiters,
    // and the controllers wait on it already, so a second waiter could wait forever).
    let synced = Arc::new(CacheSync::new(ready, 2));
    let (claims_synced, pools_synced) = (synced.clone(), synced);
    // The claim cache holds every claim: without their managedFields (and kubectl's copy of
    // the last applied object) it is about half the size, which matters at thousands.
    let (claim_store, writer) = reflector::store();
    let claim_events = watcher(claims, watcher::Config::default())
        .default_backoff()
        .modify(|claim: &mut Claim| {
            claim.managed_fields_mut().clear();
            claim.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .inspect_ok(move |event| claims_synced.listed(0, event))
        .applied_objects();
    let claim_controller =
        Controller::for_stream(claim_events, claim_store.clone()).with_config(config.clone());
    let (pool_store, writer) = reflector::store();
    let pool_events = watcher(pools.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .inspect_ok(move |event| pools_synced.listed(1, event))
        .applied_objects();
    let pool_controller = Controller::for_stream(pool_events, pool_store.clone()).with_config(config);
    let stores = (claim_store.clone(), pool_store.clone());
    let ctx = Arc::new(Context::new(client, locks, settings, stores, metrics));

    // A pool that changes (items freed, created, deleted, its ledger restored or edited)
    // wakes the claims that wait for it and those whose status no longer shows what its
    // ledger gives them; claims not yet reconciled are queued by their own events already.
    let of_pool = claim_store.clone();
    let pools_seen = ctx.clone();
    let claim_controller = claim_controller
        .watches(pools.clone(), watcher::Config::default(), move |pool: Pool| {
            pools_seen.saw_pool(&pool);
            let name = pool.metadata.name.clone().unwrap_or_default();
            let ledger = pools_seen.ledger(&pool).ok();
            of_pool
                .state()
                .into_iter()
                .filter(|c| c.spec.pool_ref == name && claim::affected_by(c, &pool, ledger.as_deref()))
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(claim::reconcile, claim::error_policy, ctx.clone())
        .for_each(|_| async {});

    let gauges = (ctx.metrics.clone(), claim_store.clone(), pool_store.clone());
    tokio::spawn(async move {
        let (metrics, claims, pools) = gauges;
        let mut tick = tokio::time::interval(gauges::INTERVAL);
        let mut pools_seen = Default::default();
        loop {
            tick.tick().await;
            pools_seen = gauges::observe(&metrics, &claims, &pools, &pools_seen);
        }
    });
    let pool_controller = pool_controller
        .shutdown_on_signal()
        .run(pool::reconcile, pool::error_policy, ctx.clone())
        .for_each(|_| async {});

    tracing::info!(identity = %ctx.identity(), "controllers started");
    tokio::join!(claim_controller, pool_controller);
    tracing::info!("controllers stopped");
    Ok(())
}

/// Gets object `name`; `None` only when the API server says that this very object does not
/// exist. Just after an API server restart a custom resource's path can answer 404 before
/// its CRD is served again: taken for "gone", that would free the items of a live claim.
pub async fn get_existing<K>(api: &kube::Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.is_not_found() && names_object(&status, name) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A 404 about object `name` itself (its details name it), not about the resource type.
fn names_object(status: &kube::core::Status, name: &str) -> bool {
    status.details.as_ref().is_some_and(|d| d.name == name)
}

/// Exponential backoff with a cap: 0.5 s, 1 s, 2 s, … up to `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (Duration::from_millis(500) * 2u32.pow(exp)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_stream_listed_once() {
        let ready = Arc::new(AtomicBool::new(false));
        let sync = CacheSync::new(ready.clone(), 2);
        let done = watcher::Event::<Pool>::InitDone;
        sync.listed(0, &watcher::Event::<Pool>::Init);
        sync.listed(1, &watcher::Event::<Pool>::Init);
        sync.listed(0, &done);
        // A relisting of the same stream does not stand in for the other one.
        sync.listed(0, &done);
        assert!(!ready.load(Ordering::Acquire));
        sync.listed(1, &done);
        assert!(ready.load(Ordering::Acquire));
    }

    #[test]
    fn only_a_404_that_names_the_object_means_it_is_gone() {
        let status = |name: &str| -> kube::core::Status {
            serde_json::from_value(serde_json::json!({
                "code": 404, "reason": "NotFound", "message": "not found",
                "details": { "name": name, "group": "lockguard.dev", "kind": "claims" }
            }))
            .expect("status")
        };
        assert!(names_object(&status("web"), "web"));
        // "the server could not find the requested resource": a CRD not served (yet).
        assert!(!names_object(&status(""), "web"));
        let bare: kube::core::Status =
            serde_json::from_value(serde_json::json!({ "code": 404, "reason": "NotFound", "message": "the server could not find the requested resource" }))
                .expect("status");
        assert!(!names_object(&bare, "web"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        assert_eq!(backoff(1, cap), Duration::from_millis(500));
        assert_eq!(backoff(2, cap), Duration::from_secs(1));
        assert_eq!(backoff(4, cap), Duration::from_secs(4));
        assert_eq!(backoff(40, cap), cap);
    }
}
