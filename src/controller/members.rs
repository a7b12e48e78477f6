//! The replicas that serve pools: each announces itself with a Lease of its own in the
//! operator's namespace, renewed while it runs and deleted when it stops. A member is live while
//! its Lease changed less than its duration ago, as this replica observed it (its own clock, not
//! the writer's), so clocks that disagree do not split the members' views for long.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::{shard, turns};

/// The label that marks a member Lease; its value is the replica's shard group.
pub const MEMBER_LABEL: &str = "lockguard.dev/member";
const FIELD_MANAGER: &str = "lockguard-member";

/// One member Lease as this replica last saw it.
#[derive(Debug, Clone)]
struct Seen {
    identity: String,
    duration: Duration,
    version: String,
    /// When it last changed, on this replica's clock.
    changed: Instant,
}

/// Which replicas serve pools, and whether this one serves a given pool.
pub struct Members {
    identity: String,
    group: String,
    /// Off: every replica serves every pool (the pool lock decides who writes).
    shard: bool,
    duration: Duration,
    seen: RwLock<BTreeMap<String, Seen>>,
    /// The live members as last computed (sorted), this replica always among them.
    live: RwLock<Arc<Vec<String>>>,
    /// The member Leases were listed once: before that this replica serves nothing, since it
    /// would take itself for the only member.
    listed: AtomicBool,
    first_listing: tokio::sync::Notify,
    /// Pools this replica holds at once: its share of the turns, as the pools were last
    /// divided (all of them until then).
    holds_at_once: AtomicUsize,
}

impl Members {
    pub fn new(identity: &str, group: &str, shard: bool, duration: Duration) -> Self {
        Self {
            identity: identity.to_string(),
            group: group.to_string(),
            shard,
            duration,
            seen: RwLock::default(),
            live: RwLock::new(Arc::new(vec![identity.to_string()])),
            listed: AtomicBool::new(false),
            first_listing: tokio::sync::Notify::new(),
            holds_at_once: AtomicUsize::new(turns::holds_at_once(0, 0)),
        }
    }

    /// Returns once the member Leases were listed (at once when not sharded). The claim watch
    /// waits for it: a claim that went by before, when this replica served nothing, would be
    /// dropped for good. One waiter only.
    pub async fn until_listed(&self) {
        if self.shard {
            self.first_listing.notified().await;
        }
    }

    /// Whether this replica serves pool `pool`.
    pub fn serves(&self, pool: &str) -> bool {
        !self.shard
            || (self.listed.load(Ordering::Acquire)
                && shard::owner(pool, &self.live()) == Some(self.identity.as_str()))
    }

    pub fn sharded(&self) -> bool {
        self.shard
    }

    /// Whether the member Leases were listed once (see [`Members::until_listed`]).
    pub fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Records that this replica serves `served` of the `known` pools.
    pub fn set_share(&self, served: usize, known: usize) {
        self.holds_at_once.store(turns::holds_at_once(served, known), Ordering::Relaxed);
    }

    /// How many pools this replica holds at once: its share of the turns.
    pub fn holds_at_once(&self) -> usize {
        self.holds_at_once.load(Ordering::Relaxed)
    }

    /// The live members as last computed.
    pub fn live(&self) -> Arc<Vec<String>> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Computes the live members at `now`; returns the previous list when it changed.
    pub fn refresh(&self, now: Instant) -> Option<Arc<Vec<String>>> {
        let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
        let mut live: Vec<String> = seen
            .values()
            .filter(|s| now.saturating_duration_since(s.changed) < s.duration)
            .map(|s| s.identity.clone())
            .chain([self.identity.clone()])
            .collect();
        live.sort();
        live.dedup();
        let mut current = self.live.write().unwrap_or_else(|e| e.into_inner());
        (**current != live).then(|| std::mem::replace(&mut *current, Arc::new(live)))
    }

    /// Records what the member watch delivered; true on the first complete listing (until
    /// then this replica served nothing).
    fn observe(&self, event: &Event<Lease>) -> bool {
        let first = matches!(event, Event::InitDone) && !self.listed.swap(true, Ordering::AcqRel);
        if first {
            self.first_listing.notify_one();
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Init => {}
            Event::InitApply(lease) | Event::Apply(lease) => {
                let name = lease.name_any();
                let previous = seen.get(&name);
                if let Some(next) = seen_of(lease, previous, self.duration) {
                    seen.insert(name, next);
                }
            }
            Event::Delete(lease) => {
                seen.remove(&lease.name_any());
            }
            Event::InitDone => {}
        }
        first
    }

    /// The member Lease name of `identity` (a DNS subdomain of at most 253 characters).
    pub fn lease_name(identity: &str) -> String {
        let cleaned: String = identity
            .to_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' })
            .collect();
        let name = format!("lockguard-member-{cleaned}");
        name.chars().take(253).collect::<String>().trim_end_matches(['-', '.']).to_string()
    }
}

/// A Lease as a member record: unchanged since `previous` keeps its time; seen for the first
/// time, it dates from its renewTime (so a member that died before this replica started is not
/// live for a whole duration), never later than now.
fn seen_of(lease: &Lease, previous: Option<&Seen>, default: Duration) -> Option<Seen> {
    let spec = lease.spec.as_ref()?;
    let identity = spec.holder_identity.clone()?;
    let version = lease.resource_version().unwrap_or_default();
    let duration =
        spec.lease_duration_seconds.map_or(default, |s| Duration::from_secs(s.clamp(1, 3600) as u64));
    let changed = match previous {
        Some(p) if p.version == version => p.changed,
        Some(_) => Instant::now(),
        None => {
            let age = spec.renew_time.as_ref().map_or(Duration::ZERO, |t| {
                let age = jiff::Timestamp::now().duration_since(t.0);
                age.try_into().unwrap_or(Duration::ZERO)
            });
            Instant::now().checked_sub(age.min(duration)).unwrap_or_else(Instant::now)
        }
    };
    Some(Seen { identity, duration, version, changed })
}

/// Watches the member Leases of `namespace` into `members`, calling `listed` on each event (for
/// readiness) and `changed(before)` whenever the live members change.
pub async fn watch_members(
    client: Client,
    namespace: &str,
    members: Arc<Members>,
    listed: impl Fn(&Event<Lease>),
    changed: impl Fn(&[String]),
) {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().labels(&format!("{MEMBER_LABEL}={}", members.group));
    let events = watch(leases, config).default_backoff();
    // Expiry is no event: look again at least every second.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(events);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => {
                    if members.observe(&event) {
                        members.refresh(Instant::now());
                        info!(members = ?members.live(), "member Leases listed; serving this replica's pools");
                        changed(&[]);
                    }
                    listed(&event);
                }
                Some(Err(e)) => warn!(error = %e, "member watch failed; retrying"),
                None => return,
            },
            _ = tick.tick() => {}
        }
        if let Some(before) = members.refresh(Instant::now()) {
            info!(members = ?members.live(), "the members serving pools changed");
            changed(&before);
        }
    }
}

/// Announces this replica: creates or renews its Lease every third of its duration, until
/// dropped.
pub async fn announce(client: Client, namespace: String, members: Arc<Members>) {
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let name = Members::lease_name(&members.identity);
    let mut tick = tokio::time::interval(members.duration / 3);
    loop {
        tick.tick().await;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(MEMBER_LABEL.to_string(), members.group.clone())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(members.identity.clone()),
                lease_duration_seconds: Some(members.duration.as_secs().max(1) as i32),
                renew_time: Some(MicroTime(jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(e) = leases.patch(&name, &params, &Patch::Apply(&lease)).await {
            warn!(error = %e, lease = %name, "could not renew this replica's member Lease");
        }
    }
}

/// Deletes this replica's member Lease: the others take its pools at once.
pub async fn leave(client: Client, namespace: &str, identity: &str) {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let name = Members::lease_name(identity);
    match leases.delete(&name, &Default::default()).await {
        Ok(_) => info!(lease = %name, "left the members; the others serve this replica's pools now"),
        Err(e) => warn!(error = %e, lease = %name, "could not delete this replica's member Lease"),
    }
}

#[cfg(test)]
impl Members {
    /// Sharded and listed once, with `others` live beside this replica.
    pub(super) fn listed_with(identity: &str, others: &[&str]) -> Self {
        let members = Self::new(identity, "g", true, Duration::from_secs(10));
        members.observe(&Event::InitDone);
        for other in others {
            members.observe(&Event::Apply(tests::lease(&format!("l-{other}"), other, "1", 0)));
        }
        members.refresh(Instant::now());
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn lease(name: &str, identity: &str, version: &str, renewed_ago: u64) -> Lease {
        let renewed = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(renewed_ago as i64);
        Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(10),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn members_are_live_while_their_leases_change_and_self_always_is() {
        let members = Members::new("me", "g", true, Duration::from_secs(10));
        assert!(!members.serves("p"), "nothing before the first listing");
        assert!(members.observe(&Event::InitDone), "the first listing");
        assert!(!members.observe(&Event::InitDone), "only the first");
        members.observe(&Event::Apply(lease("l-a", "a", "1", 0)));
        members.observe(&Event::Apply(lease("l-old", "old", "1", 60)));
        let now = Instant::now();
        assert!(members.refresh(now).is_some());
        assert_eq!(*members.live(), ["a", "me"], "a lease renewed a minute ago is not live");
        assert!(members.refresh(now).is_none(), "unchanged");
        // Unrenewed for its duration, "a" is gone; renewed (a new version), it is back.
        assert!(members.refresh(now + Duration::from_secs(11)).is_some());
        assert_eq!(*members.live(), ["me"]);
        members.observe(&Event::Apply(lease("l-a", "a", "2", 0)));
        assert!(members.refresh(Instant::now()).is_some());
        assert_eq!(*members.live(), ["a", "me"]);
        members.observe(&Event::Delete(lease("l-a", "a", "2", 0)));
        members.refresh(Instant::now());
        assert_eq!(*members.live(), ["me"]);
    }

    #[test]
    fn unsharded_every_pool_is_served() {
        let members = Members::new("me", "g", false, Duration::from_secs(10));
        members.observe(&Event::Apply(lease("l-a", "a", "1", 0)));
        members.refresh(Instant::now());
        assert!((0..50).all(|i| members.serves(&format!("p{i}"))));
        let sharded = Members::new("me", "g", true, Duration::from_secs(10));
        sharded.observe(&Event::InitDone);
        sharded.observe(&Event::Apply(lease("l-a", "a", "1", 0)));
        sharded.refresh(Instant::now());
        let served = (0..50).filter(|i| sharded.serves(&format!("p{i}"))).count();
        assert!((10..40).contains(&served), "{served} of 50");
    }

    #[test]
    fn lease_names_are_dns_subdomains() {
        assert_eq!(Members::lease_name("Pod_1-ab12"), "lockguard-member-pod-1-ab12");
        assert!(Members::lease_name(&"x".repeat(300)).len() <= 253);
    }
}
