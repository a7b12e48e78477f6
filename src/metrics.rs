//! Prometheus metrics: reconciles per controller, lock wait and hold times per backend,
//! lost locks, fenced-write rejections, current waiters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use lockguard_lock::Backend;

/// `backend="etcd"`, as the logs and the CLI write it ([`Backend::as_str`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByBackend {
    pub backend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByController {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByError {
    pub controller: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByReason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ByPool {
    pub pool: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ByController, Counter>,
    pub reconcile_errors: Family<ByError, Counter>,
    pub reconcile_duration: Family<ByController, Histogram>,
    pub lock_wait: Family<ByBackend, Histogram>,
    pub lock_hold: Family<ByBackend, Histogram>,
    pub lock_errors: Family<ByBackend, Counter>,
    pub locks_lost: Family<ByBackend, Counter>,
    pub fenced_rejections: Family<ByBackend, Counter>,
    pub lock_waiters: Family<ByBackend, Gauge>,
    pub pools_ledger_corrupt: Gauge,
    pub ledger_writes: Family<ByBackend, Counter>,
    pub batch_claims: Histogram,
    pub lock_waits_abandoned: Counter,
    pub claims: Family<ByReason, Gauge>,
    pub pool_free: Family<ByPool, Gauge>,
    pub pool_capacity: Family<ByPool, Gauge>,
    pub members: Gauge,
    pub pools_served: Gauge,
    pub cached_claims: Gauge,
    pub cached_pools: Gauge,
}

fn seconds_histogram() -> Histogram {
    // 0.5 ms … ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lockguard");
        let reconciles = Family::default();
        let reconcile_errors = Family::default();
        let reconcile_duration = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let lock_wait = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let lock_hold = Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        let lock_errors = Family::default();
        let locks_lost = Family::default();
        let fenced_rejections = Family::default();
        let lock_waiters = Family::default();
        let pools_ledger_corrupt = Gauge::default();
        registry.register("reconciles", "Reconciles run, per controller", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, per controller and error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration, per controller",
            reconcile_duration.clone(),
        );
        registry.register(
            "lock_acquire_wait_seconds",
            "Time from asking for a lock to holding it",
            lock_wait.clone(),
        );
        registry.register("lock_hold_seconds", "Time a lock was held", lock_hold.clone());
        registry.register(
            "lock_acquire_errors",
            "Acquisitions that failed (unavailable or timed out)",
            lock_errors.clone(),
        );
        registry.register(
            "locks_lost",
            "Locks lost while held (keep-alive past its deadline)",
            locks_lost.clone(),
        );
        registry.register(
            "fenced_writes_rejected",
            "Ledger writes refused because a newer lock holder wrote",
            fenced_rejections.clone(),
        );
        registry.register("lock_waiters", "Acquisitions waiting right now", lock_waiters.clone());
        registry.register(
            "pools_ledger_corrupt",
            "Pools whose ledger cannot be read (no allocation until repaired)",
            pools_ledger_corrupt.clone(),
        );
        let ledger_writes = Family::default();
        let batch_claims = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        let lock_waits_abandoned = Counter::default();
        registry.register(
            "ledger_writes",
            "Ledger writes, per backend (one per hold of a pool's lock that changed something)",
            ledger_writes.clone(),
        );
        registry.register(
            "batch_claims",
            "Claims whose allocation one ledger write changed",
            batch_claims.clone(),
        );
        registry.register(
            "lock_waits_abandoned",
            "Waits for a pool's lock given up because another replica did the work",
            lock_waits_abandoned.clone(),
        );
        let claims = Family::default();
        let pool_free = Family::default();
        let pool_capacity = Family::default();
        registry.register(
            "claims",
            "Claims of the pools this replica serves, per reason of their Bound condition (Allocated: bound; Pending: none yet)",
            claims.clone(),
        );
        registry.register("pool_free_items", "Free items per pool, from its ledger", pool_free.clone());
        registry.register("pool_capacity_items", "Items per pool", pool_capacity.clone());
        let (members, pools_served) = (Gauge::default(), Gauge::default());
        registry.register(
            "members",
            "Live replicas that divide the pools between them, as this replica sees them",
            members.clone(),
        );
        registry.register("pools_served", "Pools this replica serves", pools_served.clone());
        let cached_claims = Gauge::default();
        registry.register(
            "cached_claims",
            "Claims this replica watches and keeps in its cache (with the pools divided, those of the pools it serves)",
            cached_claims.clone(),
        );
        let cached_pools = Gauge::default();
        registry.register(
            "cached_pools",
            "Pools this replica watches and keeps in its cache (with the pools divided, those it serves and those created since its watch started)",
            cached_pools.clone(),
        );
        // Counters an alert watches exist from the start at 0: a series that first appears
        // at 1 is not an increase to Prometheus, and the first lost lock would go unseen.
        for backend in [Backend::Etcd, Backend::Lease] {
            drop(lock_errors.get_or_create(&by(backend)));
            drop(locks_lost.get_or_create(&by(backend)));
            drop(fenced_rejections.get_or_create(&by(backend)));
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            lock_wait,
            lock_hold,
            lock_errors,
            locks_lost,
            fenced_rejections,
            lock_waiters,
            pools_ledger_corrupt,
            ledger_writes,
            batch_claims,
            lock_waits_abandoned,
            claims,
            pool_free,
            pool_capacity,
            members,
            pools_served,
            cached_claims,
            cached_pools,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reconciled(&self, controller: &'static str, seconds: f64, error: Option<&'static str>) {
        self.reconciles.get_or_create(&ByController { controller }).inc();
        self.reconcile_duration.get_or_create(&ByController { controller }).observe(seconds);
        if let Some(kind) = error {
            self.reconcile_errors.get_or_create(&ByError { controller, kind }).inc();
        }
    }
}

pub fn by(backend: Backend) -> ByBackend {
    ByBackend { backend: backend.as_str() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text_with_the_lock_series() {
        let metrics = Metrics::default();
        metrics.lock_wait.get_or_create(&by(Backend::Etcd)).observe(0.002);
        metrics.fenced_rejections.get_or_create(&by(Backend::Lease)).inc();
        metrics.reconciled("claim", 0.01, Some("lock"));
        let text = metrics.render();
        assert!(text.contains("lockguard_lock_acquire_wait_seconds_count{backend=\"etcd\"} 1"), "{text}");
        assert!(text.contains("lockguard_fenced_writes_rejected_total{backend=\"lease\"} 1"), "{text}");
        assert!(
            text.contains("lockguard_reconcile_errors_total{controller=\"claim\",kind=\"lock\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
