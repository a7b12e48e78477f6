use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

use super::conditions::BOUND;
use super::pool::Pool;

/// The finalizer that returns a claim's items before the claim goes away.
pub const FINALIZER: &str = "lockguard.dev/release-items";

/// A request for `count` unique items from a pool.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lockguard.dev",
    version = "v1alpha1",
    kind = "Claim",
    namespaced,
    status = "ClaimStatus",
    shortname = "lgclaim",
    category = "lockguard",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.poolRef"),
    printcolumn(name = "Count", type_ = "integer", json_path = ".spec.count"),
    printcolumn(name = "Items", type_ = "string", json_path = ".status.summary"),
    printcolumn(name = "Bound", type_ = "string", json_path = ".status.conditions[?(@.type==\"Bound\")].status"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Bound\")].reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Lets each replica watch only the claims of the pools it may serve (a field selector).
    selectable = ".spec.poolRef",
    validation = Rule::new("size(self.metadata.name) <= 63").message("a claim name has at most 63 characters (it is kept in the pool's ledger)")
)]
#[x_kube(validation = Rule::new("!has(self.items) || size(self.items) == self.count").message("spec.items must name exactly spec.count items"))]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// Name of the Pool to allocate from; immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.poolRef is immutable; create a new claim instead"))]
    #[schemars(length(min = 1, max = 253))]
    pub pool_ref: String,
    /// How many items. Changing it grows or shrinks the allocation, keeping the lowest items.
    #[schemars(range(min = 1, max = super::pool::MAX_POOL_ITEMS))]
    pub count: i32,
    /// The items this claim asks for, by value (like a Service's `nodePort`): granted when
    /// free, never taken from another claim. A binding kept in Git, or restored, names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = super::pool::MAX_LIST_ITEMS), extend("x-kubernetes-list-type" = "set", "items" = {"type": "string", "minLength": 1, "maxLength": 63}))]
    pub items: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The items this claim holds.
    #[serde(default)]
    pub items: Vec<String>,
    /// The items in short form, e.g. `30000-30004`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Token of the lock under which the items were allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<i64>,
    /// The uid of the pool whose ledger gives the items: a pool re-created under the same
    /// name has another, and adopts the items this status shows instead of taking them back.
    #[serde(default, rename = "poolUID", skip_serializing_if = "Option::is_none")]
    pub pool_uid: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Claim {
    /// How this claim's messages name claim `other` (`namespace/name`): by name within its
    /// own namespace, never by the name of another tenant's claim.
    pub fn refer_to(&self, other: &str) -> String {
        let own = self.namespace().unwrap_or_default();
        match other.split_once('/') {
            Some((namespace, _)) if namespace == own => format!("claim {other}"),
            _ => "a claim of another namespace".into(),
        }
    }

    /// `namespace/name`, the claim's key in a pool's ledger.
    pub fn ledger_key(&self) -> String {
        format!("{}/{}", self.namespace().unwrap_or_default(), self.name_any())
    }

    pub fn bound_condition(&self) -> Option<&Condition> {
        self.status.as_ref()?.conditions.iter().find(|c| c.type_ == BOUND)
    }

    pub fn is_bound(&self) -> bool {
        self.bound_condition().is_some_and(|c| c.status == "True")
    }

    /// The items its status shows.
    pub fn shown_items(&self) -> &[String] {
        self.status.as_ref().map(|s| s.items.as_slice()).unwrap_or_default()
    }

    /// Whether the items its status shows come from a ledger `pool` no longer has: the pool
    /// was re-created (another uid), or its status lost every fence field. Only such items
    /// are adopted by the pool; any other status ahead of the ledger is taken back.
    pub fn shows_lost_ledger(&self, pool: &Pool) -> bool {
        !self.shown_items().is_empty() && (self.recorded_by_another(pool) || pool.lost_ledger())
    }

    /// Whether its status records another incarnation of `pool` (another uid).
    pub fn recorded_by_another(&self, pool: &Pool) -> bool {
        let recorded = self.status.as_ref().and_then(|s| s.pool_uid.as_ref());
        recorded.is_some_and(|uid| Some(uid) != pool.metadata.uid.as_ref())
    }

    /// Whether it carries the finalizer that returns its items.
    pub fn has_finalizer(&self) -> bool {
        self.finalizers().iter().any(|f| f == FINALIZER)
    }
}
