//! The records of a rebuilt ledger: items several claims show (disputes) and what adopting
//! one claim's items did. Plain data, so that the ledger and its adoption rules share them
//! without importing each other.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// An item shown by several claims, held for none of them (`status.disputed[]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Dispute {
    pub item: String,
    pub claims: Vec<Party>,
}

// A claim that shows a disputed item.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub struct Party {
    pub claim: String,
    pub uid: String,
}

impl Party {
    pub fn new(claim: &str, uid: &str) -> Self {
        Self { claim: claim.into(), uid: uid.into() }
    }
}

/// What adopting one claim's items did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Items now the claim's in the ledger.
    pub taken: Vec<String>,
    /// Items another claim shows or holds as well: now disputed.
    pub disputed: Vec<String>,
}
