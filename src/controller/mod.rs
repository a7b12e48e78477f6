//! The operator: a Claim controller and a Pool controller on every replica, each pool served
//! by one of them (`members.rs` announces the replicas, `shard.rs` assigns the pools).
//!
//! Reconciling a claim: take the pool's lock (backend from the pool) → read the ledger →
//! allocate or free (a pure function, `crate::ledger`) → write the ledger with the token and
//! a resourceVersion precondition → write the claim's status → release.
//!
//! The files, from the decisions down to the wiring: `plan.rs` and `decide.rs` decide
//! without I/O (`adopt.rs` for a pool that lost its ledger); `claim.rs` and `pool.rs` reconcile; `hold.rs` runs a pool's holds for all of
//! its claims, `batches.rs` is what the claims and that task share; `pool_ledger.rs` writes
//! a ledger fenced; `claim_cache.rs` finds a pool's claims, `narrow.rs` asks only for the pools a replica may serve and their claims; `context.rs` holds what they all share, one value per responsibility
//! (`locks.rs`, `events.rs`, `defer.rs`, `epoch.rs`, `policy.rs`, `members.rs`); `run.rs` wires
//! the watches and both controllers.

mod adopt;
mod batches;
mod claim;
mod claim_cache;
mod context;
mod decide;
mod defer;
mod epoch;
mod error;
mod events;
mod fetch;
mod gauges;
mod hold;
mod locks;
mod members;
mod narrow;
mod plan;
mod policy;
mod pool;
mod pool_ledger;
mod run;
mod shard;
mod turns;

pub use context::Settings;
pub use error::Error;
pub use locks::Locks;
pub use run::run;
pub use shard::owner as pool_owner;
