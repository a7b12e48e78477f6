//! What reconcilers share: the kube client, the locks, the event recorder, and per-object
//! failure counts for backoff.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::Error;
use super::Settings;
use super::batch::{Batches, newest_pool};
use crate::api::{Claim, LockSpec, Pool};
use crate::ledger::Ledger;
use crate::metrics::{Metrics, by};
use lockguard_lock::{AnyLock, Backend, Lock, LockConfig, LockError, LockGuard, LockOptions};

/// The locks of both backends, connected on first use and again after a failure, so a lock
/// service that is down at start-up does not stop the operator.
pub struct Locks {
    config: LockConfig,
    /// One slot per backend, so that connecting to an etcd that does not answer (up to 5 s)
    /// never holds up the acquisitions of Lease pools.
    etcd: Slot,
    lease: Slot,
}

type Slot = tokio::sync::Mutex<Option<AnyLock>>;

impl Locks {
    pub fn new(config: LockConfig) -> Self {
        Self { config, etcd: Slot::default(), lease: Slot::default() }
    }

    fn slot(&self, backend: Backend) -> &Slot {
        match backend {
            Backend::Etcd => &self.etcd,
            Backend::Lease => &self.lease,
        }
    }

    /// The lock name of a pool for a backend. A Lease name has at most 253 characters: a
    /// pool name too long for the prefix is shortened and given a hash of the whole name.
    pub fn lock_name(backend: Backend, pool: &str) -> String {
        match backend {
            Backend::Etcd => format!("lockguard/pools/{pool}"),
            Backend::Lease => lease_name(pool),
        }
    }

    pub async fn acquire(&self, pool: &str, spec: &LockSpec) -> Result<LockGuard, LockError> {
        let options = LockOptions::new(
            spec.ttl_seconds.max(0) as u32,
            Duration::from_secs(spec.acquire_timeout_seconds.max(1) as u64),
        )?;
        let lock = self.connect(spec.backend, options.timeout()).await?;
        let result = lock.acquire(&Self::lock_name(spec.backend, pool), options).await;
        if result.as_ref().is_err_and(LockError::is_unavailable) {
            // Connect again next time: the endpoints may have moved or come back.
            self.slot(spec.backend).lock().await.take();
        }
        result
    }

    async fn connect(&self, backend: Backend, timeout: Duration) -> Result<AnyLock, LockError> {
        let mut slot = self.slot(backend).lock().await;
        if let Some(lock) = slot.as_ref() {
            return Ok(lock.clone());
        }
        let lock = self.config.connect(backend, timeout.min(Duration::from_secs(5))).await?;
        *slot = Some(lock.clone());
        Ok(lock)
    }
}

const LEASE_PREFIX: &str = "lockguard-pool-";
const MAX_LEASE_NAME: usize = 253;

fn lease_name(pool: &str) -> String {
    let name = format!("{LEASE_PREFIX}{pool}");
    if name.len() <= MAX_LEASE_NAME {
        return name;
    }
    // FNV-1a: stable across builds and releases, unlike std's hasher.
    let hash =
        pool.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let keep = MAX_LEASE_NAME - LEASE_PREFIX.len() - 17;
    // Pool names are DNS subdomains (ASCII), so any byte is a char boundary; the kept part
    // must not end in '-' or '.' before the separator.
    let head = pool[..keep].trim_end_matches(['-', '.']);
    format!("{LEASE_PREFIX}{head}-{hash:016x}")
}

pub struct Context {
    pub client: Client,
    pub locks: Locks,
    pub claims: Store<Claim>,
    pub pools: Store<Pool>,
    pub batches: Batches,
    pub metrics: Arc<Metrics>,
    settings: Settings,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    corrupt: Mutex<HashSet<String>>,
    /// Per pool: the resourceVersion last seen under the lock and since when.
    seen: Mutex<HashMap<String, (String, std::time::Instant)>>,
    /// Per pool: the newest copy the claim controller's pool watch delivered.
    seen_pools: Mutex<HashMap<String, Arc<Pool>>>,
    /// Per pool: its ledger as parsed at a resourceVersion.
    ledgers: Mutex<HashMap<String, (String, Arc<Ledger>)>>,
    /// Per claim and write: since when this replica leaves that write to the replica that
    /// last wrote the pool's ledger.
    deferred: Mutex<HashMap<(String, Deferred), std::time::Instant>>,
}

/// How long a replica leaves a claim's writes to the replica that last wrote its pool's
/// ledger: every replica sees every claim, and three replicas racing for the same write
/// cost the API server three requests, two of them refused.
const DEFER: Duration = Duration::from_secs(3);
const DEFER_RECHECK: Duration = Duration::from_millis(500);

/// The claim writes that one replica makes while the others wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deferred {
    /// Adding the finalizer to a new claim.
    Finalizer,
    /// Showing the items of a hold in the claim's status.
    Status,
}

impl Context {
    pub fn new(
        client: Client,
        locks: Locks,
        settings: Settings,
        (claims, pools): (Store<Claim>, Store<Pool>),
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter { controller: "lockguard".into(), instance: Some(settings.identity.clone()) };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            locks,
            claims,
            pools,
            batches: Batches::default(),
            metrics,
            settings,
            recorder,
            failures: Mutex::default(),
            corrupt: Mutex::default(),
            seen: Mutex::default(),
            deferred: Mutex::default(),
            seen_pools: Mutex::default(),
            ledgers: Mutex::default(),
        }
    }

    /// Pool `name` from the caches, or from the server when they do not have it (yet).
    pub async fn pool(&self, name: &str) -> Result<Option<Arc<Pool>>, kube::Error> {
        if let Some(pool) = self.cached_pool(name) {
            return Ok(Some(pool));
        }
        let fetched = super::get_existing(&kube::Api::<Pool>::all(self.client.clone()), name).await?;
        Ok(fetched.map(Arc::new))
    }

    /// The newest copy of pool `name` this replica has: from the pool controller's store,
    /// the claim controller's pool watch (the two watches run apart), or its own last hold.
    pub fn cached_pool(&self, name: &str) -> Option<Arc<Pool>> {
        let stored = self.pools.get(&ObjectRef::new(name))?;
        let seen = self.seen_pools.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
        newest_pool(newest_pool(Some(stored), seen), self.batches.written(name))
    }

    /// Records a pool as the claim controller's watch delivered it.
    pub fn saw_pool(&self, pool: &Pool) {
        let name = pool.name_any();
        let mut seen = self.seen_pools.lock().unwrap_or_else(|e| e.into_inner());
        let gone = pool.metadata.deletion_timestamp.is_some() && pool.finalizers().is_empty();
        let newer = newest_pool(seen.remove(&name), Some(Arc::new(pool.clone())));
        if let Some(pool) = newer.filter(|_| !gone) {
            seen.insert(name, pool);
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
        let ledger = Arc::new(super::pool_ledger::ledger_of(pool)?);
        ledgers.insert(name, (version, ledger.clone()));
        Ok(ledger)
    }

    /// `Some(wait)` while this replica leaves `write` of claim `key` to the replica that
    /// last wrote `pool`'s ledger. After that, it writes itself: that replica may be gone.
    pub fn defer(&self, key: &str, write: Deferred, pool: &Pool) -> Option<Duration> {
        let writer = pool.status.as_ref().and_then(|s| s.lock_holder.as_deref());
        if writer.is_none_or(|w| w == self.identity()) {
            return None;
        }
        let mut deferred = self.deferred.lock().unwrap_or_else(|e| e.into_inner());
        let since = deferred.entry((key.to_string(), write)).or_insert_with(std::time::Instant::now);
        // Looked at again soon: while the replicas' caches disagree on who wrote last, each
        // may take another for the writer, and that passes as soon as the watch delivers.
        DEFER.checked_sub(since.elapsed()).filter(|wait| !wait.is_zero()).map(|wait| wait.min(DEFER_RECHECK))
    }

    /// How long this replica has seen pool `name` at `resource_version` (zero the first
    /// time): judged by the local clock, like a Lease's expiry.
    pub fn unchanged_for(&self, name: &str, resource_version: &str) -> Duration {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry(name.to_string())
            .or_insert_with(|| (resource_version.to_string(), std::time::Instant::now()));
        if entry.0 != resource_version {
            *entry = (resource_version.to_string(), std::time::Instant::now());
        }
        entry.1.elapsed()
    }

    /// Records whether pool `name`'s ledger is corrupt; the gauge counts such pools.
    pub fn set_corrupt(&self, name: &str, corrupt: bool) {
        let mut pools = self.corrupt.lock().unwrap_or_else(|e| e.into_inner());
        if corrupt {
            pools.insert(name.to_string());
        } else {
            pools.remove(name);
        }
        self.metrics.pools_ledger_corrupt.set(pools.len() as i64);
    }

    /// Takes a pool's lock, counting waiters, wait time and failures.
    pub async fn lock(&self, pool: &str, spec: &LockSpec) -> Result<LockGuard, LockError> {
        let backend = by(spec.backend);
        let waiters = self.metrics.lock_waiters.get_or_create(&backend).clone();
        waiters.inc();
        let result = self.locks.acquire(pool, spec).await;
        waiters.dec();
        match &result {
            Ok(guard) => {
                self.metrics.lock_wait.get_or_create(&backend).observe(guard.waited().as_secs_f64());
                let wait_ms = guard.waited().as_millis() as u64;
                tracing::info!(pool, backend = %guard.backend(), token = guard.fencing_token(), wait_ms, "lock acquired");
            }
            Err(_) => {
                self.metrics.lock_errors.get_or_create(&backend).inc();
            }
        }
        result
    }

    /// Releases a pool's lock, recording how long it was held and whether it was lost.
    pub async fn unlock(&self, guard: LockGuard) {
        let backend = by(guard.backend());
        self.metrics.lock_hold.get_or_create(&backend).observe(guard.held().as_secs_f64());
        if guard.is_lost() {
            self.metrics.locks_lost.get_or_create(&backend).inc();
            tracing::warn!(lock = guard.name(), token = guard.fencing_token(), "lock was lost while held");
        } else {
            let hold_ms = guard.held().as_millis() as u64;
            tracing::info!(lock = guard.name(), token = guard.fencing_token(), hold_ms, "lock released");
        }
        if let Err(e) = guard.release().await {
            tracing::warn!(error = %e, "releasing the lock failed; it expires with its lease");
        }
    }

    pub fn identity(&self) -> &str {
        &self.settings.identity
    }

    /// Publishes an Event; a failure to publish is logged, never fatal.
    pub async fn event(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(reason, error = %e, "cannot publish event");
        }
    }

    /// Counts a failure of `key`; returns how many in a row.
    pub fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_default();
        *n += 1;
        *n
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// `write` of claim `key` is done (by whichever replica): nothing to wait for.
    pub fn done(&self, key: &str, write: Deferred) {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner()).remove(&(key.to_string(), write));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_valid_pool_name_gives_a_valid_distinct_lease_name() {
        assert_eq!(Locks::lock_name(Backend::Lease, "ports"), "lockguard-pool-ports");
        let long = |c: &str| format!("{}{c}", "a.".repeat(126));
        let (a, b) =
            (Locks::lock_name(Backend::Lease, &long("x")), Locks::lock_name(Backend::Lease, &long("y")));
        assert!(a.len() <= 253 && b.len() <= 253, "{a}");
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            );
            assert!(!name.contains("-.") && !name.contains(".-") && !name.ends_with('-'), "{name}");
        }
        assert_eq!(a, Locks::lock_name(Backend::Lease, &long("x")), "stable");
    }
}
