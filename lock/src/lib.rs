//! Distributed locks with fencing tokens: one interface, two backends, each behind a cargo
//! feature of its own (`etcd`, `lease`; both by default). See the crate's README for the
//! guarantees and limits.
//!
//! - [`etcd::EtcdLock`]: a lease per acquisition and the key layout of etcd's lock service
//!   (`NAME/<lease-hex>`, lowest create revision holds), so it excludes `etcdctl lock NAME`.
//!   The token is the lock key's create revision; [`etcd::EtcdLock::fenced_txn`] commits only
//!   while that key still exists with that revision.
//! - [`lease::LeaseLock`]: a `coordination.k8s.io/v1` Lease with client-go's conventions.
//!   The token is `leaseTransitions`, which every acquisition increments.
//!
//! An acquisition returns a [`LockGuard`]. A background task keeps the lease alive at a
//! fraction of the TTL; when no renewal succeeds before the deadline, the guard's
//! [`LockGuard::lost`] fires. Dropping the guard releases the lock in the background.
//!
//! The article's recipe — lease with a TTL, lock with the lease, operate, release — on
//! either backend, chosen at run time:
//!
//! ```no_run
//! use std::time::Duration;
//! use lockguard_lock::etcd::EtcdConfig;
//! use lockguard_lock::{Backend, Lock, LockConfig, LockOptions, unique_identity};
//!
//! # async fn run() -> Result<(), lockguard_lock::LockError> {
//! let config = LockConfig::new(unique_identity("reporter"))
//!     .with_etcd(EtcdConfig::from_list("http://127.0.0.1:2379"));
//! let lock = config.connect(Backend::Etcd, Duration::from_secs(5)).await?;
//! // A TTL of 10 s; wait at most 30 s for the lock.
//! let guard = lock.acquire("reports/nightly", LockOptions::new(10, Duration::from_secs(30))?).await?;
//! println!("holding {} with token {}", guard.key(), guard.fencing_token());
//! // … operate, passing guard.fencing_token() to what you write …
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```

/// The README's example, compiled as a doctest.
#[cfg(all(doctest, feature = "etcd"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeExample;

#[cfg(not(any(feature = "etcd", feature = "lease")))]
compile_error!("lockguard-lock needs a backend: enable the cargo feature \"etcd\", \"lease\" or both");

#[cfg(feature = "etcd")]
pub mod etcd;
mod hold;
#[cfg(feature = "lease")]
pub mod lease;

use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use hold::{drain, lost_deadline, renew_interval};

/// Which lock implementation a caller asks for: the one type the CLI flags, a Pool's
/// `spec.lock.backend`, the metrics' `backend` label and the logs all use. It is written
/// `Etcd`/`Lease` in resources and `etcd`/`lease` on the command line, in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema), schemars(transform = without_description))]
pub enum Backend {
    /// An etcd lease lock on the lock etcd (`--etcd-endpoints`).
    #[default]
    Etcd,
    /// A coordination.k8s.io/v1 Lease in the operator's namespace.
    Lease,
}

/// A resource's own field docs describe the backend there, not this type's Rust docs.
#[cfg(feature = "schemars")]
fn without_description(schema: &mut schemars::Schema) {
    schema.remove("description");
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::Lease => "lease",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds a lock's TTL must stay within.
pub const MIN_TTL_SECONDS: u32 = 2;
pub const MAX_TTL_SECONDS: u32 = 300;
/// Longest an acquisition may wait.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a lock lives without renewal, and how long an acquisition may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    ttl_seconds: u32,
    timeout: Duration,
    renew_interval: Duration,
}

impl LockOptions {
    /// Validates the TTL (2–300 s) and timeout (more than 0, at most an hour); the
    /// keep-alive interval defaults to a third of the TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// use lockguard_lock::LockOptions;
    ///
    /// let options = LockOptions::new(9, Duration::from_secs(30)).unwrap();
    /// assert_eq!(options.renew_interval(), Duration::from_secs(3));
    /// // A TTL of 1 s leaves no time to renew before the lease expires.
    /// assert!(LockOptions::new(1, Duration::from_secs(30)).is_err());
    /// ```
    pub fn new(ttl_seconds: u32, timeout: Duration) -> Result<Self, LockError> {
        if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
            return Err(LockError::Invalid(format!(
                "ttl must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} seconds, got {ttl_seconds}"
            )));
        }
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(LockError::Invalid(format!(
                "timeout must be more than 0 and at most {}s, got {timeout:?}",
                MAX_TIMEOUT.as_secs()
            )));
        }
        Ok(Self { ttl_seconds, timeout, renew_interval: renew_interval(ttl_seconds) })
    }

    /// Renews every `interval` instead; it must leave time for a retry before the deadline.
    pub fn with_renew_interval(mut self, interval: Duration) -> Result<Self, LockError> {
        let deadline = lost_deadline(self.ttl());
        if interval.is_zero() || interval * 2 > deadline {
            return Err(LockError::Invalid(format!(
                "keep-alive interval must be more than 0 and at most half of {deadline:?} \
                 (the TTL minus a safety margin), got {interval:?}"
            )));
        }
        self.renew_interval = interval;
        Ok(self)
    }

    pub fn ttl_seconds(&self) -> u32 {
        self.ttl_seconds
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_seconds.into())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("invalid lock options: {0}")]
    Invalid(String),
    #[error("invalid lock name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("timed out after {waited:?} waiting for lock {name} (held by {holder})")]
    Timeout { name: String, waited: Duration, holder: String },
    #[error("{backend} did not answer within {after:?} ({during})")]
    Unresponsive { backend: Backend, during: &'static str, after: Duration },
    #[cfg(feature = "etcd")]
    #[error("etcd: {source}{hint}", hint = failure.hint())]
    Etcd { failure: EtcdFailure, source: etcd_client::Error },
    #[cfg(feature = "lease")]
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("lock {name} was lost while waiting for it: {reason}")]
    LostWhileWaiting { name: String, reason: String },
    #[error("keep-alive failed: {0}")]
    KeepAlive(String),
    #[error("fenced write rejected: lock {name} with token {token} is no longer held")]
    Fenced { name: String, token: u64 },
    #[error("lock {name} is held by {holder}")]
    Busy { name: String, holder: String },
}

/// What an etcd error means to a lock, decided once where it enters, from its gRPC code.
#[cfg(feature = "etcd")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdFailure {
    /// No leader, a leader change, a request timed out inside etcd, a member or the
    /// connection gone (`UNAVAILABLE`, or a transport failure): a moment later it may work.
    Unavailable,
    /// The lease expired or was revoked (`NOT_FOUND`, the only one a lock's calls can get).
    LeaseNotFound,
    /// The database reached its quota (`RESOURCE_EXHAUSTED`, "database space exceeded"):
    /// etcd raised the NOSPACE alarm and refuses every write until an operator frees space
    /// and disarms it. Retrying alone never helps.
    NoSpace,
    /// Anything else: a bad request, no permission, …
    Other,
}

#[cfg(feature = "etcd")]
impl EtcdFailure {
    pub fn of(error: &etcd_client::Error) -> Self {
        match error {
            etcd_client::Error::GRpcStatus(status) => match status.code() {
                tonic::Code::Unavailable => EtcdFailure::Unavailable,
                tonic::Code::NotFound => EtcdFailure::LeaseNotFound,
                tonic::Code::ResourceExhausted if status.message().contains("database space exceeded") => {
                    EtcdFailure::NoSpace
                }
                // tonic reports a connection that broke or was refused under a request as
                // UNKNOWN, with the transport or I/O error as its source.
                tonic::Code::Unknown if is_transport(status) => EtcdFailure::Unavailable,
                _ => EtcdFailure::Other,
            },
            etcd_client::Error::TransportError(_) => EtcdFailure::Unavailable,
            _ => EtcdFailure::Other,
        }
    }
}

#[cfg(feature = "etcd")]
impl EtcdFailure {
    /// What an operator should do about it, appended to the error's message.
    fn hint(self) -> &'static str {
        match self {
            EtcdFailure::NoSpace => {
                " (the lock etcd is out of space and refuses every write until its NOSPACE alarm is disarmed: compact, defragment, then `etcdctl alarm disarm`)"
            }
            _ => "",
        }
    }
}

#[cfg(feature = "etcd")]
fn is_transport(status: &tonic::Status) -> bool {
    causes(status).any(|e| e.is::<tonic::transport::Error>() || e.is::<std::io::Error>())
}

/// The errors under `status`, the nearest first.
#[cfg(feature = "etcd")]
fn causes(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

/// True when a member refused the connection: the call never reached etcd, so sending it
/// again (to another member) is safe even for a write.
#[cfg(feature = "etcd")]
pub(crate) fn was_refused(error: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = error else { return false };
    causes(status).any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

#[cfg(feature = "etcd")]
impl From<etcd_client::Error> for LockError {
    fn from(source: etcd_client::Error) -> Self {
        LockError::Etcd { failure: EtcdFailure::of(&source), source }
    }
}

impl LockError {
    /// True when the lock service could not be reached or did not answer; the caller may
    /// retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LockError::Unresponsive { .. } => true,
            #[cfg(feature = "etcd")]
            LockError::Etcd { .. } => true,
            #[cfg(feature = "lease")]
            LockError::Kube(_) => true,
            _ => false,
        }
    }
}

/// A lock implementation. Every acquisition gets its own lease and a fencing token that
/// is larger than every earlier token of the same lock name.
pub trait Lock: Send + Sync {
    fn backend(&self) -> Backend;

    /// Waits (watch-driven) until the lock is held or `options.timeout()` passes.
    fn acquire(
        &self,
        name: &str,
        options: LockOptions,
    ) -> impl Future<Output = Result<LockGuard, LockError>> + Send;

    /// Takes the lock only if it is free now; otherwise fails at once with
    /// [`LockError::Busy`] naming the holder, and leaves nothing behind. `options.timeout()`
    /// bounds the calls.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use lockguard_lock::{Lock, LockError, LockOptions};
    /// # async fn run(lock: impl Lock) -> Result<(), LockError> {
    /// match lock.try_acquire("pools/ports", LockOptions::new(10, Duration::from_secs(5))?).await {
    ///     Ok(guard) => { /* operate */ guard.release().await? }
    ///     Err(LockError::Busy { holder, .. }) => println!("busy, held by {holder}; later"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    fn try_acquire(
        &self,
        name: &str,
        options: LockOptions,
    ) -> impl Future<Output = Result<LockGuard, LockError>> + Send;
}

/// Either backend behind one type, as [`LockConfig::connect`] makes it.
#[derive(Clone)]
pub enum AnyLock {
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::EtcdLock>),
    #[cfg(feature = "lease")]
    Lease(Box<lease::LeaseLock>),
}

impl AnyLock {
    /// The highest fencing token the lock service can have issued so far, where it can say:
    /// an etcd's current revision ([`etcd::EtcdLock::issued_up_to`]); `None` for a Lease.
    pub async fn issued_up_to(&self) -> Result<Option<u64>, LockError> {
        match self {
            #[cfg(feature = "etcd")]
            AnyLock::Etcd(lock) => lock.issued_up_to().await.map(Some),
            #[cfg(feature = "lease")]
            AnyLock::Lease(_) => Ok(None),
        }
    }
}

impl Lock for AnyLock {
    fn backend(&self) -> Backend {
        match self {
            #[cfg(feature = "etcd")]
            AnyLock::Etcd(lock) => lock.backend(),
            #[cfg(feature = "lease")]
            AnyLock::Lease(lock) => lock.backend(),
        }
    }

    async fn acquire(&self, name: &str, options: LockOptions) -> Result<LockGuard, LockError> {
        match self {
            #[cfg(feature = "etcd")]
            AnyLock::Etcd(lock) => lock.acquire(name, options).await,
            #[cfg(feature = "lease")]
            AnyLock::Lease(lock) => lock.acquire(name, options).await,
        }
    }

    async fn try_acquire(&self, name: &str, options: LockOptions) -> Result<LockGuard, LockError> {
        match self {
            #[cfg(feature = "etcd")]
            AnyLock::Etcd(lock) => lock.try_acquire(name, options).await,
            #[cfg(feature = "lease")]
            AnyLock::Lease(lock) => lock.try_acquire(name, options).await,
        }
    }
}

/// Where each backend lives and who the holder is: the one place that turns a [`Backend`]
/// into a lock.
#[derive(Clone)]
pub struct LockConfig {
    /// Stored with each acquisition, so listings show holders; see [`unique_identity`].
    pub identity: String,
    /// The lock etcd; the etcd backend fails with [`LockError::Invalid`] without it.
    #[cfg(feature = "etcd")]
    pub etcd: Option<etcd::EtcdConfig>,
    /// The namespace of the Leases.
    #[cfg(feature = "lease")]
    pub lease_namespace: String,
    /// The cluster of the Leases; `None` reads KUBECONFIG or the in-cluster config.
    #[cfg(feature = "lease")]
    pub kube: Option<kube::Client>,
}

impl LockConfig {
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            #[cfg(feature = "etcd")]
            etcd: None,
            #[cfg(feature = "lease")]
            lease_namespace: "default".into(),
            #[cfg(feature = "lease")]
            kube: None,
        }
    }

    #[cfg(feature = "etcd")]
    pub fn with_etcd(mut self, etcd: etcd::EtcdConfig) -> Self {
        self.etcd = Some(etcd);
        self
    }

    #[cfg(feature = "lease")]
    pub fn with_leases(mut self, client: kube::Client, namespace: impl Into<String>) -> Self {
        self.kube = Some(client);
        self.lease_namespace = namespace.into();
        self
    }

    /// Connects to `backend` (an etcd connection fails within `timeout` when no endpoint
    /// answers).
    pub async fn connect(&self, backend: Backend, timeout: Duration) -> Result<AnyLock, LockError> {
        match backend {
            #[cfg(feature = "etcd")]
            Backend::Etcd => {
                let Some(config) = &self.etcd else {
                    return Err(LockError::Invalid(
                        "the etcd backend needs etcd endpoints (--etcd-endpoints)".into(),
                    ));
                };
                let client = config.connect(timeout).await?;
                Ok(AnyLock::Etcd(Box::new(etcd::EtcdLock::new(client, self.identity.clone()))))
            }
            #[cfg(feature = "lease")]
            Backend::Lease => {
                let client = match &self.kube {
                    Some(client) => client.clone(),
                    None => bounded(Backend::Lease, "connect", timeout, kube::Client::try_default()).await?,
                };
                Ok(AnyLock::Lease(Box::new(lease::LeaseLock::new(
                    client,
                    &self.lease_namespace,
                    self.identity.clone(),
                ))))
            }
            #[allow(unreachable_patterns)] // both features on: every backend is matched above
            backend => Err(LockError::Invalid(format!(
                "the {backend} backend is not compiled into this program (cargo feature \"{backend}\" of lockguard-lock)"
            ))),
        }
    }
}

/// A held lock. Dropping it releases the lock in the background; [`LockGuard::release`]
/// releases and waits for the outcome.
#[derive(Debug)]
pub struct LockGuard {
    name: String,
    key: String,
    token: u64,
    token_space: String,
    backend: Backend,
    waited: Duration,
    acquired_at: std::time::Instant,
    lost: CancellationToken,
    deadline: std::sync::Arc<hold::Deadline>,
    release: Option<oneshot::Sender<()>>,
    released: Option<oneshot::Receiver<Result<(), LockError>>>,
}

impl LockGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The backend's own key: `NAME/<lease-hex>` for etcd, `namespace/name` for a Lease.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Strictly increasing over all acquisitions of one lock name.
    pub fn fencing_token(&self) -> u64 {
        self.token
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Which lock service issued the token: `etcd:<cluster id>` or `lease:<Lease uid>`.
    /// Tokens compare only within one token space; a fresh etcd cluster or a re-created
    /// Lease starts a new one (and counts from low numbers again).
    pub fn token_space(&self) -> &str {
        &self.token_space
    }

    /// How long the acquisition waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// How long the lock has been held so far.
    pub fn held(&self) -> Duration {
        self.acquired_at.elapsed()
    }

    /// Completes when the lock is lost (renewal failed past its deadline, or the lease is
    /// gone). After that, fenced writes with this guard's token fail.
    ///
    /// Work done under the lock should stop when it fires:
    ///
    /// ```no_run
    /// # async fn run(guard: lockguard_lock::LockGuard, work: impl std::future::Future<Output = ()>) {
    /// tokio::select! {
    ///     _ = work => {}
    ///     _ = guard.lost() => eprintln!("lock {} lost; stopping", guard.name()),
    /// }
    /// # }
    /// ```
    pub fn lost(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.lost.clone().cancelled_owned()
    }

    /// True once the lock is lost — also when the keep-alive task has not run yet to say
    /// so: past the deadline of the last successful renewal the guard trusts nothing.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled() || self.deadline.passed()
    }

    /// Releases the lock and waits until the backend confirmed it (or it was lost).
    pub async fn release(mut self) -> Result<(), LockError> {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
        match self.released.take() {
            Some(rx) => rx.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // The holder task releases in the background.
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

/// A process identity that never repeats: `base-<8 hex digits>`. A restarted process must
/// not mistake a lock held by its previous life for its own.
///
/// ```
/// let identity = lockguard_lock::unique_identity("replica");
/// assert!(identity.starts_with("replica-") && identity.len() == "replica-".len() + 8);
/// assert_ne!(identity, lockguard_lock::unique_identity("replica"));
/// ```
pub fn unique_identity(base: &str) -> String {
    let mut bytes = [0u8; 4];
    // getrandom fails only on exotic platforms; fall back to time and pid, still unique enough.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ std::process::id()).to_be_bytes();
    }
    format!("{base}-{:08x}", u32::from_be_bytes(bytes))
}

/// The host or pod name, for default identities.
pub fn host_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "lockguard".to_string())
}

/// Whether an acquisition queues behind a holder or gives up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Wait,
    Try,
}

/// Time left until `deadline`, at least 1 ms so a last call still gets a chance.
pub(crate) fn remaining(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_millis(1))
}

/// Runs `call` with a deadline; a call that does not answer becomes `Unresponsive`.
pub(crate) async fn bounded<T, E>(
    backend: Backend,
    during: &'static str,
    limit: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, LockError>
where
    LockError: From<E>,
{
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(LockError::from),
        Err(_) => Err(LockError::Unresponsive { backend, during, after: limit }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_reject_out_of_range_ttl_and_timeout() {
        assert!(LockOptions::new(1, Duration::from_secs(5)).is_err());
        assert!(LockOptions::new(301, Duration::from_secs(5)).is_err());
        assert!(LockOptions::new(10, Duration::ZERO).is_err());
        assert!(LockOptions::new(10, Duration::from_secs(3601)).is_err());
        let ok = LockOptions::new(9, Duration::from_secs(5)).unwrap();
        assert_eq!(ok.renew_interval(), Duration::from_secs(3));
    }

    #[test]
    fn renew_interval_must_leave_room_before_the_deadline() {
        let options = LockOptions::new(10, Duration::from_secs(5)).unwrap();
        assert!(options.with_renew_interval(Duration::from_secs(9)).is_err());
        assert!(options.with_renew_interval(Duration::ZERO).is_err());
        assert!(options.with_renew_interval(Duration::from_secs(2)).is_ok());
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_errors_are_classified_by_their_grpc_code() {
        use tonic::{Code, Status};
        let of = |code, message: &str| {
            EtcdFailure::of(&etcd_client::Error::GRpcStatus(Status::new(code, message)))
        };
        assert_eq!(of(Code::Unavailable, "etcdserver: leader changed"), EtcdFailure::Unavailable);
        assert_eq!(of(Code::Unavailable, "etcdserver: request timed out"), EtcdFailure::Unavailable);
        assert_eq!(of(Code::NotFound, "etcdserver: requested lease not found"), EtcdFailure::LeaseNotFound);
        let no_space = of(Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded");
        assert_eq!(no_space, EtcdFailure::NoSpace);
        assert_eq!(of(Code::ResourceExhausted, "etcdserver: too many requests"), EtcdFailure::Other);
        let full = etcd_client::Error::GRpcStatus(Status::new(
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        ));
        let message = LockError::from(full).to_string();
        assert!(message.contains("NOSPACE") && message.contains("alarm disarm"), "{message}");
        // The text alone decides nothing.
        assert_eq!(of(Code::InvalidArgument, "etcdserver: no leader"), EtcdFailure::Other);
        assert_eq!(of(Code::Unknown, "transport error"), EtcdFailure::Other);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "tcp connect error");
        let status = Status::from_error(Box::new(refused));
        assert_eq!(status.code(), Code::Unknown);
        assert_eq!(EtcdFailure::of(&etcd_client::Error::GRpcStatus(status)), EtcdFailure::Unavailable);
        let error = LockError::from(etcd_client::Error::GRpcStatus(Status::new(Code::Unavailable, "x")));
        assert!(error.is_unavailable() && error.to_string().starts_with("etcd: "), "{error}");
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn only_a_refused_connection_counts_as_never_sent() {
        use std::io::{Error, ErrorKind};
        use tonic::{Code, Status};
        let with_source = |kind| {
            etcd_client::Error::GRpcStatus(Status::from_error(Box::new(Error::new(
                kind,
                "tcp connect error",
            ))))
        };
        assert!(was_refused(&with_source(ErrorKind::ConnectionRefused)));
        // A broken connection may have carried the call: it may have been applied.
        assert!(!was_refused(&with_source(ErrorKind::BrokenPipe)));
        assert!(!was_refused(&with_source(ErrorKind::TimedOut)));
        let timed_out = Status::new(Code::Unavailable, "etcdserver: request timed out");
        assert!(!was_refused(&etcd_client::Error::GRpcStatus(timed_out)));
    }

    #[test]
    fn identities_do_not_repeat() {
        let a = unique_identity("replica");
        let b = unique_identity("replica");
        assert!(a.starts_with("replica-") && a.len() == "replica-".len() + 8);
        assert_ne!(a, b);
    }
}
