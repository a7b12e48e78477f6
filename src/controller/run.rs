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
use tokio_util::sync::CancellationToken;

use super::claim_cache::ClaimCache;
use super::context::{Context, Settings};
use super::fetch::lean;
use super::locks::Locks;
use super::members::{self, Members};
use super::narrow::{self, Coverage};
use super::{claim, gauges, pool, shard};
use crate::api::{Claim, Pool};
use crate::metrics::Metrics;

/// Pool changes queued for the controllers that have not taken them yet; a full buffer holds
/// the pool watch back (it never drops an event).
const POOL_EVENTS_BUFFER: usize = 1024;

/// Runs both controllers until SIGTERM/SIGINT (`shutdown` is cancelled on it); `ready` turns
/// true once both caches synced.
pub async fn run(
    client: Client,
    locks: Locks,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listed = ready.clone();
    let claims: Api<Claim> = Api::all(client.clone());
    let pools: Api<Pool> = Api::all(client.clone());
    let namespaces: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let config = controller::Config::default().concurrency(settings.concurrency);

    // Ready once both caches have their first complete listing, seen on their own streams
    // (not with Store::wait_until_ready: its signal wakes only the last of several waiters,
    // and the controllers wait on it already, so a second waiter could wait forever).
    let synced = Arc::new(CacheSync::new(ready, if settings.shard { 4 } else { 3 }));
    let (claims_synced, pools_synced, namespaces_synced, members_synced) =
        (synced.clone(), synced.clone(), synced.clone(), synced);
    let (claim_store, writer) = reflector::store();
    let claim_cache = ClaimCache::new(claim_store.clone());
    let indexed = claim_cache.clone();
    let (deleted_claims_tx, deleted_claims) = futures::channel::mpsc::unbounded();
    let members = Arc::new(Members::new(
        &settings.identity,
        &settings.shard_group,
        settings.shard,
        settings.member_lease,
    ));

    // One pool watch and cache. Its subscribers get applied pools only; a pool deleted for
    // good is passed to the claim controller on a channel of its own. Sharded, the pool watch
    // and the claim watch leave out the pools other members serve.
    let (pool_store, pool_writer) = reflector::store_shared::<Pool>(POOL_EVENTS_BUFFER);
    let (pools_for_claims, pools_for_pools) = (subscribe(&pool_writer)?, subscribe(&pool_writer)?);
    let pools_coverage = Coverage::default();
    let (scope, left_out) = narrow::Scope::new(members.clone(), pools_coverage.clone());
    let scope = Arc::new(scope);
    let (pools_listed_tx, mut pools_listed) = tokio::sync::watch::channel(false);

    let (serving, listing, scoped) = (members.clone(), members.clone(), scope.clone());
    let (covered_pools_tx, covered_pools) = futures::channel::mpsc::unbounded();
    let (served, pools_to_wake) = (members.clone(), pool_store.clone());
    // Sharded, the claim watch starts once the members and the pools are known: claims are
    // dropped below for pools this replica does not serve, and until then it serves none;
    // and the pools other members serve are left out of the watch from its first listing.
    let members_known = futures::stream::once(async move {
        listing.until_listed().await;
        let _ = pools_listed.wait_for(|listed| *listed).await;
        scoped.refresh();
    })
    .filter_map(|()| futures::future::ready(None));
    let claim_events = members_known
        .chain(
            narrow::narrowed(claims, narrow::CLAIM_POOL, left_out.clone(), claim_cache.coverage().clone())
                .default_backoff()
                .modify(lean)
                .reflect(writer),
        )
        .inspect_ok(move |event| {
            claims_synced.listed(0, event);
            indexed.observe(event);
            // A complete listing covers the claims of the pools served: those that waited for
            // it (at start-up, or gained) need not wait for their next check.
            if matches!(event, watcher::Event::InitDone) {
                for pool in pools_to_wake.state().iter().filter(|p| served.serves(&p.name_any())) {
                    let _ = covered_pools_tx.unbounded_send(ObjectRef::from_obj(&**pool));
                }
            }
            // A claim gone frees its items at its pool's next reconcile: wake that pool now.
            if let watcher::Event::Delete(claim) = event {
                let _ = deleted_claims_tx.unbounded_send(ObjectRef::<Pool>::new(&claim.spec.pool_ref));
            }
        })
        .applied_objects()
        // Claims of pools another replica serves are not asked for, save those of pools new
        // since the watch started; a change of members wakes the claims of the pools gained.
        .try_filter(move |claim| futures::future::ready(serving.serves(&claim.spec.pool_ref)));
    let claim_controller =
        Controller::for_stream(claim_events, claim_store.clone()).with_config(config.clone());

    let (deleted_tx, deleted_rx) = futures::channel::mpsc::unbounded();
    let (pools_seen, pools_covered) = (scope.clone(), pools_coverage.clone());
    let pool_watch = narrow::narrowed(pools, narrow::POOL_NAME, left_out, pools_coverage.clone())
        .default_backoff()
        .modify(lean)
        .reflect_shared(pool_writer)
        .inspect_ok(move |event| {
            pools_synced.listed(1, event);
            pools_covered.observe(event);
            match event {
                watcher::Event::Delete(pool) => {
                    let _ = deleted_tx.unbounded_send(Arc::new(pool.clone()));
                }
                watcher::Event::InitDone => {
                    let _ = pools_listed_tx.send(true);
                }
                _ => {}
            }
            pools_seen.pool_event(event);
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
    let stores = (claim_cache.clone(), pool_store.clone(), pools_coverage, namespace_store);
    let (told_tx, told_claims) = futures::channel::mpsc::unbounded();
    let ctx =
        Arc::new(Context::new(client.clone(), locks, settings, stores, metrics, members.clone(), told_tx));

    // Sharded: announce this replica, follow the others, and when the members change wake the
    // pools (and their claims) that this replica serves from now on.
    let (gained_pools_tx, gained_pools) = futures::channel::mpsc::unbounded();
    let (gained_claims_tx, gained_claims) = futures::channel::mpsc::unbounded();
    if ctx.settings.shard {
        let namespace = ctx.settings.namespace.clone();
        tokio::spawn(members::announce(client.clone(), namespace.clone(), members.clone()));
        let (pools_now, claims_now, me) =
            (pool_store.clone(), claim_cache.clone(), ctx.identity().to_string());
        let watched = members.clone();
        tokio::spawn(async move {
            let changed = |before: &[String]| {
                scope.refresh();
                let live = watched.live();
                let names: Vec<String> = pools_now.state().iter().map(|p| p.name_any()).collect();
                for pool in shard::gained(names.iter().map(String::as_str), before, &live, &me) {
                    let _ = gained_pools_tx.unbounded_send(ObjectRef::new(pool));
                    for claim in claims_now.of_pool(pool) {
                        let _ = gained_claims_tx.unbounded_send(ObjectRef::from_obj(&*claim));
                    }
                }
            };
            let listed = |e: &_| members_synced.listed(3, e);
            members::watch_members(client, &namespace, watched.clone(), listed, changed).await;
        });
    }

    // A pool that changes (items freed, created, deleted, its ledger restored or edited)
    // wakes the claims that wait for it and those whose status no longer shows what its
    // ledger gives them; claims not yet reconciled are queued by their own events already.
    // A pool gone for good wakes all of its claims (they say PoolNotFound and keep their
    // items), once this replica has forgotten the copy its last hold wrote.
    let (of_pool, pools_now) = (claim_cache.clone(), pool_store.clone());
    let ledgers = ctx.clone();
    // A namespace whose labels change wakes its claims of pools that select namespaces.
    let (in_namespace, admitting) = (claim_store.clone(), pool_store.clone());
    let claim_controller = claim_controller
        .reconcile_on(gained_claims)
        .reconcile_on(told_claims)
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
                if !ledgers.members.serves(&name) {
                    return Vec::new();
                }
                let ledger = ledgers.ledger(&pool).ok();
                of_pool
                    .of_pool(&name)
                    .into_iter()
                    .filter(|c| gone || claim::affected_by(c, &pool, ledger.as_deref()))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(claim::reconcile, claim::error_policy, ctx.clone())
        .for_each(|_| async {});

    let gauges = (ctx.metrics.clone(), claim_store.clone(), pool_store.clone(), members);
    tokio::spawn(async move {
        let (metrics, claims, pools, members) = gauges;
        let mut tick = tokio::time::interval(gauges::INTERVAL);
        let mut pools_seen = Default::default();
        loop {
            tick.tick().await;
            pools_seen = gauges::observe(&metrics, &claims, &pools, |p| members.serves(p), &pools_seen);
            metrics.members.set(members.live().len() as i64);
            let served = pools.state().iter().filter(|p| members.serves(&p.name_any())).count();
            metrics.pools_served.set(served as i64);
        }
    });
    let pool_controller = pool_controller
        .reconcile_on(gained_pools)
        .reconcile_on(covered_pools)
        .reconcile_on(deleted_claims)
        .shutdown_on_signal()
        .run(pool::reconcile, pool::error_policy, ctx.clone())
        .for_each(|_| async {});

    tracing::info!(identity = %ctx.identity(), "controllers started");
    // The pool watch runs until both controllers stopped: they read its cache to the end.
    // Stopped before the caches' first listing, nothing is in flight; but kube's controllers
    // hold their runners until their cache has listed, which the watches, stopped by the same
    // signal, no longer bring: they would wait until killed.
    let stopped_unlisted = async {
        shutdown.cancelled().await;
        if listed.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = pool_watch => tracing::warn!("the pool watch ended"),
        _ = namespace_watch => tracing::warn!("the namespace watch ended"),
        _ = async { tokio::join!(claim_controller, pool_controller) } => {}
        () = stopped_unlisted => tracing::info!("stopped before the caches had their first listing"),
    }
    tracing::info!("controllers stopped");
    if ctx.settings.shard {
        members::leave(ctx.client.clone(), &ctx.settings.namespace, ctx.identity()).await;
    }
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
