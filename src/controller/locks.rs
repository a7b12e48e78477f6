//! The pools' locks: one connection per backend, made on first use and again after a
//! failure, each acquisition and release counted in the metrics and logged.

use std::sync::Arc;
use std::time::Duration;

use lockguard_lock::{AnyLock, Backend, Lock, LockConfig, LockError, LockGuard, LockOptions};

use super::policy::LOCK_CONNECT_TIMEOUT;
use crate::api::LockSpec;
use crate::metrics::{Metrics, by};

/// The locks of both backends. A lock service that is down at start-up does not stop the
/// operator: it is connected when a pool first needs it.
pub struct Locks {
    config: LockConfig,
    /// One slot per backend, so that connecting to an etcd that does not answer (up to 5 s)
    /// never holds up the acquisitions of Lease pools.
    etcd: Slot,
    lease: Slot,
    metrics: Arc<Metrics>,
}

type Slot = tokio::sync::Mutex<Option<AnyLock>>;

impl Locks {
    pub fn new(config: LockConfig, metrics: Arc<Metrics>) -> Self {
        Self { config, etcd: Slot::default(), lease: Slot::default(), metrics }
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

    /// Takes a pool's lock, counting waiters, wait time and failures.
    pub async fn lock(&self, pool: &str, spec: &LockSpec) -> Result<LockGuard, LockError> {
        let backend = by(spec.backend);
        let waiters = self.metrics.lock_waiters.get_or_create(&backend).clone();
        waiters.inc();
        let result = self.acquire(pool, spec).await;
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

    /// The highest token `backend`'s service can have issued so far (see
    /// [`AnyLock::issued_up_to`]).
    pub async fn issued_up_to(&self, backend: Backend) -> Result<Option<u64>, LockError> {
        self.connect(backend, LOCK_CONNECT_TIMEOUT).await?.issued_up_to().await
    }

    async fn acquire(&self, pool: &str, spec: &LockSpec) -> Result<LockGuard, LockError> {
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
        let lock = self.config.connect(backend, timeout.min(LOCK_CONNECT_TIMEOUT)).await?;
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
