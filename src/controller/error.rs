//! What a reconcile can fail with, and the label each failure carries in logs and metrics.

use std::time::Duration;

use lockguard_lock::{Backend, LockError};

use crate::ledger::LedgerError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lock: {0}")]
    Lock(#[from] LockError),
    #[error("pool {pool}: corrupt ledger: {source}")]
    Ledger { pool: String, source: LedgerError },
    #[error(
        "pool {pool}: ledger write with token {token} rejected by its {by}: another holder wrote the ledger, this one lost its lock"
    )]
    Fenced { pool: String, token: u64, by: &'static str },
    #[error("{claim} changed since it was read; retrying from a fresh read")]
    Changed { claim: String },
    #[error("invariant: {0}")]
    Invariant(String),
    #[error(
        "pool {pool}: its lock backend changed to {wanted:?} while this replica held the {held:?} lock; retrying under the new lock"
    )]
    BackendChanged { pool: String, held: Backend, wanted: Backend },
    #[error(
        "pool {pool}: a new lock service opens a new epoch once the old one was quiet for a TTL; {wait:?} to go"
    )]
    EpochWait { pool: String, wait: Duration },
    #[error(
        "pool {pool}: the API server serves a Pool CRD older than this operator and refused the ledger write ({message}); apply the CRDs of this release (crds/)"
    )]
    OutdatedCrd { pool: String, message: String },
}

impl Error {
    /// A metric and log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Lock(_) => "lock",
            Error::Ledger { .. } => "ledger",
            Error::Fenced { .. } => "fenced",
            Error::Changed { .. } => "changed",
            Error::Invariant(_) => "invariant",
            Error::BackendChanged { .. } => "backend_changed",
            Error::EpochWait { .. } => "epoch_wait",
            Error::OutdatedCrd { .. } => "outdated_crd",
        }
    }
}
