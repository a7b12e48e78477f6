//! The allocation ledger of a pool, as pure functions: ledger in, ledger out. No I/O, so
//! every rule (uniqueness, no loss, idempotence) is unit-tested without a server.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod adopt;
mod dispute;

pub use dispute::{Adopted, Dispute, Party};

/// The ledger format this binary reads and writes: 2 names items by value (1, by their
/// position in the spec, moved items when the spec was re-sorted or shrunk).
pub const LEDGER_FORMAT: i64 = 2;

// A ledger entry as a pool's status stores it (`status.ledger[]`); no doc comment, which
// would become a description in the CRD.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// `namespace/name` of the claim.
    pub claim: String,
    /// The claim's UID: a claim re-created under the same name is a different claim.
    pub uid: String,
    /// Format 1: item positions in the pool's spec, e.g. `0-9,15`; read once, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// Format 2, a range pool: the held numbers, e.g. `30000-30009,30015`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// Format 2, a list pool: the held names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
}

impl Allocation {
    /// A format 1 entry: item positions in the spec (what v0.1.0 wrote).
    pub fn positions(claim: &str, uid: &str, positions: &str) -> Self {
        Self {
            claim: claim.into(),
            uid: uid.into(),
            items: Some(positions.into()),
            values: None,
            names: None,
        }
    }
}

/// Why a status ledger cannot be read. Each names the entry, so an administrator knows
/// what to repair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("entry {claim}: malformed items {items:?} (expected sorted, disjoint runs like \"0-9,15\")")]
    Malformed { claim: String, items: String },
    #[error("entry {claim}: item index {index} is outside the pool (capacity {capacity})")]
    OutOfRange { claim: String, index: u64, capacity: u32 },
    #[error("item {item} is held by both {first} and {second}")]
    Duplicate { item: String, first: String, second: String },
    #[error("entry {claim} appears twice")]
    TwoEntries { claim: String },
    #[error("{entries} entries, more than the {max} claims a pool serves")]
    TooLong { entries: usize, max: usize },
    #[error("the entries hold more than {max} items in all")]
    TooManyItems { max: usize },
    #[error(
        "entry {claim} names no items (neither values, names nor positions): written through a Pool CRD older than the operator? apply this release's crds/"
    )]
    NoItems { claim: String },
    #[error("entry {claim}: its items are not in the form of a {kind} pool")]
    WrongKind { claim: String, kind: &'static str },
    #[error(
        "ledger format {format} was written by a newer lockguard; this replica reads format {LEDGER_FORMAT} and leaves it alone"
    )]
    NewerFormat { format: i64 },
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
    #[error("item {item} is held by claim {holder}")]
    Taken { item: String, holder: String },
    #[error("item {item} is not in the pool")]
    NotInPool { item: String },
}

/// Most claims one pool serves, so that its ledger always fits one object (the test in api/pool.rs
/// `a_full_fragmented_ledger_of_the_largest_pool_fits_one_object`).
pub const MAX_CLAIMS_PER_POOL: usize = 4_096;
/// Most items a ledger may hold in all (those of the spec and those removed from it), so
/// that reading a status never expands more than this, whatever it says.
const MAX_HELD_ITEMS: usize = 4 * 65_536;

/// The items of a pool, in the order of its spec: an item's index is its position here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Items {
    /// The numbers `start ..= start + len - 1`.
    Range {
        start: i64,
        len: u32,
    },
    List(Vec<String>),
}

impl Items {
    /// The range 0..n, where an item is its own index (for tests and benchmarks).
    pub fn indices(n: u32) -> Self {
        Items::Range { start: 0, len: n }
    }

    pub fn len(&self) -> u32 {
        match self {
            Items::Range { len, .. } => *len,
            Items::List(list) => list.len() as u32,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn value(&self, index: u32) -> Option<String> {
        match self {
            Items::Range { start, len } => (index < *len).then(|| (start + i64::from(index)).to_string()),
            Items::List(list) => list.get(index as usize).cloned(),
        }
    }

    /// The item at `index`: in the spec, or past it one of `removed`.
    fn value_at(&self, removed: &[String], index: u32) -> String {
        self.value(index).unwrap_or_else(|| removed[(index - self.len()) as usize].clone())
    }

    fn kind(&self) -> &'static str {
        match self {
            Items::Range { .. } => "range",
            Items::List(_) => "list",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub uid: String,
    /// Item indices, sorted by the items' values (see `Ledger::sort_by_value`).
    pub indices: Vec<u32>,
}

/// Which claim (`namespace/name`) holds which items of a pool. Items are named by value in
/// the status, and by index here: an index below the capacity is a position in the spec,
/// one above it an item removed from the spec that a claim still holds (never given again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    items: Items,
    /// Values held but no longer in the spec; index `capacity + position`.
    removed: Vec<String>,
    entries: BTreeMap<String, Entry>,
    /// Which indices are held (or disputed): derived from `entries`, kept so that finding
    /// free items does not walk every entry (a hold can serve thousands of claims). A set,
    /// not one flag per item: a pool of 65,536 ports holding a few hundred costs as little as
    /// one of a few hundred, in each copy a hold plans on.
    used: BTreeSet<u32>,
    /// Held indices in the spec.
    allocated: u32,
    /// Items several claims showed when the ledger was rebuilt: held for none of them.
    disputes: BTreeMap<u32, Vec<Party>>,
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

/// Reads a status ledger against a spec: where each held value is now.
struct Reader<'a> {
    items: &'a Items,
    /// A list pool's names and their positions.
    positions: std::collections::HashMap<&'a str, u32>,
    removed: Vec<String>,
    removed_at: std::collections::HashMap<String, u32>,
    /// Which entry holds each index held.
    owner: HashMap<u32, usize>,
    held: usize,
}

impl<'a> Reader<'a> {
    fn new(items: &'a Items) -> Self {
        let positions = match items {
            Items::List(list) => list.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32)).collect(),
            Items::Range { .. } => Default::default(),
        };
        Self {
            items,
            positions,
            removed: Vec::new(),
            removed_at: Default::default(),
            owner: HashMap::new(),
            held: 0,
        }
    }

    /// The index of `value`: its position in the spec, or a new one past it.
    fn index_of(&mut self, value: &str, in_spec: Option<u32>) -> u32 {
        if let Some(i) = in_spec {
            return i;
        }
        if let Some(&i) = self.removed_at.get(value) {
            return i;
        }
        let i = self.items.len() + self.removed.len() as u32;
        self.removed.push(value.to_string());
        self.removed_at.insert(value.to_string(), i);
        i
    }

    /// Records that entry `n` (of `claims`) holds `index`.
    fn hold(&mut self, n: usize, index: u32, claims: &[Allocation]) -> Result<(), LedgerError> {
        self.held += 1;
        if self.held > MAX_HELD_ITEMS {
            return Err(LedgerError::TooManyItems { max: MAX_HELD_ITEMS });
        }
        if let Some(first) = self.owner.insert(index, n) {
            let item = self.value(index);
            return Err(LedgerError::Duplicate {
                item,
                first: claims[first].claim.clone(),
                second: claims[n].claim.clone(),
            });
        }
        Ok(())
    }

    fn value(&self, index: u32) -> String {
        self.items.value_at(&self.removed, index)
    }

    /// The indices entry `a` holds, from whichever form it has.
    fn indices(&mut self, a: &Allocation) -> Result<Vec<u32>, LedgerError> {
        let wrong_kind = || LedgerError::WrongKind { claim: a.claim.clone(), kind: self.items.kind() };
        match (self.items, &a.values, &a.names, &a.items) {
            (Items::Range { start, len }, Some(values), None, _) => {
                let (start, len) = (*start, *len);
                let mut indices = Vec::new();
                for (first, last) in runs_below(&a.claim, values, 1 << 32)? {
                    if (last - first) as usize >= MAX_HELD_ITEMS {
                        return Err(LedgerError::TooManyItems { max: MAX_HELD_ITEMS });
                    }
                    for value in first..=last {
                        let offset = i64::from(value) - start;
                        let in_spec = (0..i64::from(len)).contains(&offset).then_some(offset as u32);
                        indices.push(self.index_of(&value.to_string(), in_spec));
                    }
                }
                Ok(indices)
            }
            (Items::List(_), None, Some(names), _) => {
                let mut indices = Vec::with_capacity(names.len());
                for name in names {
                    let in_spec = self.positions.get(name.as_str()).copied();
                    indices.push(self.index_of(name, in_spec));
                }
                Ok(indices)
            }
            // Format 1: positions in the spec as it is now (the last spec format 1 knew).
            (_, None, None, Some(positions)) => Ok(parse_runs(&a.claim, positions, self.items.len())?
                .into_iter()
                .flat_map(|(a, b)| a..=b)
                .collect()),
            // Never written so by any version: a write whose fields an older schema dropped.
            (_, None, None, None) => Err(LedgerError::NoItems { claim: a.claim.clone() }),
            _ => Err(wrong_kind()),
        }
    }
}

impl Ledger {
    /// A ledger of nothing held from `items`.
    pub fn new(items: Items) -> Self {
        Self {
            items,
            removed: Vec::new(),
            entries: BTreeMap::new(),
            used: BTreeSet::new(),
            allocated: 0,
            disputes: BTreeMap::new(),
        }
    }

    /// A range 0..capacity where an item is its own index (for tests and benchmarks).
    pub fn empty(capacity: u32) -> Self {
        Self::new(Items::indices(capacity))
    }

    /// Reads a pool's status ledger against its spec's `items`, checking that it has at most
    /// [`MAX_CLAIMS_PER_POOL`] entries and that no item is held twice. Items are found by
    /// value, so a spec re-sorted, grown or shrunk moves none; a held item the spec no longer
    /// has stays held. Memory stays bounded whatever the status says: runs are checked before
    /// they are expanded.
    pub fn from_status(allocations: &[Allocation], items: Items) -> Result<Self, LedgerError> {
        if allocations.len() > MAX_CLAIMS_PER_POOL {
            return Err(LedgerError::TooLong { entries: allocations.len(), max: MAX_CLAIMS_PER_POOL });
        }
        let mut reader = Reader::new(&items);
        let mut entries = BTreeMap::new();
        for (n, a) in allocations.iter().enumerate() {
            let indices = reader.indices(a)?;
            for &index in &indices {
                reader.hold(n, index, allocations)?;
            }
            if entries.insert(a.claim.clone(), Entry { uid: a.uid.clone(), indices }).is_some() {
                return Err(LedgerError::TwoEntries { claim: a.claim.clone() });
            }
        }
        let used: BTreeSet<u32> = reader.owner.keys().copied().collect();
        let allocated = used.range(..items.len()).count() as u32;
        let removed = reader.removed;
        let mut ledger =
            Self { items, removed, entries: BTreeMap::new(), used, allocated, disputes: BTreeMap::new() };
        for (_, entry) in entries.iter_mut() {
            ledger.sort_by_value(&mut entry.indices);
        }
        ledger.entries = entries;
        Ok(ledger)
    }

    /// The entries by value, in format [`LEDGER_FORMAT`].
    pub fn to_status(&self) -> Vec<Allocation> {
        self.entries
            .iter()
            .map(|(claim, e)| {
                let (values, names) = match &self.items {
                    Items::Range { .. } => {
                        let mut numbers: Vec<u32> =
                            e.indices.iter().filter_map(|&i| self.value(i).parse().ok()).collect();
                        numbers.sort_unstable();
                        (Some(format_indices(&numbers)), None)
                    }
                    Items::List(_) => (None, Some(e.indices.iter().map(|&i| self.value(i)).collect())),
                };
                Allocation { claim: claim.clone(), uid: e.uid.clone(), items: None, values, names }
            })
            .collect()
    }

    /// The items at `indices`, and a short form for display: `30000-30004,30010` for a
    /// range pool, the first few names for a list.
    pub fn describe(&self, indices: &[u32]) -> (Vec<String>, String) {
        let items: Vec<String> = indices.iter().map(|&i| self.value(i)).collect();
        let summary = match &self.items {
            Items::Range { .. } => {
                let mut numbers: Vec<u32> = items.iter().filter_map(|v| v.parse().ok()).collect();
                numbers.sort_unstable();
                format_indices(&numbers)
            }
            Items::List(_) if items.len() > 4 => {
                format!("{},… ({} items)", items[..4].join(","), items.len())
            }
            Items::List(_) => items.join(","),
        };
        (items, summary)
    }

    fn value(&self, index: u32) -> String {
        self.items.value_at(&self.removed, index)
    }

    /// The items of `given` (a claim's, sorted by value) that it keeps when it asks for `count`
    /// items, or for the items `wanted`: the lowest `count`, or those it still names. Claims,
    /// holds and plans all decide a shrink with this, so they keep the same items.
    pub fn keeps(&self, given: &[u32], count: u32, wanted: Option<&[String]>) -> Vec<u32> {
        match wanted {
            Some(wanted) => given.iter().copied().filter(|&i| wanted.contains(&self.value(i))).collect(),
            None => given[..given.len().min(count as usize)].to_vec(),
        }
    }

    /// Sorts a claim's items by value (numbers numerically, names as text), never by their
    /// place in the spec: which items a shrink keeps (the lowest) must not depend on the
    /// spec's order, or a replica deciding from an older spec would keep others than the
    /// replica that writes the ledger.
    fn sort_by_value(&self, indices: &mut [u32]) {
        match &self.items {
            Items::Range { .. } => {
                indices.sort_by_cached_key(|&i| self.value(i).parse::<u64>().unwrap_or(u64::MAX))
            }
            Items::List(_) => indices.sort_by_cached_key(|&i| self.value(i)),
        }
    }

    /// How many items the spec has.
    pub fn capacity(&self) -> u32 {
        self.items.len()
    }

    /// Held items of the spec.
    pub fn allocated(&self) -> u32 {
        self.allocated
    }

    pub fn free(&self) -> u32 {
        self.capacity() - self.allocated()
    }

    /// Items removed from the spec that claims still hold: theirs until released, never
    /// given again.
    pub fn removed_held(&self) -> u32 {
        self.used.range(self.capacity()..).count() as u32
    }

    pub fn entry(&self, claim: &str) -> Option<&Entry> {
        self.entries.get(claim)
    }

    /// Per namespace: the items its claims hold and how many of its claims hold any.
    pub fn namespace_usage(&self) -> BTreeMap<String, (u32, u32)> {
        let mut usage: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for (key, entry) in self.claims().filter(|(_, e)| !e.indices.is_empty()) {
            let used = usage.entry(namespace_of(key).to_string()).or_default();
            used.0 += entry.indices.len() as u32;
            used.1 += 1;
        }
        usage
    }

    pub fn claims(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(c, e)| (c.as_str(), e))
    }

    /// Gives claim `claim` (with `uid`) exactly `count` items: keeps what it holds, adds the
    /// lowest free indices or drops its highest values. An entry
    /// of the same name with another uid is never touched: only the caller can tell (by
    /// reading the live claim) that it is stale, and then [`Ledger::release_uid`] frees it first.
    pub fn allocate(&self, claim: &str, uid: &str, count: u32) -> Result<(Ledger, Change), AllocError> {
        let mut next = self.clone();
        let change = next.assign(claim, uid, count)?;
        Ok((next, change))
    }

    /// [`Ledger::allocate`] in place; on an error nothing changed.
    pub fn assign(&mut self, claim: &str, uid: &str, count: u32) -> Result<Change, AllocError> {
        if count > self.capacity() {
            return Err(AllocError::TooSmall { count, capacity: self.capacity() });
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
            self.sort_by_value(&mut held);
        }
        self.entries.insert(claim.to_string(), Entry { uid: uid.to_string(), indices: held });
        Ok(change)
    }

    /// Gives claim `claim` (with `uid`) exactly the items `wanted`, by value: keeps those it
    /// holds, takes the others when they are free and in the spec, lets go of the rest. Never
    /// takes an item from another claim; on an error nothing changed.
    pub fn assign_items(&mut self, claim: &str, uid: &str, wanted: &[String]) -> Result<Change, AllocError> {
        if let Some(e) = self.entries.get(claim).filter(|e| e.uid != uid) {
            return Err(AllocError::HeldByOtherUid { claim: claim.to_string(), uid: e.uid.clone() });
        }
        if !self.entries.contains_key(claim) && self.entries.len() >= MAX_CLAIMS_PER_POOL {
            return Err(AllocError::TooManyClaims { max: MAX_CLAIMS_PER_POOL });
        }
        let held = self.entries.get(claim).map(|e| e.indices.clone()).unwrap_or_default();
        let mut indices = Vec::with_capacity(wanted.len());
        for item in wanted {
            let index = self.index_of(item);
            match index {
                Some(i) if held.contains(&i) => {}
                Some(i) if i < self.capacity() && !self.used.contains(&i) => {}
                Some(i) if self.used.contains(&i) => {
                    let disputed = self.disputes.get(&i).map(|parties| {
                        let names: Vec<&str> = parties.iter().map(|p| p.claim.as_str()).collect();
                        format!("none of {} (they all show it)", names.join(", "))
                    });
                    let holder = self.holder(i).or(disputed).unwrap_or_default();
                    return Err(AllocError::Taken { item: item.clone(), holder });
                }
                _ => return Err(AllocError::NotInPool { item: item.clone() }),
            }
            indices.extend(index);
        }
        let change = Change {
            added: indices.iter().filter(|i| !held.contains(i)).copied().collect(),
            removed: held.iter().filter(|i| !indices.contains(i)).copied().collect(),
        };
        self.mark(&change.removed, false);
        self.mark(&change.added, true);
        self.sort_by_value(&mut indices);
        self.entries.insert(claim.to_string(), Entry { uid: uid.to_string(), indices });
        Ok(change)
    }

    /// The index of item `value`, in the spec or removed from it.
    fn index_of(&self, value: &str) -> Option<u32> {
        let in_spec = match &self.items {
            Items::Range { start, len } => value
                .parse::<i64>()
                .ok()
                .map(|v| v - start)
                .filter(|offset| (0..i64::from(*len)).contains(offset))
                .map(|offset| offset as u32),
            Items::List(list) => list.iter().position(|v| v == value).map(|i| i as u32),
        };
        in_spec.or_else(|| self.removed.iter().position(|v| v == value).map(|i| self.capacity() + i as u32))
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
        let capacity = self.capacity();
        for &i in indices {
            let changed = if used { self.used.insert(i) } else { self.used.remove(&i) };
            if changed && i < capacity {
                self.allocated = if used { self.allocated + 1 } else { self.allocated - 1 };
            }
        }
    }

    /// The indices the ledger gives to `claim` with `uid` (none for another uid).
    pub fn given(&self, claim: &str, uid: &str) -> &[u32] {
        match self.entries.get(claim) {
            Some(e) if e.uid == uid => &e.indices,
            _ => &[],
        }
    }

    /// One walk along the held indices: time and memory grow with what is held and `n`,
    /// not with the pool's capacity.
    fn lowest_free(&self, n: usize) -> Vec<u32> {
        let mut held = self.used.range(..self.capacity()).peekable();
        let mut free = Vec::with_capacity(n.min(self.free() as usize));
        let mut i = 0;
        while free.len() < n && i < self.capacity() {
            if held.next_if_eq(&&i).is_none() {
                free.push(i);
            }
            i += 1;
        }
        free
    }
}

/// The namespace of a ledger key (`namespace/name`).
pub fn namespace_of(key: &str) -> &str {
    key.split_once('/').map_or("", |(namespace, _)| namespace)
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
    runs_below(claim, text, u64::from(capacity))
}

/// Sorted, disjoint runs of numbers below `limit` (at most 2^32).
fn runs_below(claim: &str, text: &str, limit: u64) -> Result<Vec<(u32, u32)>, LedgerError> {
    let capacity = u32::try_from(limit).unwrap_or(u32::MAX);
    let malformed = || LedgerError::Malformed { claim: claim.to_string(), items: preview(text) };
    let number = |s: &str| s.parse::<u64>().map_err(|_| malformed());
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (start, end) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if end >= limit {
            return Err(LedgerError::OutOfRange { claim: claim.to_string(), index: end, capacity });
        }
        // Both fit in u32 now: end < limit <= 2^32 and start <= end is checked next.
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
        let a = |claim: &str, items: &str| Allocation::positions(claim, "u", items);
        assert!(matches!(
            Ledger::from_status(&[a("x/a", "0-2"), a("x/b", "2")], Items::indices(5)),
            Err(LedgerError::Duplicate { .. })
        ));
        assert!(matches!(
            Ledger::from_status(&[a("x/a", "5")], Items::indices(5)),
            Err(LedgerError::OutOfRange { .. })
        ));
        assert!(matches!(
            Ledger::from_status(&[a("x/a", "1"), a("x/a", "2")], Items::indices(5)),
            Err(LedgerError::TwoEntries { .. })
        ));
        let many: Vec<Allocation> = (0..=MAX_CLAIMS_PER_POOL).map(|i| a(&format!("x/{i}"), "")).collect();
        assert!(matches!(Ledger::from_status(&many, Items::indices(5)), Err(LedgerError::TooLong { .. })));
        let ok = Ledger::from_status(&[a("x/a", "0-2"), a("x/b", "4")], Items::indices(5)).unwrap();
        assert_eq!(Ledger::from_status(&ok.to_status(), Items::indices(5)).unwrap(), ok);
    }

    #[test]
    fn a_huge_range_is_refused_before_it_is_expanded() {
        // 2^32 indices would be 16 GiB; the check comes first, so this returns at once.
        let err = Ledger::from_status(&[a_entry("ns/x", "0-4294967295")], Items::indices(6)).unwrap_err();
        assert_eq!(err, LedgerError::OutOfRange { claim: "ns/x".into(), index: 4_294_967_295, capacity: 6 });
        assert!(err.to_string().contains("entry ns/x"), "{err}");
        let err = Ledger::from_status(&[a_entry("ns/y", &"1,".repeat(100))], Items::indices(6)).unwrap_err();
        assert!(matches!(err, LedgerError::Malformed { .. }));
        assert!(err.to_string().len() < 200, "messages stay short: {err}");
        assert!(matches!(
            Ledger::from_status(&[a_entry("ns/z", "99999999999999999999")], Items::indices(6)),
            Err(LedgerError::Malformed { .. })
        ));
    }

    fn a_entry(claim: &str, items: &str) -> Allocation {
        Allocation::positions(claim, "u", items)
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
            let round_trip =
                Ledger::from_status(&ledger.to_status(), Items::indices(64)).expect("no index held twice");
            assert_eq!(round_trip.allocated() + round_trip.free(), 64);
            // What was kept alongside the entries equals what they say.
            assert_eq!(round_trip, ledger);
        }
    }

    fn list(names: &[&str]) -> Items {
        Items::List(names.iter().map(|n| n.to_string()).collect())
    }

    fn held(ledger: &Ledger, claim: &str) -> Vec<String> {
        ledger.describe(&ledger.entry(claim).expect("entry").indices).0
    }

    #[test]
    fn a_resorted_list_keeps_every_claim_on_its_names() {
        let mut ledger = Ledger::new(list(&["red", "green", "blue", "cyan"]));
        ledger.assign("ns/a", "u", 1).unwrap();
        ledger.assign("ns/b", "u", 2).unwrap();
        let resorted =
            Ledger::from_status(&ledger.to_status(), list(&["cyan", "blue", "green", "red"])).unwrap();
        assert_eq!(held(&resorted, "ns/a"), ["red"]);
        assert_eq!(held(&resorted, "ns/b"), ["blue", "green"], "the same names, by name");
        // The one free name is the only one given.
        let (next, change) = resorted.allocate("ns/c", "u", 1).unwrap();
        assert_eq!(next.describe(&change.added).0, ["cyan"]);
    }

    #[test]
    fn a_range_grows_and_shrinks_under_held_items() {
        let mut ledger = Ledger::new(Items::Range { start: 100, len: 4 });
        ledger.assign("ns/a", "u", 3).unwrap(); // 100-102
        // Widened: the same numbers, more free ones.
        let wide = Ledger::from_status(&ledger.to_status(), Items::Range { start: 98, len: 10 }).unwrap();
        assert_eq!(held(&wide, "ns/a"), ["100", "101", "102"]);
        assert_eq!((wide.capacity(), wide.allocated(), wide.free(), wide.removed_held()), (10, 3, 7, 0));
        // Shrunk below held items: they stay held, counted apart, never given again.
        let narrow = Ledger::from_status(&ledger.to_status(), Items::Range { start: 102, len: 3 }).unwrap();
        assert_eq!(held(&narrow, "ns/a"), ["100", "101", "102"], "by value, wherever the spec puts them");
        assert_eq!(
            (narrow.capacity(), narrow.allocated(), narrow.free(), narrow.removed_held()),
            (3, 1, 2, 2)
        );
        let (next, change) = narrow.allocate("ns/b", "u", 2).unwrap();
        assert_eq!(next.describe(&change.added).0, ["103", "104"]);
        assert_eq!(next.allocate("ns/c", "u", 1), Err(AllocError::Exhausted { needed: 1, free: 0 }));
        // A shrink keeps the lowest values, whatever the spec says of them.
        let (shrunk, change) = next.allocate("ns/a", "u", 1).unwrap();
        assert_eq!(shrunk.describe(&change.removed).0, ["101", "102"]);
        assert_eq!(shrunk.removed_held(), 1);
        let round_trip =
            Ledger::from_status(&shrunk.to_status(), Items::Range { start: 102, len: 3 }).unwrap();
        assert_eq!(round_trip.to_status(), shrunk.to_status());
    }

    #[test]
    fn a_format_1_ledger_is_read_by_position_and_written_by_value() {
        let v1 = [Allocation::positions("ns/a", "u", "0-1"), Allocation::positions("ns/b", "u", "3")];
        let ledger = Ledger::from_status(&v1, Items::Range { start: 30000, len: 10 }).unwrap();
        let v2 = ledger.to_status();
        assert_eq!(v2[0].values.as_deref(), Some("30000-30001"));
        assert_eq!(v2[1].values.as_deref(), Some("30003"));
        assert!(v2.iter().all(|a| a.items.is_none() && a.names.is_none()));
        let named =
            Ledger::from_status(&[Allocation::positions("ns/a", "u", "1")], list(&["x", "y"])).unwrap();
        assert_eq!(named.to_status()[0].names, Some(vec!["y".to_string()]));
    }

    #[test]
    fn values_held_twice_or_too_many_or_of_the_other_kind_are_refused() {
        let values = |claim: &str, v: &str| Allocation {
            values: Some(v.into()),
            items: None,
            ..Allocation::positions(claim, "u", "")
        };
        let range = || Items::Range { start: 10, len: 5 };
        let twice = Ledger::from_status(&[values("ns/a", "10-12"), values("ns/b", "12")], range());
        assert!(matches!(twice, Err(LedgerError::Duplicate { item, .. }) if item == "12"));
        // A removed item held twice is refused just the same.
        let twice = Ledger::from_status(&[values("ns/a", "99"), values("ns/b", "99")], range());
        assert!(matches!(twice, Err(LedgerError::Duplicate { .. })));
        let huge = Ledger::from_status(&[values("ns/a", "0-4294967295")], range());
        assert!(matches!(huge, Err(LedgerError::TooManyItems { .. })));
        let bare = Allocation { items: None, ..Allocation::positions("ns/a", "u", "") };
        assert!(matches!(Ledger::from_status(&[bare], range()), Err(LedgerError::NoItems { .. })));
        let names = Allocation {
            names: Some(vec!["x".into()]),
            items: None,
            ..Allocation::positions("ns/a", "u", "")
        };
        assert!(matches!(Ledger::from_status(&[names], range()), Err(LedgerError::WrongKind { .. })));
    }

    #[test]
    fn spec_edits_between_operations_never_move_or_duplicate_an_item() {
        // Random allocations, shrinks and releases on a list pool whose spec is re-sorted,
        // grown and shrunk between them: every value stays with its claim until the claim
        // lets go of it, and no value is held twice.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let spec = |first: u64, len: u64, reversed: bool| {
            let mut names: Vec<String> = (first..first + len).map(|i| format!("i{i}")).collect();
            if reversed {
                names.reverse();
            }
            Items::List(names)
        };
        let mut ledger = Ledger::new(spec(100, 20, false));
        let mut owned: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for _ in 0..2_000 {
            let claim = format!("ns/c{}", next(8));
            match next(4) {
                0 => {
                    let items = spec(95 + next(6), 16 + next(10), next(2) == 0);
                    let ordered = |l: &Ledger| -> Vec<Vec<String>> {
                        l.claims().map(|(_, e)| l.describe(&e.indices).0).collect()
                    };
                    let before = ordered(&ledger);
                    ledger = Ledger::from_status(&ledger.to_status(), items).expect("readable");
                    // In the same order too: a shrink decided under either spec keeps the same.
                    assert_eq!(ordered(&ledger), before);
                }
                1 => {
                    ledger.remove(&claim);
                    owned.remove(&claim);
                }
                _ => {
                    let before: std::collections::BTreeSet<String> = ledger
                        .entry(&claim)
                        .map(|e| ledger.describe(&e.indices).0.into_iter().collect())
                        .unwrap_or_default();
                    if ledger.assign(&claim, "u", 1 + next(3) as u32).is_err() {
                        continue;
                    }
                    let after: std::collections::BTreeSet<String> = ledger
                        .describe(&ledger.entry(&claim).expect("entry").indices)
                        .0
                        .into_iter()
                        .collect();
                    // A claim keeps what it held, or lets go of some of it: it never swaps.
                    assert!(before.is_subset(&after) || after.is_subset(&before), "{before:?} -> {after:?}");
                    owned.insert(claim.clone(), after);
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for (claim, entry) in ledger.claims() {
                let values: std::collections::BTreeSet<String> =
                    ledger.describe(&entry.indices).0.into_iter().collect();
                assert_eq!(
                    Some(&values),
                    owned.get(claim).or(Some(&Default::default())),
                    "{claim} changed by a spec edit"
                );
                for v in values {
                    assert!(seen.insert(v.clone()), "{v} held twice");
                }
            }
        }
    }

    #[test]
    fn a_claim_gets_the_items_it_names_when_they_are_free_and_in_the_pool() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut ledger = Ledger::new(list(&["red", "green", "blue"]));
        ledger.assign("ns/a", "u", 1).unwrap(); // red
        let change = ledger.assign_items("ns/b", "u", &names(&["blue"])).unwrap();
        assert_eq!(ledger.describe(&change.added).0, ["blue"]);
        assert_eq!(
            ledger.assign_items("ns/c", "u", &names(&["red"])),
            Err(AllocError::Taken { item: "red".into(), holder: "ns/a".into() })
        );
        assert_eq!(
            ledger.assign_items("ns/c", "u", &names(&["pink"])),
            Err(AllocError::NotInPool { item: "pink".into() })
        );
        assert!(ledger.entry("ns/c").is_none(), "a refusal changes nothing");
        // Asking for another item: the new one is taken and the old one let go.
        let change = ledger.assign_items("ns/b", "u", &names(&["green"])).unwrap();
        assert_eq!(
            (ledger.describe(&change.added).0, ledger.describe(&change.removed).0),
            (names(&["green"]), names(&["blue"]))
        );
        // A removed item a claim holds may stay named; nobody else can name it.
        let narrowed = Ledger::from_status(&ledger.to_status(), list(&["green", "blue"])).unwrap();
        let mut again = narrowed.clone();
        assert!(again.assign_items("ns/a", "u", &names(&["red"])).is_ok());
        assert_eq!(
            narrowed.clone().assign_items("ns/z", "u", &names(&["red"])),
            Err(AllocError::Taken { item: "red".into(), holder: "ns/a".into() })
        );
    }
}
