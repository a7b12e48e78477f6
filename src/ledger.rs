//! The allocation ledger of a pool, as pure functions: ledger in, ledger out. No I/O, so
//! every rule (uniqueness, no loss, idempotence) is unit-tested without a server.

use std::collections::BTreeMap;
use std::fmt::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// A ledger entry as a pool's status stores it (`status.ledger[]`); no doc comment, which
// would become a description in the CRD.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// `namespace/name` of the claim.
    pub claim: String,
    /// The claim's UID: a claim re-created under the same name is a different claim.
    pub uid: String,
    /// Item indices, e.g. `0-9,15`.
    pub items: String,
}

/// Why a status ledger cannot be read. Each names the entry, so an administrator knows
/// what to repair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "entry {claim}: malformed item indices {items:?} (expected sorted, disjoint runs like \"0-9,15\")"
    )]
    Malformed { claim: String, items: String },
    #[error("entry {claim}: item index {index} is outside the pool (capacity {capacity})")]
    OutOfRange { claim: String, index: u64, capacity: u32 },
    #[error("item index {index} is held by both {first} and {second}")]
    Duplicate { index: u32, first: String, second: String },
    #[error("entry {claim} appears twice")]
    TwoEntries { claim: String },
    #[error("{entries} entries, more than the {max} claims a pool serves")]
    TooLong { entries: usize, max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("the claim asks for {count} items but the pool only has {capacity}")]
    TooSmall { count: u32, capacity: u32 },
    #[error("the claim asks for {needed} more items but only {free} are free")]
    Exhausted { needed: u32, free: u32 },
    #[error("the pool already has {max} claims, its most")]
    TooManyClaims { max: usize },
    #[error("the ledger entry of {claim} belongs to claim uid {uid}, an earlier claim of that name")]
    HeldByOtherUid { claim: String, uid: String },
}

/// Most claims one pool serves, so that its ledger always fits one object (the test in api/pool.rs
/// `a_full_fragmented_ledger_of_the_largest_pool_fits_one_object`).
pub const MAX_CLAIMS_PER_POOL: usize = 4_096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: String,
    /// Sorted item indices.
    pub indices: Vec<u32>,
}

/// Which claim (`namespace/name`) holds which item indices of a pool of `capacity` items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    capacity: u32,
    entries: BTreeMap<String, Entry>,
    /// Which indices are held: derived from `entries`, kept so that finding free items
    /// does not walk every entry (a hold can serve thousands of claims).
    used: Vec<bool>,
    allocated: u32,
}

/// What an allocation changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Change {
    pub added: Vec<u32>,
    pub removed: Vec<u32>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl Ledger {
    pub fn empty(capacity: u32) -> Self {
        Self { capacity, entries: BTreeMap::new(), used: vec![false; capacity as usize], allocated: 0 }
    }

    /// Reads a pool's status ledger, checking that it has at most
    /// [`MAX_CLAIMS_PER_POOL`] entries and that no index is out of range or held twice.
    /// Memory stays proportional to the pool's capacity whatever the status says: ranges
    /// are checked before they are expanded.
    pub fn from_status(allocations: &[Allocation], capacity: u32) -> Result<Self, LedgerError> {
        if allocations.len() > MAX_CLAIMS_PER_POOL {
            return Err(LedgerError::TooLong { entries: allocations.len(), max: MAX_CLAIMS_PER_POOL });
        }
        // Which entry holds each index; capacity is at most MAX_POOL_ITEMS.
        let mut owner: Vec<Option<usize>> = vec![None; capacity as usize];
        let mut entries = BTreeMap::new();
        let mut allocated = 0;
        for (n, a) in allocations.iter().enumerate() {
            let mut indices = Vec::new();
            for (start, end) in parse_runs(&a.claim, &a.items, capacity)? {
                for index in start..=end {
                    if let Some(first) = owner[index as usize].replace(n) {
                        return Err(LedgerError::Duplicate {
                            index,
                            first: allocations[first].claim.clone(),
                            second: a.claim.clone(),
                        });
                    }
                    indices.push(index);
                    allocated += 1;
                }
            }
            if entries.insert(a.claim.clone(), Entry { uid: a.uid.clone(), indices }).is_some() {
                return Err(LedgerError::TwoEntries { claim: a.claim.clone() });
            }
        }
        let used = owner.iter().map(Option::is_some).collect();
        Ok(Self { capacity, entries, used, allocated })
    }

    pub fn to_status(&self) -> Vec<Allocation> {
        self.entries
            .iter()
            .map(|(claim, e)| Allocation {
                claim: claim.clone(),
                uid: e.uid.clone(),
                items: format_indices(&e.indices),
            })
            .collect()
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn allocated(&self) -> u32 {
        self.allocated
    }

    pub fn free(&self) -> u32 {
        self.capacity - self.allocated()
    }

    pub fn entry(&self, claim: &str) -> Option<&Entry> {
        self.entries.get(claim)
    }

    pub fn claims(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(c, e)| (c.as_str(), e))
    }

    /// Gives claim `claim` (with `uid`) exactly `count` items: keeps what it holds, adds the
    /// lowest free indices or drops its highest. An entry of the same name with another uid
    /// is never touched: only the caller can tell (by reading the live claim) that it is
    /// stale, and then [`Ledger::release_uid`] frees it first.
    pub fn allocate(&self, claim: &str, uid: &str, count: u32) -> Result<(Ledger, Change), AllocError> {
        let mut next = self.clone();
        let change = next.assign(claim, uid, count)?;
        Ok((next, change))
    }

    /// [`Ledger::allocate`] in place; on an error nothing changed.
    pub fn assign(&mut self, claim: &str, uid: &str, count: u32) -> Result<Change, AllocError> {
        if count > self.capacity {
            return Err(AllocError::TooSmall { count, capacity: self.capacity });
        }
        if let Some(e) = self.entries.get(claim).filter(|e| e.uid != uid) {
            return Err(AllocError::HeldByOtherUid { claim: claim.to_string(), uid: e.uid.clone() });
        }
        if !self.entries.contains_key(claim) && self.entries.len() >= MAX_CLAIMS_PER_POOL {
            return Err(AllocError::TooManyClaims { max: MAX_CLAIMS_PER_POOL });
        }
        let mut change = Change::default();
        let mut held = self.entries.get(claim).map(|e| e.indices.clone()).unwrap_or_default();
        let have = held.len() as u32;
        if have > count {
            change.removed = held.split_off(count as usize);
            self.mark(&change.removed, false);
        } else if have < count {
            let needed = count - have;
            let free = self.free();
            if needed > free {
                return Err(AllocError::Exhausted { needed, free });
            }
            change.added = self.lowest_free(needed as usize);
            self.mark(&change.added, true);
            held.extend(&change.added);
            held.sort_unstable();
        }
        self.entries.insert(claim.to_string(), Entry { uid: uid.to_string(), indices: held });
        Ok(change)
    }

    /// Removes the claim's entry; returns the freed indices (empty if it held nothing).
    pub fn release(&self, claim: &str) -> (Ledger, Vec<u32>) {
        let mut next = self.clone();
        let freed = next.remove(claim);
        (next, freed)
    }

    /// Removes the claim's entry only if it belongs to `uid`.
    pub fn release_uid(&self, claim: &str, uid: &str) -> (Ledger, Vec<u32>) {
        let mut next = self.clone();
        let freed = next.remove_uid(claim, uid);
        (next, freed)
    }

    /// [`Ledger::release`] in place.
    pub fn remove(&mut self, claim: &str) -> Vec<u32> {
        let freed = self.entries.remove(claim).map(|e| e.indices).unwrap_or_default();
        self.mark(&freed, false);
        freed
    }

    /// [`Ledger::release_uid`] in place.
    pub fn remove_uid(&mut self, claim: &str, uid: &str) -> Vec<u32> {
        match self.entries.get(claim) {
            Some(e) if e.uid == uid => self.remove(claim),
            _ => Vec::new(),
        }
    }

    fn mark(&mut self, indices: &[u32], used: bool) {
        for &i in indices {
            self.used[i as usize] = used;
        }
        let n = indices.len() as u32;
        self.allocated = if used { self.allocated + n } else { self.allocated - n };
    }

    /// The indices the ledger gives to `claim` with `uid` (none for another uid).
    pub fn given(&self, claim: &str, uid: &str) -> &[u32] {
        match self.entries.get(claim) {
            Some(e) if e.uid == uid => &e.indices,
            _ => &[],
        }
    }

    fn lowest_free(&self, n: usize) -> Vec<u32> {
        (0..self.capacity).filter(|&i| !self.used[i as usize]).take(n).collect()
    }
}

/// `[0,1,2,3,7,9,10]` → `"0-3,7,9-10"`.
pub fn format_indices(sorted: &[u32]) -> String {
    let mut out = String::new();
    for (start, end) in runs(sorted) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = if start == end { write!(out, "{start}") } else { write!(out, "{start}-{end}") };
    }
    out
}

/// Consecutive runs `(first, last)` of sorted numbers.
pub fn runs(sorted: &[u32]) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &i in sorted {
        match runs.last_mut() {
            Some((_, end)) if i == *end + 1 => *end = i,
            _ => runs.push((i, i)),
        }
    }
    runs
}

/// Parses `"0-3,7"` into sorted, disjoint runs inside `0..capacity`, refusing anything
/// else before a single index is expanded. `claim` names the entry in errors.
pub fn parse_runs(claim: &str, text: &str, capacity: u32) -> Result<Vec<(u32, u32)>, LedgerError> {
    let malformed = || LedgerError::Malformed { claim: claim.to_string(), items: preview(text) };
    let number = |s: &str| s.parse::<u64>().map_err(|_| malformed());
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (start, end) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if end >= u64::from(capacity) {
            return Err(LedgerError::OutOfRange { claim: claim.to_string(), index: end, capacity });
        }
        // Both fit in u32 now: end < capacity and start <= end is checked next.
        let (start, end) = (start as u32, end as u32);
        if start > end || runs.last().is_some_and(|&(_, last)| start <= last) {
            return Err(malformed());
        }
        runs.push((start, end));
    }
    Ok(runs)
}

/// Sorted indices from their compressed form, for a pool of `capacity` items.
pub fn parse_indices(text: &str, capacity: u32) -> Result<Vec<u32>, LedgerError> {
    Ok(parse_runs("", text, capacity)?.into_iter().flat_map(|(a, b)| a..=b).collect())
}

/// At most 80 characters of a (possibly huge) text, for messages.
fn preview(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_in_compressed_form() {
        let v = vec![0, 1, 2, 3, 7, 9, 10];
        assert_eq!(format_indices(&v), "0-3,7,9-10");
        assert_eq!(parse_indices("0-3,7,9-10", 11).unwrap(), v);
        assert_eq!(parse_indices("", 11).unwrap(), Vec::<u32>::new());
        assert!(parse_indices("3-1", 11).is_err());
        assert!(parse_indices("1,1", 11).is_err());
        assert!(parse_indices("x", 11).is_err());
        assert!(parse_indices("0-10", 10).is_err());
    }

    #[test]
    fn allocation_takes_the_lowest_free_items_and_is_idempotent() {
        let ledger = Ledger::empty(10);
        let (ledger, change) = ledger.allocate("ns/a", "u1", 3).unwrap();
        assert_eq!(change.added, vec![0, 1, 2]);
        let (ledger, change) = ledger.allocate("ns/b", "u2", 2).unwrap();
        assert_eq!(change.added, vec![3, 4]);
        let (again, change) = ledger.allocate("ns/a", "u1", 3).unwrap();
        assert!(change.is_empty());
        assert_eq!(again, ledger);
        let (ledger, freed) = ledger.release("ns/a");
        assert_eq!(freed, vec![0, 1, 2]);
        let (ledger, change) = ledger.allocate("ns/c", "u3", 4).unwrap();
        assert_eq!(change.added, vec![0, 1, 2, 5]);
        assert_eq!(ledger.allocated(), 6);
        assert_eq!(ledger.free(), 4);
    }

    #[test]
    fn too_small_and_exhausted_pools_change_nothing() {
        let ledger = Ledger::empty(4);
        assert_eq!(
            ledger.allocate("ns/a", "u", 5).unwrap_err(),
            AllocError::TooSmall { count: 5, capacity: 4 }
        );
        let (ledger, _) = ledger.allocate("ns/a", "u", 3).unwrap();
        assert_eq!(
            ledger.allocate("ns/b", "v", 2).unwrap_err(),
            AllocError::Exhausted { needed: 2, free: 1 }
        );
        assert_eq!(ledger.allocated(), 3);
    }

    #[test]
    fn resizing_keeps_the_lowest_items() {
        let (ledger, _) = Ledger::empty(10).allocate("ns/a", "u", 4).unwrap();
        let (ledger, change) = ledger.allocate("ns/a", "u", 2).unwrap();
        assert_eq!(change.removed, vec![2, 3]);
        assert_eq!(ledger.entry("ns/a").unwrap().indices, vec![0, 1]);
        let (ledger, change) = ledger.allocate("ns/a", "u", 3).unwrap();
        assert_eq!(change.added, vec![2]);
        assert_eq!(ledger.allocated(), 3);
    }

    #[test]
    fn an_entry_of_another_uid_is_never_evicted_by_allocate() {
        let (ledger, _) = Ledger::empty(10).allocate("ns/a", "live", 3).unwrap();
        assert_eq!(
            ledger.allocate("ns/a", "other", 1).unwrap_err(),
            AllocError::HeldByOtherUid { claim: "ns/a".into(), uid: "live".into() }
        );
        assert_eq!(ledger.given("ns/a", "other"), &[] as &[u32]);
        // Only a caller that saw the live claim's uid frees the stale entry, by uid.
        assert_eq!(ledger.release_uid("ns/a", "other").1, Vec::<u32>::new());
        let (ledger, freed) = ledger.release_uid("ns/a", "live");
        assert_eq!(freed, vec![0, 1, 2]);
        let (ledger, change) = ledger.allocate("ns/a", "new", 1).unwrap();
        assert_eq!(change.added, vec![0]);
        assert_eq!(ledger.given("ns/a", "new"), &[0]);
    }

    #[test]
    fn a_corrupt_status_ledger_is_refused() {
        let a = |claim: &str, items: &str| Allocation {
            claim: claim.into(),
            uid: "u".into(),
            items: items.into(),
        };
        assert!(matches!(
            Ledger::from_status(&[a("x/a", "0-2"), a("x/b", "2")], 5),
            Err(LedgerError::Duplicate { index: 2, .. })
        ));
        assert!(matches!(Ledger::from_status(&[a("x/a", "5")], 5), Err(LedgerError::OutOfRange { .. })));
        assert!(matches!(
            Ledger::from_status(&[a("x/a", "1"), a("x/a", "2")], 5),
            Err(LedgerError::TwoEntries { .. })
        ));
        let many: Vec<Allocation> = (0..=MAX_CLAIMS_PER_POOL).map(|i| a(&format!("x/{i}"), "")).collect();
        assert!(matches!(Ledger::from_status(&many, 5), Err(LedgerError::TooLong { .. })));
        let ok = Ledger::from_status(&[a("x/a", "0-2"), a("x/b", "4")], 5).unwrap();
        assert_eq!(Ledger::from_status(&ok.to_status(), 5).unwrap(), ok);
    }

    #[test]
    fn a_huge_range_is_refused_before_it_is_expanded() {
        // 2^32 indices would be 16 GiB; the check comes first, so this returns at once.
        let err = Ledger::from_status(&[a_entry("ns/x", "0-4294967295")], 6).unwrap_err();
        assert_eq!(err, LedgerError::OutOfRange { claim: "ns/x".into(), index: 4_294_967_295, capacity: 6 });
        assert!(err.to_string().contains("entry ns/x"), "{err}");
        let err = Ledger::from_status(&[a_entry("ns/y", &"1,".repeat(100))], 6).unwrap_err();
        assert!(matches!(err, LedgerError::Malformed { .. }));
        assert!(err.to_string().len() < 200, "messages stay short: {err}");
        assert!(matches!(
            Ledger::from_status(&[a_entry("ns/z", "99999999999999999999")], 6),
            Err(LedgerError::Malformed { .. })
        ));
    }

    fn a_entry(claim: &str, items: &str) -> Allocation {
        Allocation { claim: claim.into(), uid: "u".into(), items: items.into() }
    }

    #[test]
    fn random_operations_never_duplicate_or_lose_an_item() {
        // A small deterministic generator: the sequence is the same on every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        let mut ledger = Ledger::empty(64);
        for _ in 0..5_000 {
            let claim = format!("ns/c{}", next(20));
            ledger = if next(3) == 0 {
                ledger.release(&claim).0
            } else {
                match ledger.allocate(&claim, "u", 1 + next(8)) {
                    Ok((l, _)) => l,
                    Err(AllocError::Exhausted { .. }) => ledger,
                    Err(e) => panic!("{e}"),
                }
            };
            let round_trip = Ledger::from_status(&ledger.to_status(), 64).expect("no index held twice");
            assert_eq!(round_trip.allocated() + round_trip.free(), 64);
            // What was kept alongside the entries equals what they say.
            assert_eq!(round_trip, ledger);
        }
    }
}
