//! What a claim's reconcile does, decided from what it knows — the claim, its pool and
//! ledger as cached, the pool task's last word — without any I/O. `claim.rs` carries the
//! decisions out.

use std::collections::HashSet;
use std::time::Duration;

use kube::ResourceExt;

use super::adopt::{awaits_adoption, dispute_message};
use super::plan::{Outcome, Reached};
use super::policy::{
    CLAIM_RESYNC, EXHAUSTED_RECHECK, LOCK_UNAVAILABLE_RECHECK, POOL_MISSING_RECHECK, POOL_NOT_READY_RECHECK,
};
use crate::api::{Claim, Pool, Reason};
use crate::ledger::{AllocError, Ledger, LedgerError};

/// What a claim's status should say when it is not bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotBound {
    pub reason: Reason,
    pub message: String,
}

/// Why the holds of a pool fail, for the claims that wait for them.
#[derive(Debug, Clone)]
pub struct Failure {
    pub message: String,
    /// The lock could not be taken (the claims say `LockUnavailable`).
    pub lock_unavailable: bool,
}

/// When to look at a claim again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recheck {
    /// Only when it or its pool changes.
    OnChange,
    After(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Say why it is not bound; `items` is what the status shows from now on (`None`
    /// keeps what it shows, which agrees with the ledger).
    NotBound { state: NotBound, items: Option<Vec<String>>, recheck: Recheck },
    /// Touch nothing and look again later; `warning` says why in the log.
    Leave { warning: String, recheck: Recheck },
    /// The status lists items the ledger does not give: confirm with a fresh read, then
    /// take them back.
    Revoke,
    /// The ledger gives exactly what the claim asks for: show `given`.
    Show { given: Vec<u32> },
    /// Ask the pool's task for a hold; a shrinking claim first shows only `shrink_to`.
    Allocate { shrink_to: Option<Vec<u32>> },
    /// The status shows items of a ledger the pool lost: ask for a hold, which adopts them,
    /// and show them meanwhile.
    Adopt,
}

/// The ledger of a cached pool, or why it cannot be read.
pub type LedgerRead<'a> = Result<&'a Ledger, &'a LedgerError>;

/// What to do about a live claim, given its pool (`None`: no such pool) and ledger.
pub fn decide(claim: &Claim, pool: Option<(&Pool, LedgerRead<'_>)>) -> Decision {
    let pool_name = &claim.spec.pool_ref;
    let Some((pool, ledger)) = pool else {
        // A pool deleted with its protection stripped: the items stay shown, so that the pool
        // adopts them when it is created again (from Git, a backup).
        let state = pool_not_found(pool_name, claim.shown_items().len());
        return not_bound(state, None, Recheck::After(POOL_MISSING_RECHECK));
    };
    let ledger = match ledger {
        Ok(ledger) => ledger,
        // Nothing can be verified against an unreadable ledger: leave a bound claim as it
        // is, tell a waiting one why; the pool's repair wakes it.
        Err(e) if claim.is_bound() => {
            let warning = format!("the ledger of pool {pool_name} is corrupt ({e}); not checking this claim");
            return Decision::Leave { warning, recheck: Recheck::After(CLAIM_RESYNC) };
        }
        Err(e) => {
            let state = NotBound { reason: Reason::LedgerCorrupt, message: format!("pool {pool_name}: {e}") };
            return not_bound(state, None, Recheck::OnChange);
        }
    };
    if awaits_adoption(claim, pool, ledger) {
        return Decision::Adopt;
    }
    if let Some(message) = dispute_message(ledger, claim) {
        return not_bound(NotBound { reason: Reason::ItemDisputed, message }, None, Recheck::OnChange);
    }
    let count = claim.spec.count.max(0) as u32;
    let given = ledger.given(&claim.ledger_key(), &claim.uid().unwrap_or_default());
    let given_items = ledger.describe(given).0;
    let wanted = claim.spec.items.as_deref();
    match next_step(claim.shown_items(), given, &given_items, count, wanted) {
        Step::Revoke { .. } => return Decision::Revoke,
        Step::Show => return Decision::Show { given: given.to_vec() },
        Step::Allocate => {}
    }
    if pool.is_deleting() {
        let message = format!("pool {pool_name} is being deleted; the claim binds once it is created again");
        let state = NotBound { reason: Reason::PoolDeleting, message };
        return not_bound(state, None, Recheck::After(POOL_MISSING_RECHECK));
    }
    if !pool.is_protected() {
        let message = format!("pool {pool_name} is not ready yet (its deletion protection is being set up)");
        let state = NotBound { reason: Reason::PoolNotReady, message };
        return not_bound(state, None, Recheck::After(POOL_NOT_READY_RECHECK));
    }
    let capacity = pool.spec.items.capacity();
    if count > capacity {
        return not_bound(too_small(pool_name, count, capacity), None, Recheck::OnChange);
    }
    // A shrink: the status lets go of the items before the ledger takes them back.
    let kept = ledger.keeps(given, count, wanted);
    let shrink_to = (kept.len() < given.len()).then_some(kept);
    Decision::Allocate { shrink_to }
}

/// Why a claim that asked for a hold is still not bound, from the pool task's last word
/// (`None`: the hold is planned or about to be, and its ledger write wakes the claim).
pub fn waiting(
    claim: &Claim,
    pool: &Pool,
    failure: Option<&Failure>,
    outcome: Option<&Outcome>,
) -> Option<(NotBound, Recheck)> {
    let pool_name = &claim.spec.pool_ref;
    if let Some(failure) = failure.filter(|f| f.lock_unavailable) {
        let backend = pool.spec.lock.backend.as_str();
        let message = format!("{backend} lock of pool {pool_name} unavailable: {}", failure.message);
        return Some((
            NotBound { reason: Reason::LockUnavailable, message },
            Recheck::After(LOCK_UNAVAILABLE_RECHECK),
        ));
    }
    let count = claim.spec.count.max(0) as u32;
    let state = match outcome? {
        Outcome::Refused(AllocError::TooSmall { .. }) => {
            too_small(pool_name, count, pool.spec.items.capacity())
        }
        Outcome::Refused(AllocError::Taken { item, holder }) => {
            let holder = claim.refer_to(holder);
            let message = format!(
                "item {item} of pool {pool_name} is held by {holder}; this claim binds when that claim lets go of it"
            );
            NotBound { reason: Reason::ItemTaken, message }
        }
        Outcome::Refused(AllocError::NotInPool { item }) => {
            let message = format!(
                "item {item} is not in pool {pool_name}; the claim binds once the pool's spec.items has it"
            );
            NotBound { reason: Reason::ItemNotInPool, message }
        }
        Outcome::Refused(e) => {
            let message = format!("pool {pool_name}: {e}; the claim binds when items are freed");
            NotBound { reason: Reason::PoolExhausted, message }
        }
        Outcome::BehindLongWait => {
            let bound = pool.spec.max_wait().as_secs();
            let message = format!(
                "pool {pool_name} gives its free items first to an older claim that has waited longer than {bound} s and does not fit yet; this claim binds after it"
            );
            NotBound { reason: Reason::PoolExhausted, message }
        }
        Outcome::Behind { older } => {
            let message = format!(
                "pool {pool_name} has too few free items for the older claim {older}, which is served first; this claim binds after it"
            );
            NotBound { reason: Reason::PoolExhausted, message }
        }
        Outcome::NamespaceNotAllowed => not_allowed(claim, pool),
        Outcome::NamespaceLimit(reached) => limit_reached(claim, *reached),
        _ => return None,
    };
    Some((state, Recheck::After(EXHAUSTED_RECHECK)))
}

fn not_allowed(claim: &Claim, pool: &Pool) -> NotBound {
    let (pool_name, namespace) = (&claim.spec.pool_ref, claim.namespace().unwrap_or_default());
    let why = match pool.spec.namespace_selector() {
        Err(e) => format!("pool {pool_name} admits no namespace ({e})"),
        Ok(_) => format!(
            "namespace {namespace} may not claim from pool {pool_name}: its labels do not match the pool's spec.allowedNamespaces"
        ),
    };
    let message = match claim.shown_items().len() {
        0 => format!("{why}; the claim gets no items"),
        n => format!("{why}; the claim keeps the {n} items it holds and gets no more"),
    };
    NotBound { reason: Reason::NamespaceNotAllowed, message }
}

fn limit_reached(claim: &Claim, reached: Reached) -> NotBound {
    let (pool_name, namespace) = (&claim.spec.pool_ref, claim.namespace().unwrap_or_default());
    let message = match reached {
        Reached::Items { limit, held, more } => format!(
            "namespace {namespace} holds {held} items of pool {pool_name} and this claim asks for {more} more: past the pool's limit of {limit} items per namespace (spec.limits.maxItemsPerNamespace); it binds when the namespace's claims let go of items"
        ),
        Reached::Claims { limit, held } => format!(
            "{held} claims of namespace {namespace} hold items of pool {pool_name}: the pool's limit of {limit} claims per namespace (spec.limits.maxClaimsPerNamespace); this claim binds when one of them lets go"
        ),
    };
    NotBound { reason: Reason::NamespaceLimitReached, message }
}

/// Whether `claim` has waited for items (not bound, `PoolExhausted`) for longer than
/// `bound` at `now`: then it holds up every namespace of its pool until it fits.
pub fn waited_past(claim: &Claim, bound: Duration, now: jiff::Timestamp) -> bool {
    claim.bound_condition().is_some_and(|c| {
        let waited = now.duration_since(c.last_transition_time.0);
        c.status == "False"
            && c.reason == Reason::PoolExhausted.as_str()
            && waited.is_positive()
            && waited.unsigned_abs() > bound
    })
}

pub fn pool_not_found(pool: &str, shown: usize) -> NotBound {
    let message = match shown {
        0 => format!("pool {pool} does not exist; the claim binds once it is created"),
        n => format!(
            "pool {pool} does not exist; the claim keeps showing its {n} items, which the pool adopts when it is created again"
        ),
    };
    NotBound { reason: Reason::PoolNotFound, message }
}

fn too_small(pool: &str, count: u32, capacity: u32) -> NotBound {
    let message = format!("the claim asks for {count} items but pool {pool} only has {capacity}");
    NotBound { reason: Reason::PoolTooSmall, message }
}

fn not_bound(state: NotBound, items: Option<Vec<String>>, recheck: Recheck) -> Decision {
    Decision::NotBound { state, items, recheck }
}

/// How the status compares with what the ledger gives the claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The status lists items the ledger does not give this claim: take them back first,
    /// keeping only these indices.
    Revoke { keep: Vec<u32> },
    /// The ledger gives exactly `count` items: the status only needs to show them.
    Show,
    /// The allocation must change: take the pool's lock.
    Allocate,
}

pub fn next_step(
    shown: &[String],
    given: &[u32],
    given_items: &[String],
    count: u32,
    wanted: Option<&[String]>,
) -> Step {
    let ledger: HashSet<&String> = given_items.iter().collect();
    if shown.iter().any(|item| !ledger.contains(item)) {
        let shown: HashSet<&String> = shown.iter().collect();
        let keep =
            given.iter().zip(given_items).filter(|(_, item)| shown.contains(item)).map(|(i, _)| *i).collect();
        return Step::Revoke { keep };
    }
    let complete = match wanted {
        Some(wanted) => given_items.len() == wanted.len() && wanted.iter().all(|v| ledger.contains(v)),
        None => given.len() as u32 == count,
    };
    if complete { Step::Show } else { Step::Allocate }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Allocation, BOUND, ClaimSpec, ClaimStatus, POOL_FINALIZER, PoolSpec, PoolStatus, condition,
    };

    fn items(v: &[u32]) -> Vec<String> {
        v.iter().map(|i| (1000 + i).to_string()).collect()
    }

    /// A pool of items 1000–1009, protected unless said otherwise.
    fn pool() -> Pool {
        let mut pool = Pool::new("p", PoolSpec::of_range(1000, 1009));
        pool.metadata.finalizers = Some(vec![POOL_FINALIZER.to_string()]);
        pool.metadata.uid = Some("pool-uid".into());
        pool.status =
            Some(PoolStatus { fencing_token: Some(1), lock_epoch: Some(1), ..PoolStatus::default() });
        pool
    }

    fn claim(count: i32, shown: &[u32]) -> Claim {
        let mut claim = Claim::new("c", ClaimSpec { pool_ref: "p".into(), count, items: None });
        claim.metadata.namespace = Some("ns".into());
        claim.metadata.uid = Some("u1".into());
        if !shown.is_empty() {
            let bound = condition(BOUND, true, Reason::Allocated, String::new(), None);
            claim.status =
                Some(ClaimStatus { items: items(shown), conditions: vec![bound], ..ClaimStatus::default() });
        }
        claim
    }

    /// A ledger that gives `ns/c` (uid u1) these indices.
    fn ledger(given: &str) -> Ledger {
        let entry = Allocation::positions("ns/c", "u1", given);
        let allocations = if given.is_empty() { vec![] } else { vec![entry] };
        Ledger::from_status(&allocations, pool().spec.items.items()).expect("ledger")
    }

    fn reason(decision: &Decision) -> Reason {
        match decision {
            Decision::NotBound { state, .. } => state.reason,
            other => panic!("expected NotBound, got {other:?}"),
        }
    }

    #[test]
    fn decisions_from_claim_pool_and_ledger() {
        let (p, empty, one_two) = (pool(), ledger(""), ledger("1-2"));
        let mut deleting = pool();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        let mut unprotected = pool();
        unprotected.metadata.finalizers = None;

        assert_eq!(reason(&decide(&claim(1, &[]), None)), Reason::PoolNotFound);
        assert_eq!(
            decide(&claim(2, &[1, 2]), Some((&p, Ok(&one_two)))),
            Decision::Show { given: vec![1, 2] }
        );
        assert_eq!(decide(&claim(2, &[]), Some((&p, Ok(&one_two)))), Decision::Show { given: vec![1, 2] });
        assert_eq!(decide(&claim(1, &[7]), Some((&p, Ok(&empty)))), Decision::Revoke);
        assert_eq!(decide(&claim(1, &[]), Some((&p, Ok(&empty)))), Decision::Allocate { shrink_to: None });
        assert_eq!(
            decide(&claim(3, &[1, 2]), Some((&p, Ok(&one_two)))),
            Decision::Allocate { shrink_to: None }
        );
        assert_eq!(
            decide(&claim(1, &[1, 2]), Some((&p, Ok(&one_two)))),
            Decision::Allocate { shrink_to: Some(vec![1]) }
        );
        assert_eq!(reason(&decide(&claim(1, &[]), Some((&deleting, Ok(&empty))))), Reason::PoolDeleting);
        assert_eq!(reason(&decide(&claim(1, &[]), Some((&unprotected, Ok(&empty))))), Reason::PoolNotReady);
        assert_eq!(reason(&decide(&claim(11, &[]), Some((&p, Ok(&empty))))), Reason::PoolTooSmall);
        // A pool being deleted still lets a claim show what the ledger gives it.
        assert_eq!(
            decide(&claim(2, &[1, 2]), Some((&deleting, Ok(&one_two)))),
            Decision::Show { given: vec![1, 2] }
        );
    }

    #[test]
    fn items_of_a_lost_ledger_are_kept_for_the_pool_to_adopt() {
        // The pool is gone: the status keeps its items (None: unchanged).
        let Decision::NotBound { state, items: kept, .. } = decide(&claim(1, &[3]), None) else { panic!() };
        assert_eq!((state.reason, kept), (Reason::PoolNotFound, None));
        assert!(state.message.contains("keeps showing its 1 items"), "{}", state.message);
        // Re-created (another uid): adopted, not revoked.
        let mut recorded = claim(1, &[3]);
        recorded.status.as_mut().unwrap().pool_uid = Some("old-uid".into());
        let (p, empty) = (pool(), ledger(""));
        assert_eq!(decide(&recorded, Some((&p, Ok(&empty)))), Decision::Adopt);
        // Once the ledger holds the item in dispute, the claim says so and keeps it shown.
        let mut disputed = empty.clone();
        disputed.adopt("ns/c", "u1", &items(&[3])).unwrap();
        disputed.adopt("ns/other", "u2", &items(&[3])).unwrap();
        let Decision::NotBound { state, items: shown, .. } = decide(&recorded, Some((&p, Ok(&disputed))))
        else {
            panic!()
        };
        assert_eq!((state.reason, shown), (Reason::ItemDisputed, None));
        assert!(state.message.contains("1003 (also shown by claim ns/other)"), "{}", state.message);
    }

    #[test]
    fn a_corrupt_ledger_leaves_bound_claims_alone_and_tells_waiting_ones() {
        let p = pool();
        let corrupt =
            LedgerError::Duplicate { item: "1001".into(), first: "a/x".into(), second: "b/y".into() };
        let waiting_claim = decide(&claim(1, &[]), Some((&p, Err(&corrupt))));
        assert_eq!(reason(&waiting_claim), Reason::LedgerCorrupt);
        assert!(matches!(
            decide(&claim(1, &[1]), Some((&p, Err(&corrupt)))),
            Decision::Leave { recheck: Recheck::After(CLAIM_RESYNC), .. }
        ));
    }

    #[test]
    fn a_waiting_claim_is_told_why() {
        let (c, p) = (claim(3, &[]), pool());
        let unavailable = Failure { message: "connection refused".into(), lock_unavailable: true };
        let other_failure = Failure { message: "conflict".into(), lock_unavailable: false };
        let why = |failure, outcome| waiting(&c, &p, failure, outcome).map(|(s, _)| s.reason);
        assert_eq!(why(Some(&unavailable), None), Some(Reason::LockUnavailable));
        assert_eq!(why(Some(&other_failure), None), None);
        let exhausted = Outcome::Refused(AllocError::Exhausted { needed: 3, free: 1 });
        assert_eq!(why(None, Some(&exhausted)), Some(Reason::PoolExhausted));
        let behind = Outcome::Behind { older: "ns/a".into() };
        assert_eq!(why(None, Some(&behind)), Some(Reason::PoolExhausted));
        let too_small = Outcome::Refused(AllocError::TooSmall { count: 30, capacity: 10 });
        assert_eq!(why(None, Some(&too_small)), Some(Reason::PoolTooSmall));
        assert_eq!(why(None, Some(&Outcome::Unchanged)), None);
        assert_eq!(why(None, None), None);
        let said =
            |outcome: Outcome| waiting(&c, &p, None, Some(&outcome)).map(|(s, _)| (s.reason, s.message));
        let (reason, message) = said(Outcome::NamespaceNotAllowed).expect("said");
        assert_eq!(reason, Reason::NamespaceNotAllowed);
        assert!(
            message.contains("namespace ns may not claim from pool p") && message.contains("gets no items"),
            "{message}"
        );
        let reached = Reached::Items { limit: 5, held: 4, more: 3 };
        let (reason, message) = said(Outcome::NamespaceLimit(reached)).expect("said");
        assert_eq!(reason, Reason::NamespaceLimitReached);
        assert!(
            message.contains("holds 4 items") && message.contains("3 more") && message.contains("limit of 5"),
            "{message}"
        );
        let (_, message) =
            said(Outcome::NamespaceLimit(Reached::Claims { limit: 2, held: 2 })).expect("said");
        assert!(
            message.contains("2 claims of namespace ns") && message.contains("maxClaimsPerNamespace"),
            "{message}"
        );
        // Another namespace's claim is never named.
        let taken =
            |holder: &str| Outcome::Refused(AllocError::Taken { item: "7".into(), holder: holder.into() });
        let (_, message) = said(taken("ns/mine")).expect("said");
        assert!(message.contains("held by claim ns/mine"), "{message}");
        let (_, message) = said(taken("other/theirs")).expect("said");
        assert!(
            message.contains("held by a claim of another namespace") && !message.contains("theirs"),
            "{message}"
        );
    }

    #[test]
    fn a_claim_starves_once_it_waited_for_items_past_the_bound() {
        let at = |seconds: i64| jiff::Timestamp::from_second(seconds).unwrap();
        let waiting = |reason: Reason, since: i64| {
            let mut c = claim(3, &[]);
            let mut cond = condition(BOUND, false, reason, String::new(), None);
            cond.last_transition_time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(since));
            c.status = Some(ClaimStatus { conditions: vec![cond], ..ClaimStatus::default() });
            c
        };
        let bound = Duration::from_secs(300);
        assert!(waited_past(&waiting(Reason::PoolExhausted, 1_000), bound, at(1_301)));
        assert!(!waited_past(&waiting(Reason::PoolExhausted, 1_000), bound, at(1_299)));
        assert!(
            !waited_past(&waiting(Reason::LockUnavailable, 1_000), bound, at(9_999)),
            "not waiting for items"
        );
        assert!(!waited_past(&claim(3, &[]), bound, at(9_999)), "never told to wait");
    }

    #[test]
    fn a_status_ahead_of_the_ledger_is_revoked_first() {
        // The ledger gives 0 and 1; the status shows 0, 1 and 2 (a restored or shrunk pool).
        let step = next_step(&items(&[0, 1, 2]), &[0, 1], &items(&[0, 1]), 3, None);
        assert_eq!(step, Step::Revoke { keep: vec![0, 1] });
        // Nothing given at all (an entry of another uid, a pool re-created empty).
        assert_eq!(next_step(&items(&[4]), &[], &[], 1, None), Step::Revoke { keep: vec![] });
    }

    #[test]
    fn a_status_behind_the_ledger_is_shown_or_allocated() {
        assert_eq!(next_step(&[], &[0, 1], &items(&[0, 1]), 2, None), Step::Show);
        assert_eq!(next_step(&items(&[0]), &[0, 1], &items(&[0, 1]), 2, None), Step::Show);
        assert_eq!(next_step(&items(&[0, 1]), &[0, 1], &items(&[0, 1]), 3, None), Step::Allocate);
        assert_eq!(next_step(&items(&[0, 1]), &[0, 1], &items(&[0, 1]), 1, None), Step::Allocate);
        assert_eq!(next_step(&[], &[], &[], 1, None), Step::Allocate);
    }
}
