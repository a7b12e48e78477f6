use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::Selector;
use kube::{CustomResource, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ledger::{Allocation, Dispute, Items, LEDGER_FORMAT, Ledger, LedgerError, MAX_CLAIMS_PER_POOL};
use lockguard_lock::Backend;

/// The finalizer that keeps a pool while claims hold its items.
pub const POOL_FINALIZER: &str = "lockguard.dev/pool-in-use";
/// A new value asks the operator to open a new lock epoch for the pool (once per value): the
/// way out of a stored fencing token that no lock can reach.
pub const NEW_LOCK_EPOCH: &str = "lockguard.dev/new-lock-epoch";

/// Largest pool: a range of this many items. The ledger stores held numbers as compressed
/// runs ("30000-30099,30120") for at most [`MAX_CLAIMS_PER_POOL`] claims with names of at most
/// 63 characters, so even a fully fragmented ledger of ten-digit numbers stays under 1.53 MB,
/// inside etcd's 1.5 MiB request limit (a unit test builds that worst case).
pub const MAX_POOL_ITEMS: u32 = 65_536;
/// Largest explicit list: 4,096 items of at most 63 characters (~260 KB in the spec).
pub const MAX_LIST_ITEMS: u32 = 4_096;

/// A finite set of unique items that claims allocate from, and the lock that guards the
/// allocation ledger.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lockguard.dev",
    version = "v1alpha1",
    kind = "Pool",
    status = "PoolStatus",
    shortname = "lgpool",
    category = "lockguard",
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.lock.backend"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.free"),
    printcolumn(name = "Capacity", type_ = "integer", json_path = ".status.capacity"),
    printcolumn(name = "Removed", type_ = "integer", json_path = ".status.removedHeld", description = "items removed from spec.items that claims still hold"),
    printcolumn(name = "Disallowed", type_ = "integer", json_path = ".status.disallowedHeld", priority = 1, description = "items held by namespaces that spec.allowedNamespaces no longer admits"),
    printcolumn(name = "Token", type_ = "integer", json_path = ".status.fencingToken"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.lockEpoch", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "!has(oldSelf.status) || !has(oldSelf.status.allocated) || oldSelf.status.allocated == 0 || (has(oldSelf.status.ledgerFormat) && oldSelf.status.ledgerFormat >= 2) || self.spec.items == oldSelf.spec.items"
    ).message("spec.items cannot change while items are allocated under ledger format 1 (items named by position); the operator moves the ledger to format 2 at its next write, then items may be added and removed at any time")
)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    pub items: PoolItems,
    #[serde(default)]
    pub lock: LockSpec,
    /// How claims that do not fit wait. A claim that does not fit holds up the younger claims
    /// of its own namespace only; one that has waited longer than `maxWaitSeconds` (default
    /// 300) holds up every namespace until it fits, so that no claim waits for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness: Option<Fairness>,
    /// Which namespaces may claim items (default: all). A namespace that stops being allowed
    /// keeps what its claims hold and gets nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_namespaces: Option<AllowedNamespaces>,
    /// How much one namespace may hold. A claim past a limit waits (`NamespaceLimitReached`);
    /// a limit above what the pool has is clamped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<NamespaceLimits>,
}

/// Which namespaces may claim from a pool, in the shape of Gateway API's
/// `allowedRoutes.namespaces`: `from: All`, or `from: Selector` with a label selector over
/// namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.from == 'Selector' ? has(self.selector) : !has(self.selector)").message("allowedNamespaces.selector is required with from: Selector, and allowed only with it"))]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// `All` (the default) or `Selector`.
    #[serde(default)]
    pub from: NamespacesFrom,
    /// Namespaces whose labels match may claim (with `from: Selector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NamespacesFrom {
    #[default]
    All,
    Selector,
}

impl AllowedNamespaces {
    /// The selector namespaces must match (`None`: every namespace may claim); `Err` says why
    /// it cannot be read (then no namespace may).
    pub fn selector(&self) -> Result<Option<Selector>, String> {
        match (self.from, &self.selector) {
            (NamespacesFrom::All, _) => Ok(None),
            (NamespacesFrom::Selector, None) => Err("from: Selector without a selector".into()),
            (NamespacesFrom::Selector, Some(selector)) => Selector::try_from(selector.clone())
                .map(Some)
                .map_err(|e| format!("spec.allowedNamespaces.selector is invalid: {e}")),
        }
    }
}

#[cfg(test)]
impl AllowedNamespaces {
    /// Whether a namespace with `labels` may claim; `Err` as for [`Self::selector`]. The
    /// operator judges namespaces through `Context::admission`, which reads the selector once.
    fn admits(&self, labels: &std::collections::BTreeMap<String, String>) -> Result<bool, String> {
        use kube::core::SelectorExt;
        Ok(self.selector()?.is_none_or(|s| s.matches(labels)))
    }
}

/// Per-namespace limits of a pool. Zero is refused at admission; a limit above what the pool
/// can give (its capacity, or the most claims one pool serves) is clamped to it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceLimits {
    /// Most items the claims of one namespace may hold together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_items_per_namespace: Option<i32>,
    /// Most claims of one namespace that may hold items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_claims_per_namespace: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fairness {
    /// Seconds a claim may wait for items before every namespace waits for it.
    #[schemars(range(min = 1, max = 86_400))]
    pub max_wait_seconds: i64,
}

impl NamespaceLimits {
    /// The limits in force for a pool of `capacity` items: `(items, claims)`, each clamped
    /// to what the pool can give.
    pub fn in_force(&self, capacity: u32) -> (Option<u32>, Option<u32>) {
        let clamp = |limit: Option<i32>, most: u32| limit.map(|l| (l.max(1) as u32).min(most));
        (
            clamp(self.max_items_per_namespace, capacity.max(1)),
            clamp(self.max_claims_per_namespace, MAX_CLAIMS_PER_POOL as u32),
        )
    }

    /// What was clamped, for the pool's `LimitsClamped` condition (`None`: nothing).
    pub fn clamped(&self, capacity: u32) -> Option<String> {
        let (items, claims) = self.in_force(capacity);
        let mut said = Vec::new();
        if let (Some(asked), Some(used)) = (self.max_items_per_namespace, items)
            && asked.max(1) as u32 != used
        {
            said.push(format!(
                "maxItemsPerNamespace {asked} is above the pool's {capacity} items; {used} applies"
            ));
        }
        if let (Some(asked), Some(used)) = (self.max_claims_per_namespace, claims)
            && asked.max(1) as u32 != used
        {
            said.push(format!(
                "maxClaimsPerNamespace {asked} is above the {used} claims one pool serves; {used} applies"
            ));
        }
        (!said.is_empty()).then(|| said.join("; "))
    }
}

#[cfg(test)]
impl PoolSpec {
    /// A spec of items `start..=end` with every other field at its default, for unit tests.
    pub(crate) fn of_range(start: i64, end: i64) -> Self {
        Self {
            items: PoolItems { range: Some(ItemRange { start, end }), list: None },
            lock: LockSpec::default(),
            fairness: None,
            allowed_namespaces: None,
            limits: None,
        }
    }
}

impl PoolSpec {
    /// The per-namespace limits in force: `(items, claims)` (see [`NamespaceLimits::in_force`]).
    pub fn limits_in_force(&self) -> (Option<u32>, Option<u32>) {
        self.limits.map_or((None, None), |l| l.in_force(self.items.capacity()))
    }

    /// The selector claims' namespaces must match (see [`AllowedNamespaces::selector`]).
    pub fn namespace_selector(&self) -> Result<Option<Selector>, String> {
        self.allowed_namespaces.as_ref().map_or(Ok(None), AllowedNamespaces::selector)
    }

    /// Whether some namespaces may not claim (the namespaces' labels matter).
    pub fn selects_namespaces(&self) -> bool {
        self.allowed_namespaces.as_ref().is_some_and(|a| a.from != NamespacesFrom::All)
    }

    /// How long a claim may wait for items before every namespace waits for it.
    pub fn max_wait(&self) -> std::time::Duration {
        let seconds = self.fairness.map_or(300, |f| f.max_wait_seconds);
        std::time::Duration::from_secs(seconds.clamp(1, 86_400) as u64)
    }
}

/// Exactly one of `range` or `list`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.range) != has(self.list)").message("give exactly one of items.range or items.list"))]
#[serde(rename_all = "camelCase")]
pub struct PoolItems {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<ItemRange>,
    /// Unique, non-empty strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_LIST_ITEMS), extend("x-kubernetes-list-type" = "set", "items" = {"type": "string", "minLength": 1, "maxLength": 63}))]
    pub list: Option<Vec<String>>,
}

/// An inclusive integer range, e.g. 30000–30999.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.start <= self.end").message("items.range.start must not be greater than items.range.end"))]
#[x_kube(validation = Rule::new("self.end - self.start < 65536").message("a pool holds at most 65536 items"))]
pub struct ItemRange {
    #[schemars(range(min = 0, max = 4_294_967_295i64))]
    pub start: i64,
    #[schemars(range(min = 0, max = 4_294_967_295i64))]
    pub end: i64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockSpec {
    #[serde(default)]
    pub backend: Backend,
    /// Seconds a lock lives without a keep-alive.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 2, max = 300))]
    pub ttl_seconds: i32,
    /// Seconds a reconcile waits for the lock before it reports LockUnavailable.
    #[serde(default = "default_acquire_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub acquire_timeout_seconds: i32,
}

fn default_ttl() -> i32 {
    10
}

fn default_acquire_timeout() -> i32 {
    30
}

impl PoolItems {
    /// How many items the pool has.
    pub fn capacity(&self) -> u32 {
        match (&self.range, &self.list) {
            (Some(r), _) => u32::try_from(r.end - r.start + 1).unwrap_or(0).min(MAX_POOL_ITEMS),
            (None, Some(list)) => list.len() as u32,
            (None, None) => 0,
        }
    }

    /// The items in spec order, as the ledger indexes them.
    pub fn items(&self) -> Items {
        match (&self.range, &self.list) {
            (Some(r), _) => Items::Range { start: r.start, len: self.capacity() },
            (None, Some(list)) => Items::List(list.clone()),
            (None, None) => Items::List(Vec::new()),
        }
    }
}

impl Default for LockSpec {
    fn default() -> Self {
        Self {
            backend: Backend::Etcd,
            ttl_seconds: default_ttl(),
            acquire_timeout_seconds: default_acquire_timeout(),
        }
    }
}

/// The status's fencing rules (CEL transition rules below). Each rule's message is its
/// [`FenceRule::message`], so the operator tells from a refused write which rule refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceRule {
    /// Every fence field is written once any is.
    FenceFields,
    /// The lock epoch never goes back.
    StaleEpoch,
    /// Within an epoch, one lock service.
    OtherService,
    /// Within an epoch, the fencing token never goes back.
    StaleToken,
    /// The ledger format never goes back or disappears.
    OlderFormat,
}

impl FenceRule {
    pub const ALL: [FenceRule; 5] = [
        FenceRule::FenceFields,
        FenceRule::StaleEpoch,
        FenceRule::OtherService,
        FenceRule::StaleToken,
        FenceRule::OlderFormat,
    ];

    /// The message the API server returns when the rule refuses a write.
    pub const fn message(self) -> &'static str {
        match self {
            FenceRule::FenceFields => {
                "a ledger write must carry lockBackend, lockService, lockEpoch and fencingToken"
            }
            FenceRule::StaleEpoch => {
                "stale lock epoch: the ledger was written under a newer lock service; this holder's lock belongs to an older one"
            }
            FenceRule::OtherService => {
                "another lock service in the same epoch: the first write under a new lock service must advance lockEpoch"
            }
            FenceRule::StaleToken => {
                "stale fencing token: the ledger was written under a newer lock; this holder lost its lock"
            }
            FenceRule::OlderFormat => {
                "older ledger format: the ledger was written by a newer lockguard; a replica of an older version must not write it"
            }
        }
    }

    /// How logs and errors name it.
    pub const fn name(self) -> &'static str {
        match self {
            FenceRule::FenceFields => "fence-fields rule",
            FenceRule::StaleEpoch => "lock-epoch rule",
            FenceRule::OtherService => "lock-service rule",
            FenceRule::StaleToken => "fencing-token rule",
            FenceRule::OlderFormat => "ledger-format rule",
        }
    }

    /// The rule that refused a write, from the API server's message.
    pub fn refused(message: &str) -> Option<FenceRule> {
        Self::ALL.into_iter().find(|rule| message.contains(rule.message()))
    }
}

/// The pool's ledger and health. Written only under the pool's lock, with the lock's
/// fencing token and token space: the API server rejects a token lower than the stored one
/// of the same lock service, and any write of an older lock epoch.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new(
    "(!has(oldSelf.fencingToken) || has(self.fencingToken)) && (!has(oldSelf.lockEpoch) || (has(self.lockEpoch) && has(self.lockService) && has(self.lockBackend) && has(self.fencingToken)))"
).message(FenceRule::FenceFields.message()))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.lockEpoch) || !has(self.lockEpoch) || self.lockEpoch >= oldSelf.lockEpoch"
).message(FenceRule::StaleEpoch.message()))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.lockEpoch) || !has(self.lockEpoch) || self.lockEpoch != oldSelf.lockEpoch || (has(self.lockService) && has(oldSelf.lockService) && self.lockService == oldSelf.lockService)"
).message(FenceRule::OtherService.message()))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.fencingToken) || !has(self.fencingToken) || (has(self.lockEpoch) && (!has(oldSelf.lockEpoch) || self.lockEpoch > oldSelf.lockEpoch)) || self.fencingToken >= oldSelf.fencingToken"
).message(FenceRule::StaleToken.message()))]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.ledgerFormat) || (has(self.ledgerFormat) && self.ledgerFormat >= oldSelf.ledgerFormat)"
).message(FenceRule::OlderFormat.message()))]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub capacity: i32,
    #[serde(default)]
    pub allocated: i32,
    #[serde(default)]
    pub free: i32,
    /// The backend that issued `fencingToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_backend: Option<Backend>,
    /// Token of the lock under which the ledger was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<i64>,
    /// The lock service that issued `fencingToken`: `etcd:<cluster id>` or `lease:<uid>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_service: Option<String>,
    /// Grows by one whenever the lock service changes (a backend switch, a re-created
    /// Lease, a replaced lock etcd); tokens compare only within one epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_epoch: Option<i64>,
    /// Identity of the replica that last wrote the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<String>,
    /// How the ledger names items: 2, by value. The API server refuses a status that lowers
    /// or drops it, so a replica of an older version cannot write a ledger it would misread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_format: Option<i64>,
    /// The value of the `lockguard.dev/new-lock-epoch` annotation last honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch_request: Option<String>,
    /// Items removed from spec.items that claims still hold (theirs until released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_held: Option<i32>,
    /// Items held by claims of namespaces that spec.allowedNamespaces no longer admits
    /// (theirs until released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disallowed_held: Option<i32>,
    /// Which claim holds which items (by value: numbers as compressed runs, or names).
    #[serde(default)]
    #[schemars(length(max = MAX_CLAIMS_PER_POOL), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["claim"]))]
    pub ledger: Vec<Allocation>,
    /// Items that several claims showed when the ledger was rebuilt from them (the pool was
    /// re-created without its status): given to none of them, nor to any other claim, until
    /// all but one let go. Always written, so that a merge patch clears it.
    #[serde(default)]
    #[schemars(length(max = MAX_CLAIMS_PER_POOL))]
    pub disputed: Vec<Dispute>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Pool {
    /// The ledger its status holds, checked against its capacity.
    pub fn ledger(&self) -> Result<Ledger, LedgerError> {
        let status = self.status.as_ref();
        if let Some(format) = status.and_then(|s| s.ledger_format).filter(|f| *f > LEDGER_FORMAT) {
            return Err(LedgerError::NewerFormat { format });
        }
        let allocations = status.map(|s| s.ledger.as_slice()).unwrap_or_default();
        let disputed = status.map(|s| s.disputed.as_slice()).unwrap_or_default();
        Ledger::from_status(allocations, self.spec.items.items())?.with_disputes(disputed)
    }

    pub fn is_deleting(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }

    /// Whether it carries its deletion protection.
    pub fn is_protected(&self) -> bool {
        self.finalizers().iter().any(|f| f == POOL_FINALIZER)
    }

    /// Claims get items only from a pool that is not being deleted and carries its
    /// deletion protection: a pool that could vanish with its ledger would leave its claims
    /// holding items nobody records.
    pub fn may_grow(&self) -> bool {
        !self.is_deleting() && self.is_protected()
    }

    /// The value of its new-lock-epoch annotation, while that request is not honoured yet.
    pub fn epoch_requested(&self) -> Option<&str> {
        let asked = self.annotations().get(NEW_LOCK_EPOCH).map(String::as_str).filter(|v| !v.is_empty())?;
        let honoured = self.status.as_ref().and_then(|s| s.epoch_request.as_deref());
        (honoured != Some(asked)).then_some(asked)
    }

    /// Whether its status lost every fence field (or never had them): nothing of a ledger
    /// written under a lock is left.
    pub fn lost_ledger(&self) -> bool {
        self.status.as_ref().is_none_or(|s| s.fencing_token.is_none() && s.lock_epoch.is_none())
    }

    /// Its resourceVersion as a number (one etcd orders them).
    pub fn version(&self) -> u64 {
        self.resource_version().and_then(|v| v.parse().ok()).unwrap_or_default()
    }

    /// The newer of two copies of a pool (by resourceVersion).
    pub fn newest(a: Option<Arc<Pool>>, b: Option<Arc<Pool>>) -> Option<Arc<Pool>> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.version() > a.version() { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_refusal_is_named_by_the_rule_that_refused_it() {
        let message = format!(
            "Pool.lockguard.dev \"p\" is invalid: status: Invalid value: \"object\": {}",
            FenceRule::StaleEpoch.message()
        );
        assert_eq!(FenceRule::refused(&message), Some(FenceRule::StaleEpoch));
        assert_eq!(FenceRule::refused(FenceRule::StaleToken.message()), Some(FenceRule::StaleToken));
        assert_eq!(FenceRule::refused("something else"), None);
    }

    #[test]
    fn every_fence_rule_is_in_the_crd_with_its_message() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_string(&Pool::crd()).expect("crd");
        for rule in FenceRule::ALL {
            assert!(crd.contains(rule.message()), "{rule:?} missing from the CRD");
        }
    }

    #[test]
    fn a_full_fragmented_ledger_of_the_largest_pool_fits_one_object() {
        // Worst case: the most claims, with the longest names (63 + 63), and every one of the
        // 65,536 items, ten-digit numbers (the highest range), in a run of its own.
        let capacity = MAX_POOL_ITEMS;
        let start = 4_294_967_295 - i64::from(capacity) + 1;
        let claims = MAX_CLAIMS_PER_POOL as u32;
        let per_claim = capacity / claims;
        let allocations: Vec<Allocation> = (0..claims)
            .map(|c| {
                let positions = (0..per_claim).map(|k| c + k * claims).collect::<Vec<_>>();
                let key = format!("{:0>63}/{:0>63}", c, c);
                Allocation::positions(
                    &key,
                    "01234567-89ab-cdef-0123-456789abcdef",
                    &crate::ledger::format_indices(&positions),
                )
            })
            .collect();
        let ledger = Ledger::from_status(&allocations, Items::Range { start, len: capacity }).unwrap();
        assert_eq!(ledger.free(), 0);
        let bytes = serde_json::to_vec(&ledger.to_status()).unwrap().len();
        // etcd's default request limit, less room for the pool's metadata, spec and conditions.
        let limit = 1_572_864 - 32_768;
        assert!(bytes < limit, "ledger JSON is {bytes} bytes; more than {limit}");
    }

    #[test]
    fn limits_above_what_the_pool_can_give_are_clamped_and_said() {
        let limits =
            NamespaceLimits { max_items_per_namespace: Some(50), max_claims_per_namespace: Some(10) };
        assert_eq!(limits.in_force(20), (Some(20), Some(10)));
        let said = limits.clamped(20).expect("clamped");
        assert!(said.contains("maxItemsPerNamespace 50 is above the pool's 20 items; 20 applies"), "{said}");
        assert_eq!(limits.clamped(50), None);
        let claims = NamespaceLimits { max_items_per_namespace: None, max_claims_per_namespace: Some(5_000) };
        assert_eq!(claims.in_force(20), (None, Some(MAX_CLAIMS_PER_POOL as u32)));
        assert!(claims.clamped(20).is_some_and(|s| s.contains("maxClaimsPerNamespace 5000")));
    }

    #[test]
    fn allowed_namespaces_select_by_labels() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let all = AllowedNamespaces::default();
        assert_eq!(all.admits(&labels(&[])), Ok(true));
        let selector =
            LabelSelector { match_labels: Some(labels(&[("team", "blue")])), ..Default::default() };
        let selected = AllowedNamespaces { from: NamespacesFrom::Selector, selector: Some(selector) };
        assert_eq!(selected.admits(&labels(&[("team", "blue"), ("x", "y")])), Ok(true));
        assert_eq!(selected.admits(&labels(&[("team", "red")])), Ok(false));
        let bad = LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "team".into(),
                    operator: "Sometimes".into(),
                    values: None,
                },
            ]),
            ..Default::default()
        };
        let invalid = AllowedNamespaces { from: NamespacesFrom::Selector, selector: Some(bad) };
        assert!(invalid.admits(&labels(&[("team", "blue")])).is_err());
    }
}
