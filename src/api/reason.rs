//! The reasons of conditions and Events, one name each. Their strings are API: alerts,
//! `kubectl wait`, dashboards and scripts match on them, so a variant may be added but its
//! text never changed.

/// A condition's or an Event's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // A claim's Bound condition.
    Allocated,
    PoolNotFound,
    PoolNotReady,
    PoolTooSmall,
    PoolExhausted,
    PoolDeleting,
    LedgerCorrupt,
    LockUnavailable,
    ItemsRevoked,
    Releasing,
    ItemTaken,
    ItemNotInPool,
    ItemDisputed,
    NamespaceNotAllowed,
    NamespaceLimitReached,
    // A pool's conditions.
    LedgerConsistent,
    LedgerReadable,
    DeletionBlocked,
    LockAcquired,
    EpochAdvanced,
    RemovedItemsStillHeld,
    AllHeldItemsInSpec,
    ItemsDisputed,
    NoItemDisputed,
    LimitAboveCapacity,
    LimitsWithinCapacity,
    // Events only.
    ItemsAdopted,
    Freed,
    FencedWriteRejected,
    LockEpochAdvanced,
}

impl Reason {
    /// The reasons of a claim's `Bound` condition, in the order dashboards list them.
    pub const BOUND: [Reason; 15] = [
        Reason::Allocated,
        Reason::PoolNotFound,
        Reason::PoolNotReady,
        Reason::PoolTooSmall,
        Reason::PoolExhausted,
        Reason::PoolDeleting,
        Reason::LedgerCorrupt,
        Reason::LockUnavailable,
        Reason::ItemsRevoked,
        Reason::Releasing,
        Reason::ItemTaken,
        Reason::ItemNotInPool,
        Reason::ItemDisputed,
        Reason::NamespaceNotAllowed,
        Reason::NamespaceLimitReached,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Allocated => "Allocated",
            Reason::PoolNotFound => "PoolNotFound",
            Reason::PoolNotReady => "PoolNotReady",
            Reason::PoolTooSmall => "PoolTooSmall",
            Reason::PoolExhausted => "PoolExhausted",
            Reason::PoolDeleting => "PoolDeleting",
            Reason::LedgerCorrupt => "LedgerCorrupt",
            Reason::LockUnavailable => "LockUnavailable",
            Reason::ItemsRevoked => "ItemsRevoked",
            Reason::Releasing => "Releasing",
            Reason::ItemTaken => "ItemTaken",
            Reason::ItemNotInPool => "ItemNotInPool",
            Reason::ItemDisputed => "ItemDisputed",
            Reason::NamespaceNotAllowed => "NamespaceNotAllowed",
            Reason::NamespaceLimitReached => "NamespaceLimitReached",
            Reason::LimitAboveCapacity => "LimitAboveCapacity",
            Reason::LimitsWithinCapacity => "LimitsWithinCapacity",
            Reason::LedgerConsistent => "LedgerConsistent",
            Reason::LedgerReadable => "LedgerReadable",
            Reason::DeletionBlocked => "DeletionBlocked",
            Reason::LockAcquired => "LockAcquired",
            Reason::EpochAdvanced => "EpochAdvanced",
            Reason::RemovedItemsStillHeld => "RemovedItemsStillHeld",
            Reason::AllHeldItemsInSpec => "AllHeldItemsInSpec",
            Reason::ItemsDisputed => "ItemsDisputed",
            Reason::NoItemDisputed => "NoItemDisputed",
            Reason::ItemsAdopted => "ItemsAdopted",
            Reason::Freed => "Freed",
            Reason::FencedWriteRejected => "FencedWriteRejected",
            Reason::LockEpochAdvanced => "LockEpochAdvanced",
        }
    }

    /// Not bound for a reason that only a change of the pool can clear.
    pub const fn waits_for_pool(self) -> bool {
        matches!(
            self,
            Reason::PoolNotFound
                | Reason::PoolNotReady
                | Reason::PoolTooSmall
                | Reason::PoolExhausted
                | Reason::PoolDeleting
                | Reason::LedgerCorrupt
                | Reason::ItemTaken
                | Reason::ItemNotInPool
                | Reason::ItemDisputed
                | Reason::NamespaceNotAllowed
                | Reason::NamespaceLimitReached
        )
    }

    /// The reason a condition carries, if it is one of these.
    pub fn parse(text: &str) -> Option<Reason> {
        Self::all().find(|r| r.as_str() == text)
    }

    /// The reasons of a pool's conditions and of Events only.
    const OTHERS: [Reason; 15] = [
        Reason::LedgerConsistent,
        Reason::LedgerReadable,
        Reason::DeletionBlocked,
        Reason::LockAcquired,
        Reason::EpochAdvanced,
        Reason::RemovedItemsStillHeld,
        Reason::AllHeldItemsInSpec,
        Reason::ItemsDisputed,
        Reason::NoItemDisputed,
        Reason::LimitAboveCapacity,
        Reason::LimitsWithinCapacity,
        Reason::ItemsAdopted,
        Reason::Freed,
        Reason::FencedWriteRejected,
        Reason::LockEpochAdvanced,
    ];

    fn all() -> impl Iterator<Item = Reason> {
        Self::BOUND.into_iter().chain(Self::OTHERS)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_text() {
        for reason in Reason::all() {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            assert_eq!(reason.to_string(), format!("{reason:?}"), "the text is the variant's name");
        }
        assert_eq!(Reason::parse("Custom"), None);
    }
}
