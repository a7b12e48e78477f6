//! What the reconcilers share: the kube client and caches, and one value per
//! responsibility (locks, holds, Events, deferrals, backoff, epochs, metrics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::{PartialObjectMeta, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::batches::Batches;
use super::claim_cache::ClaimCache;
use super::defer::{Deferrals, Deferred};
use super::epoch::Quiet;
use super::error::Error;
use super::events::Events;
use super::fetch::get_existing;
use super::gauges::CorruptPools;
use super::locks::Locks;
use super::members::Members;
use super::narrow::Coverage;
use super::policy::Failures;
use super::turns::Turns;
use crate::api::{Claim, Pool};
use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// Settings of `lockguard run`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub identity: String,
    pub concurrency: u16,
    /// Pools divided between the replicas (off: every replica serves every pool).
    pub shard: bool,
    /// The group of replicas that divide the pools (the member Leases' label value).
    pub shard_group: String,
    /// How long a replica that stopped renewing its member Lease keeps its pools.
    pub member_lease: Duration,
    /// The operator's namespace: member Leases live there.
    pub namespace: String,
}

/// The caches the controllers read.
pub type Stores = (ClaimCache, Store<Pool>, Coverage, Store<PartialObjectMeta<Namespace>>);

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    /// The claims and pools (sharded: those of the pools this replica serves) and every
    /// namespace (metadata only), each fed by one watch.
    pub claims: ClaimCache,
    pub pools: Store<Pool>,
    /// Which pools the pool cache's last complete listing included (sharded, it leaves out
    /// those other members serve).
    pub pools_listed: Coverage,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub locks: Locks,
    pub batches: Batches,
    /// Turns to hold a pool's lock, shared by this replica's pools.
    pub turns: Turns,
    pub events: Events,
    pub deferrals: Deferrals,
    pub failures: Failures,
    pub quiet: Quiet,
    pub corrupt: CorruptPools,
    pub metrics: Arc<Metrics>,
    /// The replicas that serve pools, and which pools this one serves.
    pub members: Arc<Members>,
    /// Per pool: its ledger as parsed at a resourceVersion.
    ledgers: Mutex<HashMap<String, (String, Arc<Ledger>)>>,
    /// Claims to reconcile now: a hold decided something about them that no ledger write
    /// shows (the claim controller takes them).
    told: UnboundedSender<ObjectRef<Claim>>,
}

impl Context {
    pub fn new(
        client: Client,
        locks: Locks,
        settings: Settings,
        (claims, pools, pools_listed, namespaces): Stores,
        metrics: Arc<Metrics>,
        members: Arc<Members>,
        told: UnboundedSender<ObjectRef<Claim>>,
    ) -> Self {
        Self {
            members,
            events: Events::new(client.clone(), &settings.identity),
            client,
            settings,
            claims,
            pools,
            pools_listed,
            namespaces,
            locks,
            batches: Batches::default(),
            turns: Turns::default(),
            deferrals: Deferrals::default(),
            failures: Failures::default(),
            quiet: Quiet::default(),
            corrupt: CorruptPools::default(),
            metrics,
            ledgers: Mutex::default(),
            told,
        }
    }

    /// Reconciles the claims of `keys` (`namespace/name`) soon.
    pub fn tell(&self, keys: Vec<String>) {
        for key in keys {
            if let Some((namespace, name)) = key.split_once('/') {
                let _ = self.told.unbounded_send(ObjectRef::new(name).within(namespace));
            }
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// Pool `name` from the cache, or from the server when the cache does not have it (yet).
    pub async fn pool(&self, name: &str) -> Result<Option<Arc<Pool>>, kube::Error> {
        if let Some(pool) = self.cached_pool(name) {
            return Ok(Some(pool));
        }
        let fetched = get_existing(&kube::Api::<Pool>::all(self.client.clone()), name).await?;
        Ok(fetched.map(Arc::new))
    }

    /// The newest copy of pool `name` this replica has: the cache's, or its own last hold's
    /// (newer until the watch delivers it).
    pub fn cached_pool(&self, name: &str) -> Option<Arc<Pool>> {
        Pool::newest(self.pools.get(&ObjectRef::new(name)), self.batches.written(name))
    }

    /// Whether `pool` admits claims of a namespace (spec.allowedNamespaces against the cached
    /// labels; a namespace not cached is not admitted by a selector, and an invalid selector
    /// admits none). The selector is read once, each namespace judged once.
    pub fn admission(&self, pool: &Pool) -> impl FnMut(&str) -> bool + use<'_> {
        let selector = pool.spec.namespace_selector();
        let mut judged: HashMap<String, bool> = HashMap::new();
        move |namespace| match &selector {
            Ok(None) => true,
            Err(_) => false,
            Ok(Some(selector)) => *judged.entry(namespace.to_string()).or_insert_with(|| {
                self.namespaces
                    .get(&ObjectRef::new(namespace))
                    .is_some_and(|ns| selector.matches(ns.labels()))
            }),
        }
    }

    /// The pool's ledger, parsed once per version of the pool.
    pub fn ledger(&self, pool: &Pool) -> Result<Arc<Ledger>, Error> {
        let (name, version) = (pool.name_any(), pool.resource_version().unwrap_or_default());
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, ledger)) = ledgers.get(&name)
            && *at == version
            && !version.is_empty()
        {
            return Ok(ledger.clone());
        }
        let ledger = Arc::new(pool.ledger().map_err(|source| Error::Ledger { pool: name.clone(), source })?);
        ledgers.insert(name, (version, ledger.clone()));
        Ok(ledger)
    }

    /// `Some(wait)` while this replica leaves `write` of claim `key` to the replica that
    /// last wrote `pool`'s ledger.
    pub fn defer(&self, key: &str, write: Deferred, pool: &Pool) -> Option<Duration> {
        // Sharded, this replica serves the pool: no other replica writes its claims.
        if self.members.sharded() {
            return None;
        }
        let writer = pool.status.as_ref().and_then(|s| s.lock_holder.as_deref());
        self.deferrals.defer(key, write, writer, self.identity())
    }

    /// Runs one reconcile and records its duration and outcome.
    pub async fn timed(
        &self,
        controller: &'static str,
        reconcile: impl Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let started = std::time::Instant::now();
        let result = reconcile.await;
        self.metrics.reconciled(
            controller,
            started.elapsed().as_secs_f64(),
            result.as_ref().err().map(Error::kind),
        );
        result
    }
}
