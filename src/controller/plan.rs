//! What one hold of a pool's lock does for all of the pool's claims at once, as a pure
//! function: the ledger and what the claims want in, the next ledger and each claim's
//! outcome out. No I/O, so fairness and the status-first rule are unit-tested here.

use std::collections::BTreeMap;

use crate::ledger::{AllocError, Change, Ledger, namespace_of};

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
    /// Its namespace may claim from the pool (spec.allowedNamespaces). A claim of a namespace
    /// no longer allowed keeps what it holds and gets nothing more.
    pub allowed: bool,
}

impl Want {
    /// The claim's namespace, from its key.
    pub fn namespace(&self) -> &str {
        namespace_of(&self.key)
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
    /// Its namespace may not claim from the pool: it keeps what it holds, gets nothing more.
    NamespaceNotAllowed,
    /// The growth would take its namespace past a limit of the pool; younger claims of the
    /// namespace wait behind it.
    NamespaceLimit(Reached),
}

/// A per-namespace limit that a growth would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The namespace's claims hold `held` items; the growth wants `more`; at most `limit`.
    Items { limit: u32, held: u32, more: u32 },
    /// `held` claims of the namespace hold items; at most `limit`.
    Claims { limit: u32, held: u32 },
}

/// What the pool allows a hold to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rules {
    /// Whether the pool gives out items at all (not while it is being deleted or before its
    /// deletion protection is set); releases and shrinks go on regardless.
    pub grow: bool,
    /// Most items the claims of one namespace hold together.
    pub max_items: Option<u32>,
    /// Most claims of one namespace that hold items.
    pub max_claims: Option<u32>,
}

impl Rules {
    pub fn of(pool: &crate::api::Pool) -> Self {
        let (max_items, max_claims) = pool.spec.limits_in_force();
        Self { grow: pool.may_grow(), max_items, max_claims }
    }
}

/// The ledger after the plan, and each claim's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ledger: Ledger,
    pub outcomes: BTreeMap<String, Outcome>,
}

impl Outcome {
    /// The claim gets nothing from the plan and its status says why (it waits). Every
    /// variant is named: a new one must say whether a hold tells the claim about it.
    pub fn keeps_waiting(&self) -> bool {
        match self {
            Outcome::Refused(_)
            | Outcome::Behind { .. }
            | Outcome::BehindLongWait
            | Outcome::NamespaceNotAllowed
            | Outcome::NamespaceLimit(_) => true,
            Outcome::Unchanged | Outcome::Changed(_) | Outcome::StatusFirst | Outcome::OtherUid => false,
        }
    }
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
/// A claim of a namespace the pool does not admit gets nothing more; one whose growth would
/// pass its namespace's limit waits, and so do the younger claims of its namespace.
pub fn plan(ledger: &Ledger, wants: &[Want], rules: Rules) -> Plan {
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
    let mut usage = Usage::of(&next, rules);
    for want in growths {
        let outcome = match behind.get(want.namespace()) {
            _ if !rules.grow => Outcome::Unchanged,
            _ if !want.allowed => Outcome::NamespaceNotAllowed,
            _ if everyone_waits => Outcome::BehindLongWait,
            Some(older) => Outcome::Behind { older: older.to_string() },
            None => match usage.reached(&next, want, rules) {
                Some(reached) => {
                    behind.insert(want.namespace(), &want.key);
                    Outcome::NamespaceLimit(reached)
                }
                None => match (next.given(&want.key, &want.uid).len(), apply(&mut next, want)) {
                    (
                        _,
                        refused @ Outcome::Refused(
                            AllocError::Exhausted { .. } | AllocError::TooManyClaims { .. },
                        ),
                    ) => {
                        everyone_waits |= want.starving;
                        behind.insert(want.namespace(), &want.key);
                        refused
                    }
                    (before, Outcome::Changed(change)) => {
                        usage.grew(want, before, change.added.len());
                        Outcome::Changed(change)
                    }
                    (_, other) => other,
                },
            },
        };
        outcomes.insert(want.key.clone(), outcome);
    }
    Plan { ledger: next, outcomes }
}

/// Per namespace: the items its claims hold and how many of its claims hold any, kept only
/// while the pool has limits.
#[derive(Default)]
struct Usage(Option<BTreeMap<String, (u32, u32)>>);

impl Usage {
    fn of(ledger: &Ledger, rules: Rules) -> Self {
        if rules.max_items.is_none() && rules.max_claims.is_none() {
            return Self(None);
        }
        Self(Some(ledger.namespace_usage()))
    }

    /// The limit that `want`'s growth would pass, if any.
    fn reached(&self, ledger: &Ledger, want: &Want, rules: Rules) -> Option<Reached> {
        let usage = self.0.as_ref()?;
        let (items, claims) = usage.get(want.namespace()).copied().unwrap_or_default();
        let given = ledger.given(&want.key, &want.uid).len() as u32;
        let wanted = want.items.as_ref().map_or(want.count, |items| items.len() as u32);
        let more = wanted.saturating_sub(given);
        if let Some(limit) = rules.max_claims
            && given == 0
            && claims >= limit
        {
            return Some(Reached::Claims { limit, held: claims });
        }
        match rules.max_items {
            Some(limit) if items + more > limit => Some(Reached::Items { limit, held: items, more }),
            _ => None,
        }
    }

    /// Counts a growth of `added` items of a claim that held `before`.
    fn grew(&mut self, want: &Want, before: usize, added: usize) {
        let Some(usage) = self.0.as_mut() else { return };
        let used = usage.entry(want.namespace().to_string()).or_default();
        used.0 += added as u32;
        used.1 += u32::from(before == 0 && added > 0);
    }
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
            allowed: true,
        }
    }

    const OPEN: Rules = Rules { grow: true, max_items: None, max_claims: None };
    const CLOSED: Rules = Rules { grow: false, max_items: None, max_claims: None };

    fn given(plan: &Plan, key: &str) -> Vec<u32> {
        plan.ledger.given(key, &format!("uid-{key}")).to_vec()
    }

    #[test]
    fn one_hold_serves_every_claim_oldest_first() {
        let wants = [want("ns/a", 2), want("ns/b", 1), want("ns/c", 3)];
        let plan = plan(&Ledger::empty(10), &wants, OPEN);
        assert!(plan.changes());
        assert_eq!(given(&plan, "ns/a"), vec![0, 1]);
        assert_eq!(given(&plan, "ns/b"), vec![2]);
        assert_eq!(given(&plan, "ns/c"), vec![3, 4, 5]);
        assert_eq!(plan.changed().count(), 3);
        // Planned again on its own result, nothing is left to do.
        let again = super::plan(&plan.ledger, &wants, OPEN);
        assert!(!again.changes());
        assert!(again.outcomes.values().all(|o| *o == Outcome::Unchanged));
    }

    #[test]
    fn releases_and_shrinks_free_items_for_growths_of_the_same_hold() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "uid-ns/a", 2).unwrap();
        let (ledger, _) = ledger.allocate("ns/b", "uid-ns/b", 2).unwrap();
        let gone = Want { deleting: true, ..want("ns/a", 2) };
        let shrink = want("ns/b", 1);
        let plan = plan(&ledger, &[want("ns/c", 3), gone, shrink], OPEN);
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
        let plan = plan(&ledger, &[shrink, release, want("ns/c", 1)], OPEN);
        assert_eq!(plan.outcomes["ns/a"], Outcome::StatusFirst);
        assert_eq!(plan.outcomes["ns/b"], Outcome::StatusFirst);
        assert_eq!(given(&plan, "ns/a"), vec![0, 1, 2]);
        assert_eq!(given(&plan, "ns/b"), vec![3]);
        assert!(matches!(plan.outcomes["ns/c"], Outcome::Refused(AllocError::Exhausted { .. })));
    }

    #[test]
    fn a_claim_that_does_not_fit_is_not_starved_by_younger_ones() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/old", "uid-ns/old", 2).unwrap();
        let plan = plan(&ledger, &[want("ns/big", 3), want("ns/small", 1)], OPEN);
        assert!(matches!(plan.outcomes["ns/big"], Outcome::Refused(AllocError::Exhausted { .. })));
        assert_eq!(plan.outcomes["ns/small"], Outcome::Behind { older: "ns/big".into() });
        assert!(!plan.changes());
        // A claim larger than the whole pool can never fit: it waits behind nobody's back.
        let plan = super::plan(&ledger, &[want("ns/huge", 9), want("ns/small", 1)], OPEN);
        assert!(matches!(plan.outcomes["ns/huge"], Outcome::Refused(AllocError::TooSmall { .. })));
        assert_eq!(given(&plan, "ns/small"), vec![2]);
    }

    #[test]
    fn a_claim_that_does_not_fit_holds_up_its_own_namespace_only() {
        let (ledger, _) = Ledger::empty(10).allocate("a/filler", "uid-a/filler", 4).unwrap();
        // Oldest first: a's big growth, then a younger claim of a, then two of b.
        let wants = [want("a/big", 8), want("a/young", 1), want("b/one", 2), want("b/two", 3)];
        let planned = plan(&ledger, &wants, OPEN);
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
        let planned = plan(&ledger, &wants, OPEN);
        assert!(matches!(planned.outcomes["a/big"], Outcome::Refused(AllocError::Exhausted { .. })));
        assert_eq!(planned.outcomes["b/one"], Outcome::BehindLongWait);
        assert_eq!(planned.outcomes["c/two"], Outcome::BehindLongWait);
        assert!(!planned.changes(), "nothing given while it waits");
        // Once it fits (the filler went), it is served first.
        let gone = Want { deleting: true, ..want("a/filler", 4) };
        let planned = plan(&ledger, &[gone, starving, want("b/one", 2)], OPEN);
        assert_eq!(given(&planned, "a/big").len(), 8);
        assert_eq!(given(&planned, "b/one"), [8, 9]);
        // A claim that waited long but fits holds up nobody.
        let fits = Want { starving: true, ..want("a/small", 1) };
        let planned = plan(&ledger, &[fits, want("b/one", 2)], OPEN);
        assert_eq!((given(&planned, "a/small").len(), given(&planned, "b/one").len()), (1, 2));
    }

    #[test]
    fn an_entry_of_another_uid_is_left_for_a_read_of_the_live_claim() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "earlier", 2).unwrap();
        let plan = plan(&ledger, &[want("ns/a", 1), want("ns/b", 1)], OPEN);
        assert_eq!(plan.outcomes["ns/a"], Outcome::OtherUid);
        assert_eq!(plan.conflicts().collect::<Vec<_>>(), vec!["ns/a"]);
        assert_eq!(plan.ledger.given("ns/a", "earlier"), &[0, 1]);
        assert_eq!(given(&plan, "ns/b"), vec![2]);
    }

    #[test]
    fn a_pool_that_may_not_grow_still_takes_items_back() {
        let (ledger, _) = Ledger::empty(4).allocate("ns/a", "uid-ns/a", 2).unwrap();
        let gone = Want { deleting: true, ..want("ns/a", 2) };
        let plan = plan(&ledger, &[gone, want("ns/b", 1)], CLOSED);
        assert_eq!(plan.outcomes["ns/b"], Outcome::Unchanged);
        assert_eq!(plan.ledger.allocated(), 0);
    }

    #[test]
    fn a_claim_naming_a_taken_item_waits_without_holding_up_the_others() {
        let ledger = plan(&Ledger::empty(4), &[want("ns/a", 2)], OPEN).ledger; // 0, 1
        let named = |key: &str, items: &[&str]| Want {
            items: Some(items.iter().map(|s| s.to_string()).collect()),
            ..want(key, items.len() as u32)
        };
        let planned = plan(&ledger, &[named("ns/b", &["1"]), named("ns/c", &["3"]), want("ns/d", 1)], OPEN);
        assert_eq!(
            planned.outcomes["ns/b"],
            Outcome::Refused(AllocError::Taken { item: "1".into(), holder: "ns/a".into() })
        );
        assert_eq!(given(&planned, "ns/c"), [3]);
        assert_eq!(given(&planned, "ns/d"), [2], "not behind the claim that waits for a taken item");
        // Naming another item: the old one goes back (status first), the new one comes after.
        let moved = named("ns/c", &["2"]);
        let next = plan(&planned.ledger, &[Want { status_ready: false, ..moved.clone() }], OPEN);
        assert_eq!(next.outcomes["ns/c"], Outcome::StatusFirst);
        let next = plan(&planned.ledger, std::slice::from_ref(&moved), OPEN);
        assert!(given(&next, "ns/c").is_empty(), "let go of 3 first");
        let next = plan(&next.ledger, &[moved], OPEN);
        assert_eq!(given(&next, "ns/c").len(), 0, "2 is still d's");
    }

    #[test]
    fn a_party_to_a_dispute_neither_grows_nor_shrinks_but_may_go() {
        let mut ledger = Ledger::empty(4);
        ledger.adopt("ns/a", "uid-ns/a", &["1".into(), "2".into()]).unwrap();
        ledger.adopt("ns/b", "uid-ns/b", &["2".into()]).unwrap();
        let planned = plan(&ledger, &[want("ns/a", 3), want("ns/b", 1), want("ns/c", 3)], OPEN);
        assert_eq!(planned.outcomes["ns/a"], Outcome::Unchanged);
        assert_eq!(planned.outcomes["ns/b"], Outcome::Unchanged);
        assert!(matches!(
            planned.outcomes["ns/c"],
            Outcome::Refused(AllocError::Exhausted { needed: 3, free: 2 })
        ));
        let gone = Want { deleting: true, ..want("ns/a", 3) };
        let planned = plan(&ledger, &[gone], OPEN);
        assert_eq!(given(&planned, "ns/a"), Vec::<u32>::new());
    }

    #[test]
    fn a_claim_naming_its_items_is_served_before_older_claims_that_only_count() {
        let named = Want { items: Some(vec!["0".into()]), ..want("ns/b", 1) };
        let planned = plan(&Ledger::empty(2), &[want("ns/a", 2), named], OPEN);
        assert_eq!(given(&planned, "ns/b"), [0]);
        assert!(matches!(planned.outcomes["ns/a"], Outcome::Refused(AllocError::Exhausted { .. })));
    }

    #[test]
    fn a_namespace_not_allowed_keeps_what_it_holds_gets_nothing_more_and_stalls_no_one() {
        let ledger = plan(&Ledger::empty(10), &[want("a/held", 2)], OPEN).ledger;
        let refused = |w: Want| Want { allowed: false, ..w };
        let wants = [refused(want("a/held", 4)), refused(want("a/new", 1)), want("b/new", 3)];
        let planned = plan(&ledger, &wants, OPEN);
        assert_eq!(planned.outcomes["a/held"], Outcome::NamespaceNotAllowed);
        assert_eq!(given(&planned, "a/held").len(), 2, "it keeps its items");
        assert_eq!(planned.outcomes["a/new"], Outcome::NamespaceNotAllowed);
        assert!(given(&planned, "a/new").is_empty());
        assert_eq!(given(&planned, "b/new").len(), 3, "another namespace goes on");
        // Not allowed, it may still shrink and let go.
        let wants = [refused(want("a/held", 1))];
        assert_eq!(given(&plan(&ledger, &wants, OPEN), "a/held").len(), 1);
        let wants = [Want { deleting: true, ..refused(want("a/held", 2)) }];
        assert!(given(&plan(&ledger, &wants, OPEN), "a/held").is_empty());
    }

    #[test]
    fn a_growth_past_its_namespaces_item_limit_waits_and_so_do_its_younger_claims() {
        let rules = Rules { max_items: Some(5), ..OPEN };
        let ledger = plan(&Ledger::empty(20), &[want("a/one", 2), want("a/two", 2)], rules).ledger;
        let wants =
            [want("a/one", 2), want("a/two", 2), want("a/three", 2), want("a/four", 1), want("b/x", 5)];
        let planned = plan(&ledger, &wants, rules);
        assert_eq!(
            planned.outcomes["a/three"],
            Outcome::NamespaceLimit(Reached::Items { limit: 5, held: 4, more: 2 })
        );
        assert_eq!(planned.outcomes["a/four"], Outcome::Behind { older: "a/three".into() }, "oldest first");
        assert_eq!(given(&planned, "b/x").len(), 5, "the limit is per namespace");
        // Within the limit it is served, counting what the same hold gave before it.
        let wants = [want("a/one", 2), want("a/two", 2), want("a/three", 1), want("a/four", 1)];
        let planned = plan(&ledger, &wants, rules);
        assert_eq!(given(&planned, "a/three").len(), 1);
        assert_eq!(
            planned.outcomes["a/four"],
            Outcome::NamespaceLimit(Reached::Items { limit: 5, held: 5, more: 1 })
        );
        // A release in the same hold makes room.
        let wants = [Want { deleting: true, ..want("a/one", 2) }, want("a/two", 2), want("a/three", 3)];
        assert_eq!(given(&plan(&ledger, &wants, rules), "a/three").len(), 3);
    }

    #[test]
    fn a_claim_past_its_namespaces_claim_limit_waits_but_a_holder_may_grow() {
        let rules = Rules { max_claims: Some(2), ..OPEN };
        let ledger = plan(&Ledger::empty(20), &[want("a/one", 1), want("a/two", 1)], rules).ledger;
        let wants = [want("a/one", 3), want("a/two", 1), want("a/three", 1), want("b/three", 1)];
        let planned = plan(&ledger, &wants, rules);
        assert_eq!(given(&planned, "a/one").len(), 3, "a claim that holds items may grow");
        assert_eq!(
            planned.outcomes["a/three"],
            Outcome::NamespaceLimit(Reached::Claims { limit: 2, held: 2 })
        );
        assert_eq!(given(&planned, "b/three").len(), 1);
        // Two new claims of a namespace with room for one: the older gets it.
        let planned = plan(&Ledger::empty(20), &[want("c/1", 1), want("c/2", 1), want("c/3", 1)], rules);
        assert_eq!((given(&planned, "c/1").len(), given(&planned, "c/2").len()), (1, 1));
        assert_eq!(planned.outcomes["c/3"], Outcome::NamespaceLimit(Reached::Claims { limit: 2, held: 2 }));
    }

    #[test]
    fn the_plan_of_a_pool_without_limits_or_selector_is_unchanged_by_them() {
        let wants = [want("a/1", 3), want("b/1", 3), want("a/2", 5)];
        let open = plan(&Ledger::empty(10), &wants, OPEN);
        let roomy =
            plan(&Ledger::empty(10), &wants, Rules { max_items: Some(10), max_claims: Some(10), ..OPEN });
        assert_eq!(open, roomy);
    }
}
