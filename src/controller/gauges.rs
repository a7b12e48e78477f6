//! Gauges of what this replica's caches hold: claims per reason of their `Bound`
//! condition, of the pools this replica serves (dashboards sum them over the replicas), and
//! free and total items per pool it caches (sharded, those it serves; a pool moving or just
//! created may be in two replicas' caches for a moment: dashboards take the min or the max).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::api::{Claim, Pool, Reason};
use crate::metrics::{ByPool, ByReason, Metrics};

/// How often the gauges are brought up to date.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// The label of claims without a `Bound` condition yet.
const PENDING: &str = "Pending";
/// The label of a reason this operator does not write.
const OTHER: &str = "Other";

/// Every label of the claims gauge, so each series exists from the start (an alert's `for:`
/// restarts when a series vanishes for a scrape).
pub fn reasons() -> impl Iterator<Item = &'static str> {
    Reason::BOUND.into_iter().map(Reason::as_str).chain([PENDING, OTHER])
}

/// Claims per reason, every label of [`reasons`] present.
pub fn reason_counts<'a>(claims: impl IntoIterator<Item = &'a Claim>) -> BTreeMap<&'static str, i64> {
    let mut counts: BTreeMap<&'static str, i64> = reasons().map(|r| (r, 0)).collect();
    for claim in claims {
        let reason = claim.bound_condition().map_or(PENDING, |c| {
            Reason::parse(&c.reason).filter(|r| Reason::BOUND.contains(r)).map_or(OTHER, Reason::as_str)
        });
        *counts.entry(reason).or_default() += 1;
    }
    counts
}

/// The pools whose ledger cannot be read, for their gauge.
#[derive(Default)]
pub struct CorruptPools(Mutex<HashSet<String>>);

impl CorruptPools {
    pub fn set(&self, metrics: &Metrics, name: &str, corrupt: bool) {
        let mut pools = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if corrupt {
            pools.insert(name.to_string());
        } else {
            pools.remove(name);
        }
        metrics.pools_ledger_corrupt.set(pools.len() as i64);
    }
}

/// Sets the gauges from the caches, counting the claims of the pools `serves` says this
/// replica serves; returns the pools it set, so the next call can drop the series of pools
/// that are gone.
pub fn observe(
    metrics: &Metrics,
    claims: &Store<Claim>,
    pools: &Store<Pool>,
    serves: impl Fn(&str) -> bool,
    before: &HashSet<String>,
) -> HashSet<String> {
    let claims = claims.state();
    metrics.cached_claims.set(claims.len() as i64);
    for (reason, n) in reason_counts(claims.iter().map(|c| &**c).filter(|c| serves(&c.spec.pool_ref))) {
        metrics.claims.get_or_create(&ByReason { reason: reason.to_string() }).set(n);
    }
    let mut seen = HashSet::new();
    let pools = pools.state();
    metrics.cached_pools.set(pools.len() as i64);
    for pool in pools {
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
    use crate::api::{BOUND, ClaimSpec, ClaimStatus, condition};

    fn claim(reason: Option<&str>) -> Claim {
        let mut claim = Claim::new("c", ClaimSpec { pool_ref: "p".into(), count: 1, items: None });
        if let Some(reason) = reason {
            let mut bound = condition(BOUND, reason == "Allocated", Reason::Allocated, String::new(), None);
            bound.reason = reason.to_string();
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
        assert_eq!(counts.len(), Reason::BOUND.len() + 2);
        assert_eq!(counts["Allocated"], 2);
        assert_eq!(counts["Pending"], 1);
        assert_eq!(counts["Other"], 1);
        assert_eq!(counts["LockUnavailable"], 1);
        assert_eq!(counts["PoolExhausted"], 0);
    }
}
