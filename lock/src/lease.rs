//! The Kubernetes Lease lock: a `coordination.k8s.io/v1` Lease written the way client-go's
//! `LeaseLock` writes it, so client-go leader election and lockguard exclude each other.
//!
//! The API server never expires a Lease; expiry is judged by each waiter from the time *it*
//! last saw the record change (clock-skew safe, like client-go). Every write carries the
//! resourceVersion it read. `leaseTransitions` grows on every acquisition and is the token.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use tokio::time::{Instant, sleep_until};

use super::hold::{Held, Renewal, Session};
use super::{Backend, Lock, LockError, LockGuard, LockOptions, Mode, bounded, remaining};

/// Bound for calls that are not part of an acquisition (renew, release, listing).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    identity: String,
}

/// When a waiter saw the current version of a Lease for the first time.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

/// A Lease as `lockguard locks` shows it.
#[derive(Debug, Clone)]
pub struct LeaseEntry {
    pub name: String,
    pub holder: Option<String>,
    pub token: u64,
    /// Seconds until expiry by the record's renewTime and this machine's clock (a display
    /// estimate: waiters judge expiry by their own observation instead).
    pub seconds_left: Option<i64>,
}

impl LeaseLock {
    /// Locks are Leases in `namespace`, held under `identity`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), kube::Error> {
    /// let client = kube::Client::try_default().await?;
    /// let lock = lockguard_lock::lease::LeaseLock::new(client, "default", "reporter-1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(client: kube::Client, namespace: &str, identity: impl Into<String>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            identity: identity.into(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// All Leases of the namespace with their holders.
    pub async fn list(&self) -> Result<Vec<LeaseEntry>, LockError> {
        let leases =
            bounded(Backend::Lease, "list leases", CALL_TIMEOUT, self.api.list(&ListParams::default()))
                .await?;
        let now = jiff::Timestamp::now();
        Ok(leases
            .items
            .into_iter()
            .map(|lease| {
                let spec = lease.spec.unwrap_or_default();
                let seconds_left =
                    spec.renew_time.as_ref().zip(spec.lease_duration_seconds).map(|(renewed, duration)| {
                        renewed.0.as_second() + i64::from(duration) - now.as_second()
                    });
                LeaseEntry {
                    name: lease.metadata.name.unwrap_or_default(),
                    holder: spec.holder_identity.filter(|h| !h.is_empty()),
                    token: spec.lease_transitions.unwrap_or_default().max(0) as u64,
                    seconds_left,
                }
            })
            .collect())
    }

    /// Tries to write `lease` as taken by us; `Ok(None)` when another writer came first.
    async fn take(
        &self,
        current: Option<&Lease>,
        name: &str,
        options: &LockOptions,
        deadline: Instant,
    ) -> Result<Option<(Lease, Instant)>, LockError> {
        let sent = Instant::now();
        let record = taken(current, name, &self.identity, options.ttl_seconds(), jiff::Timestamp::now());
        let write = async {
            match current {
                Some(_) => self.api.replace(name, &PostParams::default(), &record).await,
                None => self.api.create(&PostParams::default(), &record).await,
            }
        };
        match bounded(Backend::Lease, "take lease", remaining(deadline), write).await {
            Ok(lease) => Ok(Some((lease, sent))),
            Err(LockError::Kube(kube::Error::Api(e))) if e.code == 409 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Lock for LeaseLock {
    fn backend(&self) -> Backend {
        Backend::Lease
    }

    async fn acquire(&self, name: &str, options: LockOptions) -> Result<LockGuard, LockError> {
        self.acquire_in(name, options, Mode::Wait).await
    }

    /// A Lease whose holder died without releasing it counts as held here: a process
    /// judges expiry only after watching the record unchanged for its duration.
    async fn try_acquire(&self, name: &str, options: LockOptions) -> Result<LockGuard, LockError> {
        self.acquire_in(name, options, Mode::Try).await
    }
}

impl LeaseLock {
    async fn acquire_in(&self, name: &str, options: LockOptions, mode: Mode) -> Result<LockGuard, LockError> {
        check_name(name)?;
        let started = Instant::now();
        let deadline = started + options.timeout();
        let mut observed: Option<Observed> = None;
        // A Lease deleted while held: its holder learns of it only at its next renewal, so
        // nobody takes the name before the holder's duration has passed.
        let mut deleted_until: Option<Instant> = None;
        let mut current =
            bounded(Backend::Lease, "get lease", remaining(deadline), self.api.get_opt(name)).await?;
        loop {
            let now = Instant::now();
            let seen = observe(observed.take(), current.as_ref(), now);
            let held_until = match current.as_ref() {
                Some(l) => held_until(l.spec.as_ref(), seen.at),
                None => deleted_until,
            };
            observed = Some(seen);
            match held_until {
                Some(until) if until > now => {
                    if mode == Mode::Try {
                        return Err(LockError::Busy { name: name.into(), holder: holder(current.as_ref()) });
                    }
                    if now >= deadline {
                        return Err(LockError::Timeout {
                            name: name.into(),
                            waited: started.elapsed(),
                            holder: holder(current.as_ref()),
                        });
                    }
                    let before = current.clone();
                    current = self.wait_change(name, current, until.min(deadline), deadline).await?;
                    if let (Some(held), None) = (before.as_ref(), current.as_ref()) {
                        let duration =
                            held.spec.as_ref().and_then(|s| s.lease_duration_seconds).unwrap_or_default();
                        deleted_until = Some(Instant::now() + Duration::from_secs(duration.max(0) as u64));
                    }
                }
                _ => match self.take(current.as_ref(), name, &options, deadline).await? {
                    Some((lease, sent)) => {
                        let token =
                            lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or_default() as u64;
                        let token_space = format!("lease:{}", lease.metadata.uid.clone().unwrap_or_default());
                        let renewal = LeaseRenewal {
                            api: self.api.clone(),
                            identity: self.identity.clone(),
                            last: lease,
                        };
                        let session = Session::start(renewal, &options, sent, name);
                        return Ok(session.into_guard(Held {
                            name: name.into(),
                            key: format!("{}/{name}", self.namespace),
                            token,
                            token_space,
                            backend: Backend::Lease,
                            waited: started.elapsed(),
                        }));
                    }
                    None => {
                        if mode == Mode::Try {
                            // Another process wrote the Lease between our read and write.
                            let current = self.api.get_opt(name).await.ok().flatten();
                            return Err(LockError::Busy {
                                name: name.into(),
                                holder: holder(current.as_ref()),
                            });
                        }
                        if Instant::now() >= deadline {
                            return Err(LockError::Timeout {
                                name: name.into(),
                                waited: started.elapsed(),
                                holder: holder(current.as_ref()),
                            });
                        }
                        current =
                            bounded(Backend::Lease, "get lease", remaining(deadline), self.api.get_opt(name))
                                .await?;
                    }
                },
            }
        }
    }
}

impl LeaseLock {
    /// Watches the Lease from the version in `current` until it changes or `until` passes;
    /// returns the Lease as it is then.
    async fn wait_change(
        &self,
        name: &str,
        current: Option<Lease>,
        until: Instant,
        deadline: Instant,
    ) -> Result<Option<Lease>, LockError> {
        let version =
            current.as_ref().and_then(|l| l.metadata.resource_version.clone()).unwrap_or_else(|| "0".into());
        let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(290);
        let stream =
            bounded(Backend::Lease, "watch lease", remaining(deadline), self.api.watch(&params, &version))
                .await?;
        let mut stream = stream.boxed();
        loop {
            tokio::select! {
                _ = sleep_until(until) => return Ok(current),
                event = stream.try_next() => match event {
                    Ok(Some(WatchEvent::Added(lease) | WatchEvent::Modified(lease))) => return Ok(Some(lease)),
                    Ok(Some(WatchEvent::Deleted(_))) => return Ok(None),
                    Ok(Some(WatchEvent::Bookmark(_))) => {}
                    // Expired watch version or a closed stream: read the Lease again.
                    Ok(Some(WatchEvent::Error(_))) | Ok(None) | Err(_) => {
                        return bounded(Backend::Lease, "get lease", remaining(deadline), self.api.get_opt(name)).await;
                    }
                }
            }
        }
    }
}

/// Keeps the first-seen time while the record stays the same version.
fn observe(previous: Option<Observed>, lease: Option<&Lease>, now: Instant) -> Observed {
    let resource_version = lease.and_then(|l| l.metadata.resource_version.clone());
    match previous {
        Some(p) if p.resource_version == resource_version => p,
        _ => Observed { resource_version, at: now },
    }
}

/// Until when the lease is held, judged from when this process saw the record; `None`
/// when nobody holds it.
fn held_until(spec: Option<&LeaseSpec>, observed_at: Instant) -> Option<Instant> {
    let spec = spec?;
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let seconds = spec.lease_duration_seconds.unwrap_or_default().max(0) as u64;
    Some(observed_at + Duration::from_secs(seconds))
}

/// The record of a new acquisition: holder, times, and one more transition.
fn taken(
    current: Option<&Lease>,
    name: &str,
    identity: &str,
    ttl_seconds: u32,
    now: jiff::Timestamp,
) -> Lease {
    let transitions =
        current.and_then(|l| l.spec.as_ref()).and_then(|s| s.lease_transitions).unwrap_or_default();
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
            ..current.map(|l| l.metadata.clone()).unwrap_or_default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            lease_duration_seconds: Some(ttl_seconds as i32),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions.saturating_add(1)),
            ..Default::default()
        }),
    }
}

fn holder(lease: Option<&Lease>) -> String {
    lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_else(|| "nobody".into())
}

/// Ours: the same object (a Lease deleted and created again is another one, whose
/// transitions start over), our identity, our token.
fn is_ours(lease: &Lease, last: &Lease, identity: &str, token: Option<i32>) -> bool {
    lease.metadata.uid == last.metadata.uid
        && lease
            .spec
            .as_ref()
            .is_some_and(|s| s.holder_identity.as_deref() == Some(identity) && s.lease_transitions == token)
}

fn check_name(name: &str) -> Result<(), LockError> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(LockError::InvalidName {
            name: name.into(),
            reason: "a Lease name must be a DNS subdomain: lowercase letters, digits, '-' and '.'".into(),
        })
    }
}

struct LeaseRenewal {
    api: Api<Lease>,
    identity: String,
    /// The record as we last wrote it.
    last: Lease,
}

impl LeaseRenewal {
    fn name(&self) -> String {
        self.last.metadata.name.clone().unwrap_or_default()
    }

    fn token(&self) -> Option<i32> {
        self.last.spec.as_ref().and_then(|s| s.lease_transitions)
    }

    /// Writes `change(record)` with the last version; after a conflict, retries once if the
    /// record is still ours. `Ok(None)` when it is not ours any more.
    async fn write(&mut self, change: impl Fn(&mut LeaseSpec)) -> Result<Option<Lease>, LockError> {
        let name = self.name();
        for _ in 0..2 {
            let mut record = self.last.clone();
            change(record.spec.get_or_insert_with(Default::default));
            match bounded(
                Backend::Lease,
                "write lease",
                CALL_TIMEOUT,
                self.api.replace(&name, &PostParams::default(), &record),
            )
            .await
            {
                Ok(lease) => return Ok(Some(lease)),
                Err(LockError::Kube(kube::Error::Api(e))) if e.code == 409 => {
                    match bounded(Backend::Lease, "get lease", CALL_TIMEOUT, self.api.get_opt(&name)).await? {
                        Some(lease) if is_ours(&lease, &self.last, &self.identity, self.token()) => {
                            self.last = lease
                        }
                        _ => return Ok(None),
                    }
                }
                Err(LockError::Kube(kube::Error::Api(e))) if e.code == 404 => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

impl Renewal for LeaseRenewal {
    async fn renew(&mut self) -> Result<bool, LockError> {
        let now = MicroTime(jiff::Timestamp::now());
        match self.write(|spec| spec.renew_time = Some(now.clone())).await? {
            Some(lease) => {
                self.last = lease;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release(&mut self) -> Result<(), LockError> {
        // As client-go does on release: no holder, so the next waiter need not wait out the TTL.
        let now = MicroTime(jiff::Timestamp::now());
        self.write(|spec| {
            spec.holder_identity = Some(String::new());
            spec.renew_time = Some(now.clone());
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, duration: i32, transitions: i32, version: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some(version.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(duration),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn expiry_counts_from_local_observation_not_the_record_times() {
        let seen = Instant::now();
        let held = lease(Some("a"), 10, 3, "1");
        assert_eq!(held_until(held.spec.as_ref(), seen), Some(seen + Duration::from_secs(10)));
        assert_eq!(held_until(lease(Some(""), 10, 3, "1").spec.as_ref(), seen), None);
        assert_eq!(held_until(lease(None, 10, 3, "1").spec.as_ref(), seen), None);
    }

    #[test]
    fn observation_restarts_only_when_the_version_changes() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(4);
        let first = observe(None, Some(&lease(Some("a"), 10, 1, "7")), t0);
        let same = observe(Some(first.clone()), Some(&lease(Some("a"), 10, 1, "7")), t1);
        assert_eq!(same.at, t0);
        let renewed = observe(Some(first), Some(&lease(Some("a"), 10, 1, "8")), t1);
        assert_eq!(renewed.at, t1);
    }

    #[test]
    fn every_acquisition_increments_the_token_even_for_the_same_holder() {
        let now = jiff::Timestamp::now();
        let before = lease(Some(""), 10, 41, "5");
        let record = taken(Some(&before), "l", "me-1234", 7, now);
        let spec = record.spec.unwrap();
        assert_eq!(spec.lease_transitions, Some(42));
        assert_eq!(spec.holder_identity.as_deref(), Some("me-1234"));
        assert_eq!(spec.lease_duration_seconds, Some(7));
        assert_eq!(record.metadata.resource_version.as_deref(), Some("5"));
        let fresh = taken(None, "l", "me", 7, now).spec.unwrap();
        assert_eq!(fresh.lease_transitions, Some(1));
    }

    #[test]
    fn lease_names_must_be_dns_subdomains() {
        assert!(check_name("pool.ports-1").is_ok());
        assert!(check_name("Pool").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }
}
