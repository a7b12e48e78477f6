//! A lost ledger rebuilt from what the claims show. When a pool is re-created without its
//! status (or its status is wiped), the claims' statuses are the only record of who holds
//! what: their items are adopted before anything is given out. An item two claims show goes
//! to neither, nor to any other claim, until all but one of them let go of it.

use super::dispute::{Adopted, Dispute, Party};
use super::{AllocError, Entry, Items, Ledger, LedgerError, MAX_CLAIMS_PER_POOL};

impl Ledger {
    /// The ledger with the disputes a pool's status records; an item both held and disputed
    /// is refused like any item held twice.
    pub fn with_disputes(mut self, disputes: &[Dispute]) -> Result<Self, LedgerError> {
        for dispute in disputes {
            let index = self.index_or_add(&dispute.item);
            if self.used.contains(&index) {
                let first = self.holder(index).unwrap_or_default();
                let second = dispute.claims.first().map(|p| p.claim.clone()).unwrap_or_default();
                return Err(LedgerError::Duplicate { item: dispute.item.clone(), first, second });
            }
            self.mark(&[index], true);
            self.disputes.insert(index, dispute.claims.clone());
        }
        Ok(self)
    }

    /// The disputes as a pool's status stores them.
    pub fn disputes_to_status(&self) -> Vec<Dispute> {
        self.disputes
            .iter()
            .map(|(&index, claims)| Dispute { item: self.value(index), claims: claims.clone() })
            .collect()
    }

    /// Each disputed item and the claims that show it.
    pub fn disputes(&self) -> impl Iterator<Item = (String, &[Party])> {
        self.disputes.iter().map(|(&index, parties)| (self.value(index), parties.as_slice()))
    }

    /// The items claim `claim` (with `uid`) disputes with others.
    pub fn disputed_with(&self, claim: &str, uid: &str) -> Vec<String> {
        let me = Party::new(claim, uid);
        self.disputes.iter().filter(|(_, p)| p.contains(&me)).map(|(&i, _)| self.value(i)).collect()
    }

    /// Whether the ledger can record `item` (a range pool's ledger stores numbers only).
    pub fn records(&self, item: &str) -> bool {
        match self.items {
            Items::Range { .. } => item.parse::<u32>().is_ok(),
            Items::List(_) => !item.is_empty(),
        }
    }

    /// Takes into claim `claim`'s entry the items its status shows (those the ledger can
    /// record): free ones become its own, in the spec or not (an item the spec no longer has
    /// stays with it until released); one another claim holds or shows becomes disputed,
    /// taken from that claim's entry too. An entry of this name with another uid is left for
    /// the caller to settle first.
    pub fn adopt(&mut self, claim: &str, uid: &str, shown: &[String]) -> Result<Adopted, AllocError> {
        if let Some(e) = self.entries.get(claim).filter(|e| e.uid != uid) {
            return Err(AllocError::HeldByOtherUid { claim: claim.to_string(), uid: e.uid.clone() });
        }
        if !self.entries.contains_key(claim) && self.entries.len() >= MAX_CLAIMS_PER_POOL {
            return Err(AllocError::TooManyClaims { max: MAX_CLAIMS_PER_POOL });
        }
        let me = Party::new(claim, uid);
        let mut adopted = Adopted::default();
        let mut held = self.entries.get(claim).map(|e| e.indices.clone()).unwrap_or_default();
        let recordable: Vec<&String> = shown.iter().filter(|i| self.records(i)).collect();
        for item in recordable {
            let index = self.index_or_add(item);
            if held.contains(&index) {
                continue;
            }
            if let Some(parties) = self.disputes.get_mut(&index) {
                if !parties.contains(&me) {
                    parties.push(me.clone());
                    parties.sort();
                }
                adopted.disputed.push(item.clone());
            } else if let Some(holder) = self.holder(index) {
                let other = self.entries.get_mut(&holder).map(|e| {
                    e.indices.retain(|&i| i != index);
                    Party::new(&holder, &e.uid)
                });
                if self.entries.get(&holder).is_some_and(|e| e.indices.is_empty()) {
                    self.entries.remove(&holder);
                }
                let mut parties: Vec<Party> = other.into_iter().chain([me.clone()]).collect();
                parties.sort();
                self.disputes.insert(index, parties);
                adopted.disputed.push(item.clone());
            } else {
                self.mark(&[index], true);
                held.push(index);
                adopted.taken.push(item.clone());
            }
        }
        if !held.is_empty() {
            self.sort_by_value(&mut held);
            self.entries.insert(claim.to_string(), Entry { uid: uid.to_string(), indices: held });
        }
        Ok(adopted)
    }

    /// Settles the dispute over `item` given the parties that still show it: none, and it is
    /// free again; one, and it is that claim's; more, and it stays disputed among them.
    /// Returns whether anything changed.
    pub fn settle(&mut self, item: &str, showing: &[Party]) -> bool {
        let Some(index) = self.index_of(item) else { return false };
        let Some(parties) = self.disputes.get(&index) else { return false };
        let left: Vec<Party> = parties.iter().filter(|p| showing.contains(p)).cloned().collect();
        if left.len() == parties.len() {
            return false;
        }
        match left.as_slice() {
            [] => {
                self.disputes.remove(&index);
                self.mark(&[index], false);
            }
            [winner] => {
                // Its entry must be its own: an entry of the name with another uid waits.
                if self.entries.get(&winner.claim).is_some_and(|e| e.uid != winner.uid) {
                    return false;
                }
                self.disputes.remove(&index);
                let mut indices =
                    self.entries.get(&winner.claim).map(|e| e.indices.clone()).unwrap_or_default();
                indices.push(index);
                self.sort_by_value(&mut indices);
                self.entries.insert(winner.claim.clone(), Entry { uid: winner.uid.clone(), indices });
            }
            _ => {
                self.disputes.insert(index, left);
            }
        }
        true
    }

    /// The claim whose entry holds `index`.
    pub(super) fn holder(&self, index: u32) -> Option<String> {
        self.entries.iter().find(|(_, e)| e.indices.contains(&index)).map(|(c, _)| c.clone())
    }

    /// The index of `value`, made one past the spec if the ledger has not seen it.
    fn index_or_add(&mut self, value: &str) -> u32 {
        if let Some(index) = self.index_of(value) {
            return index;
        }
        self.removed.push(value.to_string());
        self.capacity() + self.removed.len() as u32 - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn items_of(ledger: &Ledger, claim: &str, uid: &str) -> Vec<String> {
        ledger.describe(ledger.given(claim, uid)).0
    }

    #[test]
    fn a_lost_ledger_is_rebuilt_from_the_claims_before_anything_is_given() {
        let mut ledger = Ledger::new(Items::Range { start: 100, len: 10 });
        let a = ledger.adopt("ns/a", "ua", &strings(&["103", "101"])).unwrap();
        assert_eq!(a, Adopted { taken: strings(&["103", "101"]), disputed: vec![] });
        // An item the re-created spec lacks stays with its claim, outside the spec.
        ledger.adopt("ns/b", "ub", &strings(&["100", "250"])).unwrap();
        assert_eq!(items_of(&ledger, "ns/a", "ua"), ["101", "103"]);
        assert_eq!(items_of(&ledger, "ns/b", "ub"), ["100", "250"]);
        assert_eq!((ledger.allocated(), ledger.removed_held()), (3, 1));
        // Adopting again changes nothing; a growth afterwards takes free items only.
        let before = ledger.clone();
        ledger.adopt("ns/a", "ua", &strings(&["101", "103"])).unwrap();
        assert_eq!(ledger, before);
        ledger.assign("ns/c", "uc", 2).unwrap();
        assert_eq!(items_of(&ledger, "ns/c", "uc"), ["102", "104"]);
        // Text in a range pool cannot be recorded: left out, not misread.
        let none = ledger.adopt("ns/d", "ud", &strings(&["blue"])).unwrap();
        assert_eq!(none, Adopted::default());
        assert!(ledger.entry("ns/d").is_none());
    }

    #[test]
    fn an_item_two_claims_show_goes_to_neither_nor_to_a_third() {
        let mut ledger = Ledger::new(Items::List(strings(&["red", "green", "blue"])));
        ledger.adopt("ns/a", "ua", &strings(&["red", "green"])).unwrap();
        let b = ledger.adopt("ns/b", "ub", &strings(&["green"])).unwrap();
        assert_eq!(b.disputed, ["green"]);
        assert_eq!(items_of(&ledger, "ns/a", "ua"), ["red"]);
        assert!(ledger.entry("ns/b").is_none());
        assert_eq!(ledger.disputed_with("ns/a", "ua"), ["green"]);
        assert_eq!(ledger.disputed_with("ns/b", "ub"), ["green"]);
        // A third claim gets only what nobody shows.
        assert_eq!(ledger.assign("ns/c", "uc", 2).unwrap_err(), AllocError::Exhausted { needed: 2, free: 1 });
        let named = ledger.assign_items("ns/c", "uc", &strings(&["green"]));
        assert!(matches!(named, Err(AllocError::Taken { .. })), "{named:?}");
        // Through the status and back, the dispute stays.
        let status = ledger.disputes_to_status();
        let read = Ledger::from_status(&ledger.to_status(), Items::List(strings(&["red", "green", "blue"])))
            .unwrap()
            .with_disputes(&status)
            .unwrap();
        assert_eq!(read, ledger);
    }

    #[test]
    fn a_dispute_is_settled_when_all_but_one_let_go() {
        let mut ledger = Ledger::new(Items::indices(4));
        ledger.adopt("ns/a", "ua", &strings(&["1"])).unwrap();
        ledger.adopt("ns/b", "ub", &strings(&["1", "2"])).unwrap();
        ledger.adopt("ns/c", "uc", &strings(&["1"])).unwrap();
        let all = [Party::new("ns/a", "ua"), Party::new("ns/b", "ub"), Party::new("ns/c", "uc")];
        assert!(!ledger.settle("1", &all), "all still show it");
        assert!(ledger.settle("1", &all[1..]), "a let go");
        assert_eq!(ledger.disputed_with("ns/a", "ua"), Vec::<String>::new());
        // A re-created claim of the same name is not the party.
        assert!(ledger.settle("1", &[Party::new("ns/b", "other"), all[2].clone()]));
        assert_eq!(items_of(&ledger, "ns/c", "uc"), ["1"]);
        assert_eq!(items_of(&ledger, "ns/b", "ub"), ["2"]);
        assert_eq!(ledger.disputes().count(), 0);
        // Nobody left showing it: free again.
        ledger.adopt("ns/d", "ud", &strings(&["1"])).unwrap();
        assert!(ledger.settle("1", &[]));
        assert_eq!((ledger.allocated(), ledger.free()), (1, 3));
    }

    #[test]
    fn an_item_both_held_and_disputed_is_refused_when_read() {
        let ledger = Ledger::from_status(
            &[crate::ledger::Allocation::positions("ns/a", "ua", "1")],
            Items::indices(4),
        )
        .unwrap();
        let dispute =
            Dispute { item: "1".into(), claims: vec![Party::new("ns/b", "ub"), Party::new("ns/c", "uc")] };
        assert!(matches!(ledger.with_disputes(&[dispute]), Err(LedgerError::Duplicate { .. })));
    }
}
