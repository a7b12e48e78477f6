//! When a pool lost its ledger, which claims' items it adopts and which disputes it can
//! settle: pure rules over the claims and the ledger, used by the claims (to ask for a
//! hold instead of giving items back) and by the hold (to re-read only those claims).

use std::collections::HashSet;

use kube::ResourceExt;

use crate::api::{Claim, Party, Pool};
use crate::ledger::Ledger;

/// Whether `claim` shows items of a ledger `pool` lost that the ledger neither gives it nor
/// holds in dispute: the next hold adopts them before it gives anything out.
pub fn awaits_adoption(claim: &Claim, pool: &Pool, ledger: &Ledger) -> bool {
    if !claim.shows_lost_ledger(pool) {
        return false;
    }
    let (key, uid) = (claim.ledger_key(), claim.uid().unwrap_or_default());
    let given: HashSet<String> = ledger.describe(ledger.given(&key, &uid)).0.into_iter().collect();
    let disputed = ledger.disputed_with(&key, &uid);
    claim.shown_items().iter().any(|i| ledger.records(i) && !given.contains(i) && !disputed.contains(i))
}

/// Whether `claim` is `party` and still shows `item`.
pub fn still_shows(claim: Option<&Claim>, party: &Party, item: &str) -> bool {
    claim.is_some_and(|c| {
        c.ledger_key() == party.claim
            && c.uid().as_deref() == Some(party.uid.as_str())
            && c.shown_items().iter().any(|i| i == item)
    })
}

/// The disputed items that some party no longer shows, as `claims` (found by key) show
/// them: a hold can settle those.
pub fn settleable<'a>(ledger: &'a Ledger, claim: impl Fn(&str) -> Option<&'a Claim>) -> Vec<String> {
    ledger
        .disputes()
        .filter(|(item, parties)| parties.iter().any(|p| !still_shows(claim(&p.claim), p, item)))
        .map(|(item, _)| item)
        .collect()
}

/// Why a party to a dispute is not bound, naming the other claims that show its items.
pub fn dispute_message(ledger: &Ledger, claim: &Claim) -> Option<String> {
    let (key, uid) = (claim.ledger_key(), claim.uid().unwrap_or_default());
    let me = Party::new(&key, &uid);
    let disputes: Vec<String> = ledger
        .disputes()
        .filter(|(_, parties)| parties.contains(&me))
        .map(|(item, parties)| {
            let others: Vec<String> =
                parties.iter().filter(|p| **p != me).map(|p| claim.refer_to(&p.claim)).collect();
            format!("{item} (also shown by {})", others.join(", "))
        })
        .collect();
    (!disputes.is_empty()).then(|| {
        format!(
            "pool {} lost its ledger and two claims show the same item: {}; neither keeps it, and no other claim gets it, until all but one let go (delete the claim that should not hold it, or remove the item from its status)",
            claim.spec.pool_ref,
            disputes.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BOUND, ClaimSpec, ClaimStatus, PoolSpec, PoolStatus, Reason, condition};

    fn pool(uid: &str, fenced: bool) -> Pool {
        let mut pool = Pool::new("p", PoolSpec::of_range(100, 109));
        pool.metadata.uid = Some(uid.into());
        if fenced {
            pool.status =
                Some(PoolStatus { fencing_token: Some(7), lock_epoch: Some(1), ..PoolStatus::default() });
        }
        pool
    }

    fn claim(name: &str, shown: &[&str], pool_uid: Option<&str>) -> Claim {
        let mut claim =
            Claim::new(name, ClaimSpec { pool_ref: "p".into(), count: shown.len() as i32, items: None });
        claim.metadata.namespace = Some("ns".into());
        claim.metadata.uid = Some(format!("u-{name}"));
        claim.status = Some(ClaimStatus {
            items: shown.iter().map(|s| s.to_string()).collect(),
            pool_uid: pool_uid.map(String::from),
            conditions: vec![condition(BOUND, true, Reason::Allocated, String::new(), None)],
            ..ClaimStatus::default()
        });
        claim
    }

    #[test]
    fn only_items_of_another_pool_incarnation_or_of_a_wiped_status_are_adopted() {
        let empty = Ledger::new(crate::ledger::Items::Range { start: 100, len: 10 });
        let recreated = pool("new", true);
        assert!(awaits_adoption(&claim("a", &["101"], Some("old")), &recreated, &empty));
        // Recorded by this very pool, whose ledger is intact: a status ahead of it is revoked.
        assert!(!awaits_adoption(&claim("a", &["101"], Some("new")), &recreated, &empty));
        // Written before claims recorded the pool's uid: only a status without fence fields adopts.
        assert!(!awaits_adoption(&claim("a", &["101"], None), &recreated, &empty));
        assert!(awaits_adoption(&claim("a", &["101"], None), &pool("new", false), &empty));
        // Once adopted (or disputed), nothing is left to adopt.
        let mut ledger = empty.clone();
        ledger.adopt("ns/a", "u-a", &["101".to_string()]).unwrap();
        assert!(!awaits_adoption(&claim("a", &["101"], Some("old")), &recreated, &ledger));
        ledger.adopt("ns/b", "u-b", &["101".to_string()]).unwrap();
        assert!(!awaits_adoption(&claim("b", &["101"], Some("old")), &recreated, &ledger));
        // Nothing shown, nothing to adopt.
        assert!(!awaits_adoption(&claim("c", &[], Some("old")), &recreated, &empty));
    }

    #[test]
    fn a_dispute_is_settleable_once_a_party_no_longer_shows_the_item() {
        let mut ledger = Ledger::new(crate::ledger::Items::Range { start: 100, len: 10 });
        ledger.adopt("ns/a", "u-a", &["101".to_string()]).unwrap();
        ledger.adopt("ns/b", "u-b", &["101".to_string()]).unwrap();
        let (a, b) = (claim("a", &["101"], Some("old")), claim("b", &["101"], Some("old")));
        let both = |key: &str| [&a, &b].into_iter().find(|c| c.ledger_key() == key);
        assert!(settleable(&ledger, both).is_empty());
        let message = dispute_message(&ledger, &a).expect("a message");
        assert!(message.contains("101 (also shown by claim ns/b)"), "{message}");
        let b_let_go = claim("b", &[], Some("old"));
        let one = |key: &str| [&a, &b_let_go].into_iter().find(|c| c.ledger_key() == key);
        assert_eq!(settleable(&ledger, one), ["101"]);
        let gone = |key: &str| [&a].into_iter().find(|c| c.ledger_key() == key);
        assert_eq!(settleable(&ledger, gone), ["101"]);
    }
}
