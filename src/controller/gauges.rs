//! Gauges of what this replica's caches hold: claims per reason of their `Bound`
//! condition, and free and total items per pool. Every replica sees every object, so
//! dashboards take the max over replicas.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::claim::bound_condition;
use crate::api::{Claim, Pool};
use crate::metrics::{ByPool, ByReason, Metrics};

/// How often the gauges are brought up to date.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Every reason a claim's `Bound` condition can have, so each series exists from the
/// start (an alert's `for:` restarts when a series vanishes for a scrape). `Pending`: no
/// condition yet; `Other`: a reason this operator does not write.
pub const REASONS: [&str; 12] = [
    "Allocated",
    "Pending",
    "PoolNotFound",
    "PoolNotReady",
    "PoolTooSmall",
    "PoolExhausted",
    "PoolDeleting",
    "LedgerCorrupt",
    "LockUnavailable",
    "ItemsRevoked",
    "Releasing",
    "Other",
];

/// Claims per reason, every reason of [`REASONS`] present.
pub fn reason_counts<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> BTreeMap<&'static str, i64> {
    let mut counts: BTreeMap<&'static str, i64> = REASONS.iter().map(|r| (*r, 0)).collect();
    for claim in claims {
        let reason = bound_condition(claim)
            .map_or("Pending", |c| REASONS.iter().copied().find(|r| *r == c.reason).unwrap_or("Other"));
        *counts.entry(reason).or_default() += 1;
    }
    counts
}

/// Sets the gauges from the caches; returns the pools it set, so the next call can drop
/// the series of pools that are gone.
pub fn observe(
    metrics: &Metrics,
    claims: &Store<Claim>,
    pools: &Store<Pool>,
    before: &HashSet<String>,
) -> HashSet<String> {
    let claims = claims.state();
    for (reason, n) in reason_counts(claims.iter().map(|c| &**c)) {
        metrics.claims.get_or_create(&ByReason { reason: reason.to_string() }).set(n);
    }
    let mut seen = HashSet::new();
    for pool in pools.state() {
        let labels = ByPool { pool: pool.name_any() };
        let free = pool.status.as_ref().map_or(0, |s| i64::from(s.free));
        metrics.pool_free.get_or_create(&labels).set(free);
        metrics.pool_capacity.get_or_create(&labels).set(i64::from(pool.spec.items.capacity()));
        seen.insert(labels.pool);
    }
    for gone in before.difference(&seen) {
        let labels = ByPool { pool: gone.clone() };
        metrics.pool_free.remove(&labels);
        metrics.pool_capacity.remove(&labels);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClaimSpec, ClaimStatus, condition};
    use crate::controller::claim::BOUND;

    fn claim(reason: Option<&str>) -> Claim {
        let mut claim = Claim::new("c", ClaimSpec { pool_ref: "p".into(), count: 1 });
        if let Some(reason) = reason {
            let bound = condition(BOUND, reason == "Allocated", reason, String::new(), None);
            claim.status = Some(ClaimStatus { conditions: vec![bound], ..ClaimStatus::default() });
        }
        claim
    }

    #[test]
    fn claims_are_counted_by_reason_with_every_reason_present() {
        let claims = [
            claim(Some("Allocated")),
            claim(Some("Allocated")),
            claim(None),
            claim(Some("Custom")),
            claim(Some("LockUnavailable")),
        ];
        let counts = reason_counts(&claims);
        assert_eq!(counts.len(), REASONS.len());
        assert_eq!(counts["Allocated"], 2);
        assert_eq!(counts["Pending"], 1);
        assert_eq!(counts["Other"], 1);
        assert_eq!(counts["LockUnavailable"], 1);
        assert_eq!(counts["PoolExhausted"], 0);
    }
}
