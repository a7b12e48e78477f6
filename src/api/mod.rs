//! The custom resources: `Pool` (cluster-scoped, a finite set of items and the lock that
//! guards its ledger) and `Claim` (namespaced, asks a pool for items).
//!
//! Validation lives in the schema (OpenAPI bounds and CEL rules), so the API server rejects
//! bad input at admission with a clear message, and a stale lock holder's ledger write is
//! rejected by a transition rule on the pool's fencing token.

mod claim;
mod conditions;
mod pool;
mod reason;

pub use crate::ledger::{Allocation, Dispute, Party};
pub use claim::{Claim, ClaimSpec, ClaimStatus, FINALIZER};
pub use conditions::{
    BOUND, ITEMS_DISPUTED, LEDGER_CORRUPT, LIMITS_CLAMPED, LOCK_EPOCH, LOCK_HEALTHY, READY,
    REMOVED_ITEMS_HELD, condition, is_true, same_conditions, set_condition,
};
pub use pool::{
    AllowedNamespaces, Fairness, FenceRule, ItemRange, LockSpec, MAX_LIST_ITEMS, MAX_POOL_ITEMS,
    NEW_LOCK_EPOCH, NamespaceLimits, NamespacesFrom, POOL_FINALIZER, Pool, PoolItems, PoolSpec, PoolStatus,
};
pub use reason::Reason;

use kube::CustomResourceExt;

/// The API group of lockguard's resources.
pub const GROUP: &str = "lockguard.dev";

/// The CRDs as YAML documents, as checked in under `crds/`.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    Ok(format!(
        "---\n{}---\n{}",
        serde_norway::to_string(&Pool::crd())?,
        serde_norway::to_string(&Claim::crd())?
    ))
}
