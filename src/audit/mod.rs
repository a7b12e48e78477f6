//! Invariant checks over pools and claims, as pure functions: the `lockguard audit`
//! command, the chaos suite and the end-to-end tests all judge the cluster with them.
//!
//! Two scopes:
//! - [`Scope::Safety`] holds at *every* instant of a correct system, also mid-flight:
//!   the ledger is well formed, no item is in two claims, and a claim's status lists only
//!   items the ledger gives to that claim's uid (status may lag the ledger, never lead it) —
//!   except items of a ledger the pool lost (re-created without status, or gone), which the
//!   claim keeps showing until the pool adopts them, and which the ledger gives nobody else.
//! - [`Scope::Full`] adds what holds once the system has converged: every Bound claim shows
//!   exactly its ledger items and count, no ledger entry outlives its claim, and the
//!   pool's counters agree with its ledger.

pub mod history;

use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;
use serde::Serialize;

use crate::api::{Claim, Pool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Safety,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Kind {
    /// The ledger cannot be read (out of range, overlapping, malformed).
    CorruptLedger,
    /// One item in the statuses of two claims.
    ItemTwice,
    /// A claim's status lists an item its pool's ledger does not give to its uid.
    StatusAheadOfLedger,
    /// A claim's status lists items of a pool that does not exist.
    ItemsOfMissingPool,
    /// A Bound claim whose items or count differ from its ledger entry.
    BoundMismatch,
    /// A ledger entry without a live claim of that uid.
    Leak,
    /// `capacity`, `allocated` or `free` disagree with the ledger.
    Counters,
    /// A pool whose ledger gives out items lacks its deletion protection (finalizer): it
    /// could vanish and leave its claims holding items nobody records.
    Unprotected,
    /// A ledger write gave a namespace items or claims past the pool's per-namespace limit
    /// (checked on history: a namespace may stay above a limit lowered after it took them).
    OverLimit,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Violation {
    pub kind: Kind,
    pub pool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} pool={}", self.kind, self.pool)?;
        if let Some(claim) = &self.claim {
            write!(f, " claim={claim}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What an audit saw and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub pools: usize,
    pub claims: usize,
    pub items_allocated: u64,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// `namespace/name`, a claim's key in its pool's ledger.
pub fn claim_key(claim: &Claim) -> String {
    format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any())
}

/// Audits every pool against the claims that reference it; claims of pools that do not
/// exist must hold nothing.
pub fn audit(pools: &[Pool], claims: &[Claim], scope: Scope) -> Report {
    let mut by_pool: HashMap<&str, Vec<&Claim>> = HashMap::new();
    for claim in claims {
        by_pool.entry(claim.spec.pool_ref.as_str()).or_default().push(claim);
    }
    let mut report = Report { pools: pools.len(), claims: claims.len(), ..Report::default() };
    for pool in pools {
        let claims = by_pool.remove(pool.name_any().as_str()).unwrap_or_default();
        let (items, violations) = check_pool(pool, &claims, scope);
        report.items_allocated += items;
        report.violations.extend(violations);
    }
    // Items of a pool gone (its protection stripped) stay with their claims for the pool to
    // adopt when it is back: safe, but not where a converged cluster should be.
    if scope == Scope::Full {
        for (pool, claims) in by_pool {
            report.violations.extend(claims.iter().filter_map(|c| holds_items_of_missing_pool(pool, c)));
        }
    }
    report
}

/// A claim that lists items although its pool does not exist.
pub fn holds_items_of_missing_pool(pool: &str, claim: &Claim) -> Option<Violation> {
    let items = status_items(claim);
    (!items.is_empty()).then(|| Violation {
        kind: Kind::ItemsOfMissingPool,
        pool: pool.to_string(),
        claim: Some(claim_key(claim)),
        message: format!("lists {} items of pool {pool}, which does not exist", items.len()),
    })
}

/// Checks one pool and the claims that reference it; returns the items its ledger
/// allocates and the violations.
pub fn check_pool(pool: &Pool, claims: &[&Claim], scope: Scope) -> (u64, Vec<Violation>) {
    let name = pool.name_any();
    let violation =
        |kind, claim: Option<String>, message: String| Violation { kind, pool: name.clone(), claim, message };
    let status = pool.status.clone().unwrap_or_default();
    let ledger = match pool.ledger() {
        Ok(ledger) => ledger,
        Err(e) => return (0, vec![violation(Kind::CorruptLedger, None, e.to_string())]),
    };
    let mut found = Vec::new();
    // A pool being deleted gives out nothing; one that lost its protection then had it
    // stripped by hand (it vanishes next), and its claims keep their items for the pool to
    // adopt when it is created again.
    let deleting = pool.metadata.deletion_timestamp.is_some();
    if ledger.allocated() > 0
        && !deleting
        && !pool.finalizers().iter().any(|f| f == crate::api::POOL_FINALIZER)
    {
        found.push(violation(
            Kind::Unprotected,
            None,
            format!(
                "the ledger gives out {} items but the pool lacks finalizer {}",
                ledger.allocated(),
                crate::api::POOL_FINALIZER
            ),
        ));
    }
    let given = |key: &str, uid: &str| -> BTreeSet<String> {
        match ledger.entry(key) {
            Some(e) if e.uid == uid => ledger.describe(&e.indices).0.into_iter().collect(),
            _ => BTreeSet::new(),
        }
    };

    let mut given_to: HashMap<String, &str> = HashMap::new();
    for (key, entry) in ledger.claims() {
        for item in ledger.describe(&entry.indices).0 {
            given_to.insert(item, key);
        }
    }
    let mut holder: HashMap<String, String> = HashMap::new();
    let mut live: HashMap<String, String> = HashMap::new();
    for claim in claims {
        let key = claim_key(claim);
        let uid = claim.uid().unwrap_or_default();
        live.insert(key.clone(), uid.clone());
        let shown = status_items(claim);
        if shown.is_empty() && scope == Scope::Safety {
            continue;
        }
        let ledger_items = given(&key, &uid);
        for item in &shown {
            if let Some(other) = holder.insert(item.clone(), key.clone()) {
                found.push(violation(
                    Kind::ItemTwice,
                    Some(key.clone()),
                    format!("item {item} is in the statuses of {other} and {key}"),
                ));
            }
        }
        let ahead: Vec<&String> = shown.iter().filter(|i| !ledger_items.contains(*i)).collect();
        let awaiting_adoption = scope == Scope::Safety && claim.shows_lost_ledger(pool);
        if awaiting_adoption {
            for item in &ahead {
                if let Some(other) = given_to.get(*item) {
                    found.push(violation(
                        Kind::ItemTwice,
                        Some(key.clone()),
                        format!("item {item} is in the status of {key} (from a lost ledger) and the ledger gives it to {other}"),
                    ));
                }
            }
        } else if !ahead.is_empty() {
            found.push(violation(
                Kind::StatusAheadOfLedger,
                Some(key.clone()),
                format!(
                    "status lists {} the ledger does not give to uid {uid}",
                    preview(ahead.iter().map(|s| s.as_str()))
                ),
            ));
        }
        if scope == Scope::Full && claim.is_bound() {
            let count = u64::try_from(claim.spec.count).unwrap_or_default();
            let exact = shown.len() == ledger_items.len() && ahead.is_empty();
            if !exact || ledger_items.len() as u64 != count {
                found.push(violation(
                    Kind::BoundMismatch,
                    Some(key.clone()),
                    format!(
                        "Bound with {} items (count {count}) but the ledger gives it {}",
                        shown.len(),
                        ledger_items.len()
                    ),
                ));
            }
        }
    }
    if scope == Scope::Full {
        for (key, entry) in ledger.claims() {
            if live.get(key) != Some(&entry.uid) {
                found.push(violation(
                    Kind::Leak,
                    Some(key.to_string()),
                    format!(
                        "ledger entry of uid {} ({} items) has no live claim",
                        entry.uid,
                        entry.indices.len()
                    ),
                ));
            }
        }
        let counts = (status.capacity, status.allocated, status.free);
        let expected = (ledger.capacity() as i32, ledger.allocated() as i32, ledger.free() as i32);
        if counts != expected {
            found.push(violation(
                Kind::Counters,
                None,
                format!("capacity/allocated/free are {counts:?}, the ledger says {expected:?}"),
            ));
        }
    }
    (u64::from(ledger.allocated()), found)
}

/// The ledger write from `before` to `after` (two versions of one pool) took a namespace past
/// a per-namespace limit of the pool: its items or its claims that hold items grew and
/// ended above the limit. A ledger rebuilt after it was lost adopts what claims show, whatever
/// the limits, so such a write is not judged.
pub fn limits_passed(before: &Pool, after: &Pool) -> Vec<Violation> {
    // A status write keeps the spec it was made under; between versions further apart the
    // limits may have changed, and the looser one is the one a write could have been made under.
    let looser = |a: Option<u32>, b: Option<u32>| a.zip(b).map(|(a, b)| a.max(b));
    let ((items_then, claims_then), (items_now, claims_now)) =
        (before.spec.limits_in_force(), after.spec.limits_in_force());
    let (max_items, max_claims) = (looser(items_then, items_now), looser(claims_then, claims_now));
    if (max_items.is_none() && max_claims.is_none()) || before.lost_ledger() {
        return Vec::new();
    }
    let (Ok(old), Ok(new)) = (before.ledger(), after.ledger()) else { return Vec::new() };
    let (old, new) = (old.namespace_usage(), new.namespace_usage());
    let mut found = Vec::new();
    for (namespace, &(items, claims)) in &new {
        let (had_items, had_claims) = old.get(namespace).copied().unwrap_or_default();
        let mut passed = |what: &str, had: u32, now: u32, limit: Option<u32>| {
            if let Some(limit) = limit.filter(|&limit| now > had && now > limit) {
                found.push(Violation {
                    kind: Kind::OverLimit,
                    pool: after.name_any(),
                    claim: None,
                    message: format!(
                        "a ledger write took namespace {namespace} from {had} to {now} {what}, past its limit of {limit}"
                    ),
                });
            }
        };
        passed("items", had_items, items, max_items);
        passed("claims holding items", had_claims, claims, max_claims);
    }
    found
}

fn status_items(claim: &Claim) -> Vec<String> {
    claim.status.as_ref().map(|s| s.items.clone()).unwrap_or_default()
}

/// The first few of `items`, and how many there are.
fn preview<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = items.collect();
    match all.len() {
        0..=3 => all.join(","),
        n => format!("{},… ({n} items)", all[..3].join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Allocation, BOUND, ClaimSpec, ClaimStatus, PoolSpec, PoolStatus, Reason, condition};
    use crate::ledger::format_indices;

    pub(crate) fn pool(name: &str, capacity: u32, ledger: &[(&str, &str, &str)]) -> Pool {
        let mut pool = Pool::new(name, PoolSpec::of_range(0, i64::from(capacity) - 1));
        let ledger: Vec<Allocation> =
            ledger.iter().map(|(claim, uid, items)| Allocation::positions(claim, uid, items)).collect();
        let allocated = crate::ledger::Ledger::from_status(&ledger, crate::ledger::Items::indices(capacity))
            .map(|l| l.allocated() as i32)
            .unwrap_or_default();
        pool.metadata.finalizers = Some(vec![crate::api::POOL_FINALIZER.to_string()]);
        pool.status = Some(PoolStatus {
            capacity: capacity as i32,
            allocated,
            free: capacity as i32 - allocated,
            ledger,
            // Written under a lock: its ledger is the record (see Claim::shows_lost_ledger).
            fencing_token: Some(1),
            ..Default::default()
        });
        pool
    }

    pub(crate) fn claim(key: &str, uid: &str, pool: &str, count: i32, items: &[u32], bound: bool) -> Claim {
        let (namespace, name) = key.split_once('/').expect("ns/name");
        let mut claim = Claim::new(name, ClaimSpec { pool_ref: pool.into(), count, items: None });
        claim.metadata.namespace = Some(namespace.into());
        claim.metadata.uid = Some(uid.into());
        claim.status = Some(ClaimStatus {
            items: items.iter().map(u32::to_string).collect(),
            conditions: vec![condition(BOUND, bound, Reason::Allocated, "", None)],
            ..Default::default()
        });
        claim
    }

    fn kinds(report: &Report) -> Vec<Kind> {
        report.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn a_consistent_cluster_is_clean() {
        let pools = [pool("p", 10, &[("a/x", "u1", "0-1"), ("a/y", "u2", "2")])];
        let claims = [claim("a/x", "u1", "p", 2, &[0, 1], true), claim("a/y", "u2", "p", 1, &[2], true)];
        let report = audit(&pools, &claims, Scope::Full);
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!(report.items_allocated, 3);
    }

    #[test]
    fn items_of_a_lost_ledger_may_lead_it_while_nobody_else_is_given_them() {
        let mut recreated = pool("p", 10, &[("a/y", "u2", "2")]);
        recreated.metadata.uid = Some("new".into());
        let mut from_old = claim("a/x", "u1", "p", 2, &[0, 1], true);
        from_old.status.as_mut().expect("status").pool_uid = Some("old".into());
        let claims = [from_old.clone(), claim("a/y", "u2", "p", 1, &[2], true)];
        assert!(audit(std::slice::from_ref(&recreated), &claims, Scope::Safety).is_clean());
        // Converged, it would have been adopted.
        let full = audit(std::slice::from_ref(&recreated), &claims, Scope::Full);
        assert!(kinds(&full).contains(&Kind::StatusAheadOfLedger), "{:?}", full.violations);
        // Given to another claim meanwhile: reported at once.
        let mut taken = pool("p", 10, &[("a/y", "u2", "1-2")]);
        taken.metadata.uid = Some("new".into());
        let report = audit(&[taken], &[from_old.clone()], Scope::Safety);
        assert_eq!(kinds(&report), [Kind::ItemTwice]);
        // Its pool gone: kept for the pool to adopt, reported only as not converged.
        assert!(audit(&[], std::slice::from_ref(&from_old), Scope::Safety).is_clean());
        assert_eq!(kinds(&audit(&[], &[from_old], Scope::Full)), [Kind::ItemsOfMissingPool]);
    }

    #[test]
    fn status_may_lag_the_ledger_but_not_lead_it() {
        // Growing: the ledger gave x item 2, its status does not show it yet: safe.
        let pools = [pool("p", 10, &[("a/x", "u1", "0-2")])];
        let lagging = [claim("a/x", "u1", "p", 3, &[0, 1], false)];
        assert!(audit(&pools, &lagging, Scope::Safety).is_clean());
        // Shrunk in the ledger first: the status leads.
        let pools = [pool("p", 10, &[("a/x", "u1", "0")])];
        let leading = [claim("a/x", "u1", "p", 1, &[0, 1], true)];
        assert_eq!(kinds(&audit(&pools, &leading, Scope::Safety)), vec![Kind::StatusAheadOfLedger]);
    }

    #[test]
    fn an_entry_of_another_uid_gives_nothing() {
        let pools = [pool("p", 10, &[("a/x", "old", "0-1")])];
        let claims = [claim("a/x", "new", "p", 2, &[0, 1], true)];
        let report = audit(&pools, &claims, Scope::Full);
        assert_eq!(kinds(&report), vec![Kind::StatusAheadOfLedger, Kind::BoundMismatch, Kind::Leak]);
    }

    #[test]
    fn two_claims_with_one_item_are_reported() {
        let pools = [pool("p", 10, &[("a/x", "u1", "0-1")])];
        let claims = [claim("a/x", "u1", "p", 2, &[0, 1], true), claim("a/y", "u2", "p", 1, &[1], true)];
        let report = audit(&pools, &claims, Scope::Safety);
        assert!(kinds(&report).contains(&Kind::ItemTwice), "{:?}", report.violations);
        assert!(report.violations.iter().any(|v| v.message.contains("item 1")));
    }

    #[test]
    fn leaks_counters_missing_pools_and_corrupt_ledgers_are_reported() {
        let mut counted = pool("p", 10, &[("a/gone", "u9", "0-3")]);
        if let Some(s) = counted.status.as_mut() {
            s.free = 10;
        }
        let corrupt = pool("q", 10, &[("a/z", "u3", "0-4294967295")]);
        let claims = [claim("a/w", "u4", "nope", 1, &[7], true)];
        let report = audit(&[counted, corrupt], &claims, Scope::Full);
        let mut found = kinds(&report);
        found.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(found, vec![Kind::CorruptLedger, Kind::Counters, Kind::ItemsOfMissingPool, Kind::Leak]);
        // Mid-flight (Safety), an entry without a claim is not a violation.
        assert!(
            !kinds(&audit(&[pool("p", 10, &[("a/gone", "u9", "0")])], &[], Scope::Safety))
                .contains(&Kind::Leak)
        );
    }

    #[test]
    fn a_pool_that_gives_out_items_must_be_protected() {
        let mut bare = pool("p", 10, &[("a/x", "u1", "0")]);
        bare.metadata.finalizers = None;
        let claims = [claim("a/x", "u1", "p", 1, &[0], true)];
        assert_eq!(kinds(&audit(&[bare], &claims, Scope::Safety)), vec![Kind::Unprotected]);
        let mut empty = pool("q", 10, &[]);
        empty.metadata.finalizers = None;
        assert!(audit(&[empty], &[], Scope::Full).is_clean(), "nothing given out, nothing to protect");
        // Its finalizer stripped by hand while it is being deleted: it vanishes next.
        let mut stripped = pool("p", 10, &[("a/x", "u1", "0")]);
        stripped.metadata.finalizers = None;
        stripped.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(audit(&[stripped], &claims, Scope::Safety).is_clean());
    }

    #[test]
    fn the_largest_pool_is_audited_in_one_pass() {
        // 65,536 items over 4,096 claims, fragmented: every claim holds every 4,096th item.
        let capacity = crate::api::MAX_POOL_ITEMS;
        let n = crate::ledger::MAX_CLAIMS_PER_POOL as u32;
        let indices = |c: u32| (0..capacity / n).map(|k| c + k * n).collect::<Vec<_>>();
        let keys: Vec<(String, String, String)> =
            (0..n).map(|c| (format!("ns/c{c}"), format!("u{c}"), format_indices(&indices(c)))).collect();
        let entries: Vec<(&str, &str, &str)> =
            keys.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
        let big = pool("big", capacity, &entries);
        let claims: Vec<Claim> = (0..n)
            .map(|c| {
                claim(&format!("ns/c{c}"), &format!("u{c}"), "big", (capacity / n) as i32, &indices(c), true)
            })
            .collect();
        let started = std::time::Instant::now();
        let report = audit(std::slice::from_ref(&big), &claims, Scope::Full);
        assert!(report.is_clean(), "{:?}", &report.violations[..1]);
        assert_eq!(report.items_allocated, u64::from(capacity));
        eprintln!("audit of {capacity} items in {n} claims: {:?}", started.elapsed());
    }

    #[test]
    fn a_ledger_write_that_takes_a_namespace_past_a_limit_is_found() {
        let limited = |mut pool: Pool, items: i32, claims: i32| {
            pool.spec.limits = Some(crate::api::NamespaceLimits {
                max_items_per_namespace: Some(items),
                max_claims_per_namespace: Some(claims),
            });
            pool
        };
        let before = limited(pool("p", 10, &[("a/1", "u1", "0-2")]), 4, 2);
        let within =
            limited(pool("p", 10, &[("a/1", "u1", "0-2"), ("a/2", "u2", "3"), ("b/1", "u3", "4-7")]), 4, 2);
        assert_eq!(limits_passed(&before, &within), vec![]);
        let over = limited(pool("p", 10, &[("a/1", "u1", "0-2"), ("a/2", "u2", "3-4")]), 4, 2);
        let found = limits_passed(&before, &over);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].kind == Kind::OverLimit && found[0].message.contains("from 3 to 5 items"),
            "{found:?}"
        );
        let claims =
            limited(pool("p", 10, &[("a/1", "u1", "0"), ("a/2", "u2", "1"), ("a/3", "u3", "2")]), 4, 2);
        let found = limits_passed(&before, &claims);
        assert!(found.iter().any(|v| v.message.contains("from 1 to 3 claims")), "{found:?}");
        // Above a limit lowered later, a namespace that does not grow is no finding.
        let lowered = limited(pool("p", 10, &[("a/1", "u1", "0-2")]), 1, 1);
        assert_eq!(limits_passed(&lowered, &lowered.clone()), vec![]);
    }
}
