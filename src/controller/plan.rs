//! What one hold of a pool's lock does for all of the pool's claims at once, as a pure
//! function: the ledger and what the claims want in, the next ledger and each claim's
//! outcome out. No I/O, so fairness and the status-first rule are unit-tested here.

use std::collections::BTreeMap;

use crate::ledger::{AllocError, Change, Ledger};

/// What a claim of the pool wants, as the claim cache shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// `namespace/name`, the claim's key in the ledger.
    pub key: String,
    pub uid: String,
    pub count: u32,
    /// The items it names, if it names them (then exactly those, by value).
    pub items: Option<Vec<String>>,
    /// Being deleted: its items go back.
    pub deleting: bool,
    /// Its status shows nothing that the change would take away (a shrink or a release
    /// writes the status first, and the ledger follows).
    pub status_ready: bool,
    /// It has waited for items longer than the pool's bound: it now holds up every namespace.
    pub starving: bool,
}

impl Want {
    /// The claim's namespace, from its key.
    pub fn namespace(&self) -> &str {
        self.key.split_once('/').map_or("", |(ns, _)| ns)
    }
}

/// What the plan does for one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The ledger already gives what the claim wants.
    Unchanged,
    /// Items added or taken back (a release takes back every item).
    Changed(Change),
    /// A shrink or a release waits until the claim's status lets go of the items first.
    StatusFirst,
    /// The ledger entry of this name belongs to another uid: only a read of the live claim
    /// can tell which one is stale.
    OtherUid,
    /// Cannot be given now (too small, exhausted, too many claims).
    Refused(AllocError),
    /// Waits behind an older claim of its own namespace that does not fit yet, so that a
    /// large claim is not starved by a stream of small ones.
    Behind { older: String },
    /// Waits behind a claim (of any namespace) that has waited longer than the pool's bound:
    /// every namespace waits until it fits, so that it is not starved by other namespaces.
    BehindLongWait,
}

/// The ledger after the plan, and each claim's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ledger: Ledger,
    pub outcomes: BTreeMap<String, Outcome>,
}

impl Plan {
    /// Whether the ledger must be written.
    pub fn changes(&self) -> bool {
        self.outcomes.values().any(|o| matches!(o, Outcome::Changed(_)))
    }

    pub fn changed(&self) -> impl Iterator<Item = (&str, &Change)> {
        self.outcomes.iter().filter_map(|(key, o)| match o {
            Outcome::Changed(change) => Some((key.as_str(), change)),
            _ => None,
        })
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &str> {
        self.outcomes.iter().filter(|(_, o)| **o == Outcome::OtherUid).map(|(key, _)| key.as_str())
    }
}

/// Plans one hold of the lock. `wants` come oldest first: items go to the oldest claims
/// first, and a claim that does not fit makes the younger ones of its namespace wait behind
/// it (other namespaces go on: one team's large growth stalls no other team); one that has
/// waited past the pool's bound makes every claim wait. Releases and shrinks go first, so
/// that what they free serves the growths of the same hold.
/// `grow`: whether the pool may give out items at all (not while it is being deleted or
/// before its deletion protection is set); releases and shrinks go on regardless.
pub fn plan(ledger: &Ledger, wants: &[Want], grow: bool) -> Plan {
    let mut next = ledger.clone();
    let mut outcomes = BTreeMap::new();
    let held_by_other = |key: &str, uid: &str| ledger.entry(key).is_some_and(|e| e.uid != uid);

    for want in wants {
        let held = ledger.given(&want.key, &want.uid).len() as u32;
        let outcome = if held_by_other(&want.key, &want.uid) {
            Outcome::OtherUid
        } else if !want.deleting && !ledger.disputed_with(&want.key, &want.uid).is_empty() {
            // A party to a dispute neither grows nor shrinks until the dispute is settled.
            Outcome::Unchanged
        } else if want.deleting {
            match (held, want.status_ready) {
                (0, _) => Outcome::Unchanged,
                (_, false) => Outcome::StatusFirst,
                (_, true) => {
                    let freed = next.remove_uid(&want.key, &want.uid);
                    Outcome::Changed(Change { added: Vec::new(), removed: freed })
                }
            }
        } else if let Some(wanted) = &want.items {
            let given = ledger.given(&want.key, &want.uid);
            let kept = ledger.keeps(given, want.count, Some(wanted));
            if kept.len() < given.len() {
                // Items it no longer names go first, status first; what it lacks comes next.
                if want.status_ready {
                    let_go(&mut next, want, &ledger.describe(&kept).0)
                } else {
                    Outcome::StatusFirst
                }
            } else if kept.len() == wanted.len() {
                Outcome::Unchanged
            } else {
                continue; // a growth: below, in age order
            }
        } else if held == want.count {
            Outcome::Unchanged
        } else if held > want.count {
            if want.status_ready { apply(&mut next, want) } else { Outcome::StatusFirst }
        } else {
            continue; // a growth: below, in age order
        };
        outcomes.insert(want.key.clone(), outcome);
    }

    // Claims that name their items come first: they can take nothing else, and after a
    // restore every claim asks at once, so one that only counts must not take a named item.
    let mut growths: Vec<&Want> = wants.iter().filter(|w| !outcomes.contains_key(&w.key)).collect();
    growths.sort_by_key(|w| w.items.is_none());
    let mut behind: BTreeMap<&str, &str> = BTreeMap::new();
    let mut everyone_waits = false;
    for want in growths {
        let outcome = match behind.get(want.namespace()) {
            _ if !grow => Outcome::Unchanged,
            _ if everyone_waits => Outcome::BehindLongWait,
            Some(older) => Outcome::Behind { older: older.to_string() },
            None => match apply(&mut next, want) {
                refused @ Outcome::Refused(
                    AllocError::Exhausted { .. } | AllocError::TooManyClaims { .. },
                ) => {
                    everyone_waits |= want.starving;
                    behind.insert(want.namespace(), &want.key);
                    refused
                }
                other => other,
            },
        };
        outcomes.insert(want.key.clone(), outcome);
    }
    Plan { ledger: next, outcomes }
}

fn apply(ledger: &mut Ledger, want: &Want) -> Outcome {
    let result = match &want.items {
        Some(wanted) => ledger.assign_items(&want.key, &want.uid, wanted),
        None => ledger.assign(&want.key, &want.uid, want.count),
    };
    match result {
        Ok(change) => Outcome::Changed(change),
        Err(e) => Outcome::Refused(e),
    }
}

/// Takes back the items a claim no longer names, keeping `kept`.
fn let_go(ledger: &mut Ledger, want: &Want, kept: &[String]) -> Outcome {
    match ledger.assign_items(&want.key, &want.uid, kept) {
        Ok(change) => Outcome::Changed(change),
        Err(e) => Outcome::Refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(key: &str, count: u32) -> Want {
        Want {
            key: key.into(),
            uid: format!("uid-{key}"),
            count,
            items: None,
            deleting: false,
            status_ready: true,
            starving: false,
        }
    }

    fn given(plan: &Plan, key: &str) -> Vec<u32> {
        plan.ledger.given(key, &format!("uid-{key}")).to_vec()
    }

    #[test]
    fn one_hold_serves_every_claim_oldest_first() {
        let wants = [want("ns/a", 2), want("ns/b", 1), want("ns/c", 3)];
        let plan = plan(&Ledger::empty(10), &wants, true);
        assert!(plan.changes());
        assert_eq!(given(&plan, "ns/a"), vec![0, 1]);
        assert_eq!(given(&plan, "ns/b"), vec![2]);
        assert_eq!(given(&plan, "ns/c"), vec![3, 4, 5]);
        assert_eq!(plan.changed().count(), 3);
        // Planned again on its own result, nothing is left to do.
        let again = super::plan(&plan.ledger, &wants, true);
        assert!(!again.changes());
        assert!(again.outcomes.values().all(|o| *o == Outcome::Unchanged));
    }

    #[test]
    fn releases_and_shrinks_free_items_for_growths_of_the_same_hold() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "uid-ns/a", 2).unwrap();
        let (ledger, _) = ledger.allocate("ns/b", "uid-ns/b", 2).unwrap();
        let gone = Want { deleting: true, ..want("ns/a", 2) };
        let shrink = want("ns/b", 1);
        let plan = plan(&ledger, &[want("ns/c", 3), gone, shrink], true);
        assert_eq!(given(&plan, "ns/a"), Vec::<u32>::new());
        assert_eq!(given(&plan, "ns/b"), vec![2]);
        assert_eq!(given(&plan, "ns/c"), vec![0, 1, 3]);
    }

    #[test]
    fn a_shrink_or_release_waits_for_the_status_to_let_go_first() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "uid-ns/a", 3).unwrap();
        let (ledger, _) = ledger.allocate("ns/b", "uid-ns/b", 1).unwrap();
        let shrink = Want { status_ready: false, ..want("ns/a", 1) };
        let release = Want { deleting: true, status_ready: false, ..want("ns/b", 1) };
        let plan = plan(&ledger, &[shrink, release, want("ns/c", 1)], true);
        assert_eq!(plan.outcomes["ns/a"], Outcome::StatusFirst);
        assert_eq!(plan.outcomes["ns/b"], Outcome::StatusFirst);
        assert_eq!(given(&plan, "ns/a"), vec![0, 1, 2]);
        assert_eq!(given(&plan, "ns/b"), vec![3]);
        assert!(matches!(plan.outcomes["ns/c"], Outcome::Refused(AllocError::Exhausted { .. })));
    }

    #[test]
    fn a_claim_that_does_not_fit_is_not_starved_by_younger_ones() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/old", "uid-ns/old", 2).unwrap();
        let plan = plan(&ledger, &[want("ns/big", 3), want("ns/small", 1)], true);
        assert!(matches!(plan.outcomes["ns/big"], Outcome::Refused(AllocError::Exhausted { .. })));
        assert_eq!(plan.outcomes["ns/small"], Outcome::Behind { older: "ns/big".into() });
        assert!(!plan.changes());
        // A claim larger than the whole pool can never fit: it waits behind nobody's back.
        let plan = super::plan(&ledger, &[want("ns/huge", 9), want("ns/small", 1)], true);
        assert!(matches!(plan.outcomes["ns/huge"], Outcome::Refused(AllocError::TooSmall { .. })));
        assert_eq!(given(&plan, "ns/small"), vec![2]);
    }

    #[test]
    fn a_claim_that_does_not_fit_holds_up_its_own_namespace_only() {
        let (ledger, _) = Ledger::empty(10).allocate("a/filler", "uid-a/filler", 4).unwrap();
        // Oldest first: a's big growth, then a younger claim of a, then two of b.
        let wants = [want("a/big", 8), want("a/young", 1), want("b/one", 2), want("b/two", 3)];
        let planned = plan(&ledger, &wants, true);
        assert!(matches!(planned.outcomes["a/big"], Outcome::Refused(AllocError::Exhausted { .. })));
        assert_eq!(planned.outcomes["a/young"], Outcome::Behind { older: "a/big".into() });
        assert_eq!(given(&planned, "b/one"), [4, 5]);
        assert_eq!(given(&planned, "b/two"), [6, 7, 8]);
    }

    #[test]
    fn a_claim_that_waited_past_the_bound_holds_up_every_namespace_until_it_fits() {
        let (ledger, _) = Ledger::empty(10).allocate("a/filler", "uid-a/filler", 4).unwrap();
        let starving = Want { starving: true, ..want("a/big", 8) };
        let wants = [starving.clone(), want("b/one", 2), want("c/two", 1)];
        let planned = plan(&ledger, &wants, true);
        assert!(matches!(planned.outcomes["a/big"], Outcome::Refused(AllocError::Exhausted { .. })));
        assert_eq!(planned.outcomes["b/one"], Outcome::BehindLongWait);
        assert_eq!(planned.outcomes["c/two"], Outcome::BehindLongWait);
        assert!(!planned.changes(), "nothing given while it waits");
        // Once it fits (the filler went), it is served first.
        let gone = Want { deleting: true, ..want("a/filler", 4) };
        let planned = plan(&ledger, &[gone, starving, want("b/one", 2)], true);
        assert_eq!(given(&planned, "a/big").len(), 8);
        assert_eq!(given(&planned, "b/one"), [8, 9]);
        // A claim that waited long but fits holds up nobody.
        let fits = Want { starving: true, ..want("a/small", 1) };
        let planned = plan(&ledger, &[fits, want("b/one", 2)], true);
        assert_eq!((given(&planned, "a/small").len(), given(&planned, "b/one").len()), (1, 2));
    }

    #[test]
    fn an_entry_of_another_uid_is_left_for_a_read_of_the_live_claim() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "earlier", 2).unwrap();
        let plan = plan(&ledger, &[want("ns/a", 1), want("ns/b", 1)], true);
        assert_eq!(plan.outcomes["ns/a"], Outcome::OtherUid);
        assert_eq!(plan.conflicts().collect::<Vec<_>>(), vec!["ns/a"]);
        assert_eq!(plan.ledger.given("ns/a", "earlier"), &[0, 1]);
        assert_eq!(given(&plan, "ns/b"), vec![2]);
    }

    #[test]
    fn a_pool_that_may_not_grow_still_takes_items_back() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "uid-ns/a", 2).unwrap();
        let gone = Want { deleting: true, ..want("ns/a", 2) };
        let plan = plan(&ledger, &[gone, want("ns/b", 1)], false);
        assert_eq!(plan.outcomes["ns/b"], Outcome::Unchanged);
        assert_eq!(plan.ledger.allocated(), 0);
    }

    #[test]
    fn a_claim_naming_a_taken_item_waits_without_holding_up_the_others() {
        let ledger = plan(&Ledger::empty(4), &[want("ns/a", 2)], true).ledger; // 0, 1
        let named = |key: &str, items: &[&str]| Want {
            items: Some(items.iter().map(|s| s.to_string()).collect()),
            ..want(key, items.len() as u32)
        };
        let planned = plan(&ledger, &[named("ns/b", &["1"]), named("ns/c", &["3"]), want("ns/d", 1)], true);
        assert_eq!(
            planned.outcomes["ns/b"],
            Outcome::Refused(AllocError::Taken { item: "1".into(), holder: "ns/a".into() })
        );
        assert_eq!(given(&planned, "ns/c"), [3]);
        assert_eq!(given(&planned, "ns/d"), [2], "not behind the claim that waits for a taken item");
        // Naming another item: the old one goes back (status first), the new one comes after.
        let moved = named("ns/c", &["2"]);
        let next = plan(&planned.ledger, &[Want { status_ready: false, ..moved.clone() }], true);
        assert_eq!(next.outcomes["ns/c"], Outcome::StatusFirst);
        let next = plan(&planned.ledger, std::slice::from_ref(&moved), true);
        assert!(given(&next, "ns/c").is_empty(), "let go of 3 first");
        let next = plan(&next.ledger, &[moved], true);
        assert_eq!(given(&next, "ns/c").len(), 0, "2 is still d's");
    }

    #[test]
    fn a_party_to_a_dispute_neither_grows_nor_shrinks_but_may_go() {
        let mut ledger = Ledger::empty(4);
        ledger.adopt("ns/a", "uid-ns/a", &["1".into(), "2".into()]).unwrap();
        ledger.adopt("ns/b", "uid-ns/b", &["2".into()]).unwrap();
        let planned = plan(&ledger, &[want("ns/a", 3), want("ns/b", 1), want("ns/c", 3)], true);
        assert_eq!(planned.outcomes["ns/a"], Outcome::Unchanged);
        assert_eq!(planned.outcomes["ns/b"], Outcome::Unchanged);
        assert!(matches!(
            planned.outcomes["ns/c"],
            Outcome::Refused(AllocError::Exhausted { needed: 3, free: 2 })
        ));
        let gone = Want { deleting: true, ..want("ns/a", 3) };
        let planned = plan(&ledger, &[gone], true);
        assert_eq!(given(&planned, "ns/a"), Vec::<u32>::new());
    }

    #[test]
    fn a_claim_naming_its_items_is_served_before_older_claims_that_only_count() {
        let named = Want { items: Some(vec!["0".into()]), ..want("ns/b", 1) };
        let planned = plan(&Ledger::empty(2), &[want("ns/a", 2), named], true);
        assert_eq!(given(&planned, "ns/b"), [0]);
        assert!(matches!(planned.outcomes["ns/a"], Outcome::Refused(AllocError::Exhausted { .. })));
    }
}
