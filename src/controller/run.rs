//! Wires both controllers to one watch per resource: the claims' watch feeds the claim
//! controller, the pools' watch feeds one shared cache that the pool controller reconciles
//! from and the claim controller maps to the claims a pool change concerns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::context::{Context, Settings};
use super::locks::Locks;
use super::{claim, gauges, pool};
use crate::api::{Claim, Pool};
use crate::metrics::Metrics;

/// Pool changes queued for the controllers that have not taken them yet; a full buffer holds
/// the pool watch back (it never drops an event).
const POOL_EVENTS_BUFFER: usize = 1024;

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
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let config = controller::Config::default().concurrency(settings.concurrency);

    // Ready once both caches have their first complete listing, seen on their own streams
    // (not with Store::wait_until_ready: its signal wakes only the last of several waiters,
    // and the controllers wait on it already, so a second waiter could wait forever).
    let synced = Arc::new(CacheSync::new(ready, 3));
    let (claims_synced, pools_synced, namespaces_synced) = (synced.clone(), synced.clone(), synced);
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

    // One pool watch and cache. Its subscribers get applied pools only; a pool deleted for
    // good is passed to the claim controller on a channel of its own.
    let (pool_store, writer) = reflector::store_shared(POOL_EVENTS_BUFFER);
    let (pools_for_claims, pools_for_pools) = (subscribe(&writer)?, subscribe(&writer)?);
    let (deleted_tx, deleted_rx) = futures::channel::mpsc::unbounded();
    let pool_watch = watcher(pools, watcher::Config::default())
        .default_backoff()
        .reflect_shared(writer)
        .inspect_ok(move |event| {
            pools_synced.listed(1, event);
            if let watcher::Event::Delete(pool) = event {
                let _ = deleted_tx.unbounded_send(Arc::new(pool.clone()));
            }
        })
        .for_each(|_| async {});
    // Namespaces, metadata only: their labels decide which pools admit their claims.
    let (namespace_store, writer) = reflector::store_shared(POOL_EVENTS_BUFFER);
    let (namespaces_for_claims, namespaces_for_pools) = (subscribe(&writer)?, subscribe(&writer)?);
    let namespace_watch = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .reflect_shared(writer)
        .inspect_ok(move |event| namespaces_synced.listed(2, event))
        .for_each(|_| async {});
    // A namespace's labels change what the pools that select namespaces say about it.
    let selecting = pool_store.clone();
    let pool_controller = Controller::for_shared_stream(pools_for_pools, pool_store.clone())
        .with_config(config)
        .watches_shared_stream(namespaces_for_pools, move |_: Arc<PartialObjectMeta<Namespace>>| {
            selecting
                .state()
                .iter()
                .filter(|p| p.spec.selects_namespaces())
                .map(|p| ObjectRef::from_obj(&**p))
                .collect::<Vec<_>>()
        });
    let stores = (claim_store.clone(), pool_store.clone(), namespace_store);
    let ctx = Arc::new(Context::new(client, locks, settings, stores, metrics));

    // A pool that changes (items freed, created, deleted, its ledger restored or edited)
    // wakes the claims that wait for it and those whose status no longer shows what its
    // ledger gives them; claims not yet reconciled are queued by their own events already.
    // A pool gone for good wakes all of its claims (they say PoolNotFound and keep their
    // items), once this replica has forgotten the copy its last hold wrote.
    let (of_pool, pools_now) = (claim_store.clone(), pool_store.clone());
    let ledgers = ctx.clone();
    // A namespace whose labels change wakes its claims of pools that select namespaces.
    let (in_namespace, admitting) = (claim_store.clone(), pool_store.clone());
    let claim_controller = claim_controller
        .watches_shared_stream(namespaces_for_claims, move |ns: Arc<PartialObjectMeta<Namespace>>| {
            let namespace = ns.name_any();
            in_namespace
                .state()
                .into_iter()
                .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|c| {
                    admitting
                        .get(&ObjectRef::new(&c.spec.pool_ref))
                        .is_some_and(|p| p.spec.selects_namespaces())
                })
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        .watches_shared_stream(
            futures::stream::select(pools_for_claims, deleted_rx),
            move |pool: Arc<Pool>| {
                let name = pool.name_any();
                let gone = pools_now.get(&ObjectRef::new(&name)).is_none_or(|p| p.uid() != pool.uid());
                if gone {
                    ledgers.batches.forget(&name, pool.uid().as_deref());
                }
                let ledger = ledgers.ledger(&pool).ok();
                of_pool
                    .state()
                    .into_iter()
                    .filter(|c| {
                        c.spec.pool_ref == name && (gone || claim::affected_by(c, &pool, ledger.as_deref()))
                    })
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
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
    // The pool watch runs until both controllers stopped: they read its cache to the end.
    tokio::select! {
        _ = pool_watch => tracing::warn!("the pool watch ended"),
        _ = namespace_watch => tracing::warn!("the namespace watch ended"),
        _ = async { tokio::join!(claim_controller, pool_controller) } => {}
    }
    tracing::info!("controllers stopped");
    Ok(())
}

fn subscribe<K>(writer: &reflector::store::Writer<K>) -> anyhow::Result<reflector::ReflectHandle<K>>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer.subscribe().ok_or_else(|| anyhow::anyhow!("a cache was not made shared"))
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
}
