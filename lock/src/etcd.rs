//! The etcd lease lock: one lease per acquisition, the key layout and queue of etcd's own
//! lock service (`concurrency.Mutex`, `etcdctl lock`), a token per acquisition (the key's
//! create revision) and fenced transactions.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, SortOrder, SortTarget, TlsOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions, WatchStream,
};
use tokio::time::{Instant, sleep_until};

use super::hold::{Held, Renewal, Session};
use super::{
    Backend, EtcdFailure, Lock, LockError, LockGuard, LockOptions, Mode, bounded, remaining, was_refused,
};

/// Bound for calls that are not part of an acquisition (release, listing, fenced writes).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The key under which an etcd names its token space (see `create_token_space`).
pub const TOKEN_SPACE_KEY: &str = "lockguard/token-space";
/// Pause before watching again after etcd cancelled or closed a watch.
const WATCH_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How often a call a member refused is sent again at once. The client spreads calls over
/// every endpoint, a dead member's too; with one of three dead, eight refusals in a row
/// happen to one call in 20,000.
const RESENDS_WHEN_REFUSED: u32 = 8;

/// Where the lock etcd is, and the client certificate to show it when it uses TLS.
#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdConfig {
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { endpoints: endpoints.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Parses `http://a:2379,http://b:2379`.
    pub fn from_list(list: &str) -> Self {
        Self::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// Connects; fails within `timeout` when no endpoint answers.
    pub async fn connect(&self, timeout: Duration) -> Result<Client, LockError> {
        if self.endpoints.is_empty() {
            return Err(LockError::Invalid("no etcd endpoints given".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = self.tls()? {
            options = options.with_tls(tls);
        }
        bounded(Backend::Etcd, "connect", timeout, Client::connect(&self.endpoints, Some(options))).await
    }

    fn tls(&self) -> Result<Option<TlsOptions>, LockError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| LockError::Invalid(format!("read {}: {e}", p.display())))
        };
        let mut tls = match &self.ca {
            Some(ca) => TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?)),
            None if self.cert.is_none() => return Ok(None),
            None => TlsOptions::new(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
            (None, None) => {}
            _ => return Err(LockError::Invalid("an etcd client certificate needs both cert and key".into())),
        }
        Ok(Some(tls))
    }
}

/// One entry in a lock's queue, lowest create revision first: the first one holds.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    pub key: String,
    pub identity: String,
    pub token: u64,
    pub lease: i64,
    /// Seconds the entry's lease has left, if it could be read.
    pub ttl_left: Option<i64>,
}

#[derive(Clone)]
pub struct EtcdLock {
    client: Client,
    identity: String,
    idle: IdleLeases,
}

/// Leases whose acquisition ended in a clean release (own key deleted, never lost), kept
/// alive for this process's next acquisition with the same TTL. A lease serves one
/// acquisition at a time and never outlives the process; reusing it saves a grant and a
/// revoke, which together cost etcd about three plain writes.
type IdleLeases = Arc<Mutex<Vec<IdleLease>>>;
const MAX_IDLE_LEASES: usize = 8;

#[derive(Debug, Clone, Copy)]
struct IdleLease {
    id: i64,
    ttl_seconds: u32,
    /// When its last successful keep-alive (or grant) was sent.
    renewed_at: Instant,
}

impl EtcdLock {
    /// `identity` is stored as the lock key's value, so `lockguard locks` can show holders.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use lockguard_lock::{LockError, etcd::{EtcdConfig, EtcdLock}};
    /// # async fn run() -> Result<(), LockError> {
    /// let client = EtcdConfig::from_list("http://127.0.0.1:2379").connect(Duration::from_secs(5)).await?;
    /// let lock = EtcdLock::new(client, "reporter-1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(client: Client, identity: impl Into<String>) -> Self {
        Self { client, identity: identity.into(), idle: IdleLeases::default() }
    }

    /// An idle lease with this TTL that is not yet due for a keep-alive.
    fn reuse_lease(&self, options: &LockOptions) -> Option<IdleLease> {
        let mut idle = self.idle.lock().ok()?;
        // Older ones are left to expire on their own: they hold no keys.
        idle.retain(|l| l.renewed_at.elapsed() < options.renew_interval());
        let i = idle.iter().position(|l| l.ttl_seconds == options.ttl_seconds())?;
        Some(idle.swap_remove(i))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Runs `ops` in one transaction that commits only while `guard` holds the lock
    /// ([`is_owner`]); otherwise etcd itself rejects the write and this returns
    /// [`LockError::Fenced`]. For compares and an else branch of your own, put [`is_owner`]
    /// into your transaction instead.
    ///
    /// ```no_run
    /// # use etcd_client::TxnOp;
    /// # use lockguard_lock::{Lock, LockError, LockGuard, etcd::EtcdLock};
    /// # async fn run(lock: EtcdLock, guard: LockGuard) -> Result<(), LockError> {
    /// match lock.fenced_txn(&guard, vec![TxnOp::put("reports/last", "2026-11-29", None)]).await {
    ///     Ok(_) => println!("written under token {}", guard.fencing_token()),
    ///     Err(LockError::Fenced { .. }) => println!("not written: the lock was lost"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn fenced_txn(&self, guard: &LockGuard, ops: Vec<TxnOp>) -> Result<TxnResponse, LockError> {
        let txn = Txn::new().when([is_owner(guard)]).and_then(ops);
        let response = self.txn("fenced txn", CALL_TIMEOUT, &txn).await?;
        if response.succeeded() {
            Ok(response)
        } else {
            Err(LockError::Fenced { name: guard.name().to_string(), token: guard.fencing_token() })
        }
    }

    /// A transaction, sent again while members refuse it (see [`sent`]).
    async fn txn(&self, during: &'static str, limit: Duration, txn: &Txn) -> Result<TxnResponse, LockError> {
        sent(&self.client, during, limit, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// The highest fencing token this etcd can have issued so far: its current revision (a
    /// token is the revision of a lock key's creation). A token stored elsewhere above it was
    /// issued by a history this etcd no longer has: it was restored from a backup, back in
    /// time, under the same token space.
    pub async fn issued_up_to(&self) -> Result<u64, LockError> {
        let keys_only = GetOptions::new().with_keys_only();
        let response = sent(&self.client, "current revision", CALL_TIMEOUT, |mut c| {
            let keys_only = keys_only.clone();
            async move { c.get(TOKEN_SPACE_KEY, Some(keys_only)).await }
        })
        .await?;
        Ok(response.header().map_or(0, |h| h.revision().max(0) as u64))
    }

    /// Names this etcd's token space once, in the etcd itself: a cluster started afresh
    /// (revisions from 1 again) has no such key and gets a new name, even when its cluster
    /// id is the same (same member names and URLs give the same id).
    async fn create_token_space(&self, deadline: Instant) -> Result<String, LockError> {
        let fresh = super::unique_identity("space");
        let txn = Txn::new()
            .when([Compare::version(TOKEN_SPACE_KEY, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(TOKEN_SPACE_KEY, fresh.as_str(), None)])
            .or_else([TxnOp::get(TOKEN_SPACE_KEY, None)]);
        let response = self.txn("token space", remaining(deadline), &txn).await?;
        if response.succeeded() {
            return Ok(fresh);
        }
        Ok(ranges(&response).first().and_then(|r| r.first()).map(value).unwrap_or(fresh))
    }

    /// The queue of lock `name`: the holder first, then the waiters in order.
    pub async fn queue(&self, name: &str) -> Result<Vec<QueueEntry>, LockError> {
        let options = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        let response = sent(&self.client, "list lock queue", CALL_TIMEOUT, |mut c| {
            let options = options.clone();
            async move { c.get(prefix(name), Some(options)).await }
        })
        .await?;
        let mut queue = Vec::new();
        for kv in response.kvs() {
            let ttl_left = sent(&self.client, "lease ttl", CALL_TIMEOUT, |mut c| async move {
                c.lease_time_to_live(kv.lease(), None).await
            })
            .await
            .ok()
            .map(|r| r.ttl());
            queue.push(QueueEntry {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                identity: String::from_utf8_lossy(kv.value()).into_owned(),
                token: kv.create_revision() as u64,
                lease: kv.lease(),
                ttl_left,
            });
        }
        Ok(queue)
    }

    /// Puts the own key and waits until every key created before it is gone (with
    /// [`Mode::Try`], fails at once with [`LockError::Busy`] instead).
    #[allow(clippy::too_many_arguments)]
    async fn wait_turn(
        &self,
        name: &str,
        key: &str,
        lease: i64,
        deadline: Instant,
        session: &Session,
        own_revision: &OwnRevision,
        mode: Mode,
    ) -> Result<(u64, String), LockError> {
        let first =
            GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend).with_limit(1);
        let enqueue = Txn::new().and_then([
            TxnOp::put(key, self.identity.as_str(), Some(PutOptions::new().with_lease(lease))),
            TxnOp::get(key, None),
            TxnOp::get(prefix(name), Some(first)),
            TxnOp::get(TOKEN_SPACE_KEY, None),
        ]);
        let response = self.txn("enqueue", remaining(deadline), &enqueue).await?;
        let [own, first, space] = ranges(&response).try_into().map_err(|_| {
            LockError::Invalid("etcd answered the enqueue transaction with other than three ranges".into())
        })?;
        // The token is the key's create revision as etcd stores it, read in the same
        // transaction: a put on a key that exists already keeps its first create revision.
        let Some(revision) = own.first().map(KeyValue::create_revision) else {
            return Err(LockError::LostWhileWaiting {
                name: name.into(),
                reason: format!("own key {key} is gone (lease expired)"),
            });
        };
        own_revision.set(revision);
        let cluster = match space.first() {
            Some(kv) => value(kv),
            None => self.create_token_space(deadline).await?,
        };
        match first.first() {
            Some(holder) if holder.key() != key.as_bytes() && mode == Mode::Try => {
                return Err(LockError::Busy { name: name.into(), holder: value(holder) });
            }
            Some(holder) if holder.key() != key.as_bytes() => {}
            _ => return Ok((revision as u64, cluster)),
        }
        loop {
            // The key just before ours, and ours (it vanishes if our lease expired meanwhile:
            // the re-check etcd added after the Jepsen analysis).
            let before = GetOptions::new()
                .with_prefix()
                .with_max_create_revision(revision - 1)
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(1);
            let check = Txn::new().and_then([TxnOp::get(prefix(name), Some(before)), TxnOp::get(key, None)]);
            let response = self.txn("check queue", remaining(deadline), &check).await?;
            let [predecessor, own] = ranges(&response).try_into().unwrap_or_default();
            if own.is_empty() {
                return Err(LockError::LostWhileWaiting {
                    name: name.into(),
                    reason: format!("own key {key} is gone (lease expired)"),
                });
            }
            let Some((before_key, before_identity)) =
                predecessor.first().map(|kv| (kv.key().to_vec(), value(kv)))
            else {
                return Ok((revision as u64, cluster));
            };
            let watch_from = response.header().map(|h| h.revision()).unwrap_or_default() + 1;
            let options = WatchOptions::new().with_start_revision(watch_from);
            let mut watch = sent(&self.client, "watch", remaining(deadline), |mut c| {
                let (key, options) = (before_key.clone(), options.clone());
                async move { c.watch(key, Some(options)).await }
            })
            .await?;
            loop {
                tokio::select! {
                    _ = session.lost() => {
                        return Err(LockError::LostWhileWaiting { name: name.into(), reason: "own lease lost".into() });
                    }
                    _ = sleep_until(deadline) => {
                        return Err(LockError::Timeout { name: name.into(), waited: Duration::ZERO, holder: before_identity });
                    }
                    message = watch.message() => match message? {
                        Some(m) if m.events().iter().any(|e| e.event_type() == EventType::Delete) => break,
                        Some(m) if m.canceled() => {
                            // Re-checked at once, but not in a tight loop if etcd keeps cancelling.
                            tokio::time::sleep(WATCH_RETRY_PAUSE.min(remaining(deadline))).await;
                            break;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            }
        }
    }
}

impl Lock for EtcdLock {
    fn backend(&self) -> Backend {
        Backend::Etcd
    }

    async fn acquire(&self, name: &str, options: LockOptions) -> Result<LockGuard, LockError> {
        self.acquire_in(name, options, Mode::Wait).await
    }

    async fn try_acquire(&self, name: &str, options: LockOptions) -> Result<LockGuard, LockError> {
        self.acquire_in(name, options, Mode::Try).await
    }
}

impl EtcdLock {
    async fn acquire_in(&self, name: &str, options: LockOptions, mode: Mode) -> Result<LockGuard, LockError> {
        check_name(name)?;
        let started = Instant::now();
        let deadline = started + options.timeout();
        let mut pause = Duration::from_millis(100);
        loop {
            let result = match self.reuse_lease(&options) {
                Some(idle) => match self.acquire_with(name, &options, started, Some(idle), mode).await {
                    // Revoked behind our back while idle: start over with a new lease.
                    Err(LockError::Etcd { failure: EtcdFailure::LeaseNotFound, .. }) => {
                        self.acquire_with(name, &options, started, None, mode).await
                    }
                    other => other,
                },
                None => self.acquire_with(name, &options, started, None, mode).await,
            };
            // During an etcd leader election requests fail for a moment; the failed attempt
            // has withdrawn its key (its lease is revoked), so trying again is safe.
            match result {
                Err(e) if is_transient(&e) && Instant::now() + pause < deadline => {
                    tracing::debug!(lock = name, error = %e, "etcd busy; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

/// An error that a moment later may not recur: a member that is gone (the client may pick
/// another endpoint), or a cluster without a leader or electing one.
fn is_transient(error: &LockError) -> bool {
    matches!(error, LockError::Etcd { failure: EtcdFailure::Unavailable, .. })
}

/// Runs `call` until it succeeds, fails for good, or `limit` has passed.
async fn with_retries<T, F: Future<Output = Result<T, etcd_client::Error>>>(
    during: &'static str,
    limit: Duration,
    mut call: impl FnMut() -> F,
) -> Result<T, LockError> {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(50);
    loop {
        match bounded(Backend::Etcd, during, remaining(deadline), call()).await {
            Err(e) if is_transient(&e) && Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// Runs `call` with a clone of `client` within `limit`, again at once while members refuse
/// the connection: such a call never reached etcd.
async fn sent<T, F: Future<Output = Result<T, etcd_client::Error>>>(
    client: &Client,
    during: &'static str,
    limit: Duration,
    call: impl Fn(Client) -> F,
) -> Result<T, LockError> {
    let deadline = Instant::now() + limit;
    let mut resends = RESENDS_WHEN_REFUSED;
    loop {
        match tokio::time::timeout(remaining(deadline), call(client.clone())).await {
            Ok(Err(e)) if resends > 0 && was_refused(&e) => resends -= 1,
            Ok(result) => return result.map_err(LockError::from),
            Err(_) => return Err(LockError::Unresponsive { backend: Backend::Etcd, during, after: limit }),
        }
    }
}

impl EtcdLock {
    async fn acquire_with(
        &self,
        name: &str,
        options: &LockOptions,
        started: Instant,
        idle: Option<IdleLease>,
        mode: Mode,
    ) -> Result<LockGuard, LockError> {
        let deadline = started + options.timeout();
        let (lease, renewed_at) = match idle {
            Some(idle) => (idle.id, idle.renewed_at),
            None => {
                let asked = Instant::now();
                let ttl = i64::from(options.ttl_seconds());
                let grant = sent(&self.client, "lease grant", remaining(deadline), |mut c| async move {
                    c.lease_grant(ttl, None).await
                });
                (grant.await?.id(), asked)
            }
        };
        // From here on the lease is kept alive (also while waiting). If the acquisition
        // fails or times out, it is revoked: a dead waiter's key must not block the queue.
        let key = format!("{}{lease:x}", prefix(name));
        let own_revision = Arc::new(OwnRevision::default());
        let renewal = EtcdRenewal {
            client: self.client.clone(),
            lease,
            key: key.clone(),
            own_revision: own_revision.clone(),
            ttl_seconds: options.ttl_seconds(),
            idle: self.idle.clone(),
            stream: None,
            watch: None,
        };
        let session = Session::start(renewal, options, renewed_at, name);
        let (token, cluster) =
            match self.wait_turn(name, &key, lease, deadline, &session, &own_revision, mode).await {
                Ok(held) => held,
                Err(LockError::Timeout { name, holder, .. }) => {
                    return Err(LockError::Timeout { name, waited: started.elapsed(), holder });
                }
                Err(e) => return Err(e),
            };
        Ok(session.into_guard(Held {
            name: name.to_string(),
            key,
            token,
            token_space: format!("etcd:{cluster}"),
            backend: Backend::Etcd,
            waited: started.elapsed(),
        }))
    }
}

/// The create revision of our key (the token), 0 until the key is put; the keep-alive
/// task starts watching the key as soon as it is set.
#[derive(Default)]
struct OwnRevision {
    revision: AtomicI64,
    set: tokio::sync::Notify,
}

impl OwnRevision {
    fn set(&self, revision: i64) {
        self.revision.store(revision, Ordering::Release);
        self.set.notify_waiters();
    }

    fn get(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Waits until the revision is known.
    async fn known(&self) -> i64 {
        loop {
            let set = self.set.notified();
            let revision = self.get();
            if revision != 0 {
                return revision;
            }
            set.await;
        }
    }
}

struct EtcdRenewal {
    client: Client,
    lease: i64,
    key: String,
    own_revision: Arc<OwnRevision>,
    ttl_seconds: u32,
    idle: IdleLeases,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Watches our key from just after its creation, to hear of its deletion.
    watch: Option<WatchStream>,
}

impl Renewal for EtcdRenewal {
    async fn renew(&mut self) -> Result<bool, LockError> {
        if self.stream.is_none() {
            let lease = self.lease;
            let keep_alive = sent(&self.client, "keep-alive", CALL_TIMEOUT, |mut c| async move {
                c.lease_keep_alive(lease).await
            });
            match keep_alive.await {
                Ok(stream) => self.stream = Some(stream),
                // Revoked or expired already: lost now, not after retries until the deadline.
                Err(LockError::Etcd { failure: EtcdFailure::LeaseNotFound, .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let Some((keeper, stream)) = self.stream.as_mut() else { return Ok(false) };
        let answer = async {
            keeper.keep_alive().await?;
            stream.message().await
        }
        .await;
        match answer {
            Ok(Some(response)) => Ok(response.ttl() > 0),
            Ok(None) => {
                self.stream = None;
                Err(LockError::KeepAlive("the keep-alive stream was closed".into()))
            }
            Err(e) => {
                self.stream = None;
                Err(e.into())
            }
        }
    }

    /// Deleting the own key is what wakes the next waiter; the lease is then kept for reuse
    /// or revoked, off the caller's path. The delete is one transaction that compares the
    /// key's create revision with ours: a retried or delayed delete can never remove a key
    /// that a later acquisition created under the same name and lease.
    async fn release(&mut self) -> Result<(), LockError> {
        self.stream = None;
        self.watch = None;
        let revision = self.own_revision.get();
        if revision == 0 {
            return Ok(()); // our key was never put
        }
        let (client, key) = (&self.client, self.key.as_str());
        with_retries("release", CALL_TIMEOUT, || {
            let mut client = client.clone();
            let txn = Txn::new().when([fence(key, revision as u64)]).and_then([TxnOp::delete(key, None)]);
            async move { client.txn(txn).await }
        })
        .await
        .map(drop)
    }

    async fn gone(&mut self) {
        let mut watch_from = 0;
        loop {
            let revision = self.own_revision.known().await;
            if self.watch.is_none() {
                // From just after our put, or, after a broken watch, from a fresh read that
                // showed the key still ours (the old revision may have been compacted).
                let options = WatchOptions::new().with_start_revision(watch_from.max(revision + 1));
                match self.client.watch(self.key.as_str(), Some(options)).await {
                    Ok(stream) => self.watch = Some(stream),
                    Err(_) => {
                        tokio::time::sleep(WATCH_RETRY_PAUSE).await;
                        continue;
                    }
                }
            }
            let Some(watch) = self.watch.as_mut() else { continue };
            match watch.message().await {
                Ok(Some(m)) if m.events().iter().any(|e| e.event_type() == EventType::Delete) => return,
                Ok(Some(m)) if !m.canceled() => {}
                _ => {
                    self.watch = None;
                    tokio::time::sleep(WATCH_RETRY_PAUSE).await;
                    let mut client = self.client.clone();
                    if let Ok(Ok(read)) =
                        tokio::time::timeout(CALL_TIMEOUT, client.get(self.key.as_str(), None)).await
                    {
                        if read.kvs().first().is_none_or(|kv| kv.create_revision() != revision) {
                            return;
                        }
                        watch_from = read.header().map(|h| h.revision() + 1).unwrap_or_default();
                    }
                }
            }
        }
    }

    async fn cleanup(self, clean: Option<Instant>) {
        if let Some(renewed_at) = clean
            && let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_LEASES
        {
            idle.push(IdleLease { id: self.lease, ttl_seconds: self.ttl_seconds, renewed_at });
            return;
        }
        let (client, lease) = (&self.client, self.lease);
        let revoke = with_retries("lease revoke", CALL_TIMEOUT, || {
            let mut client = client.clone();
            async move { client.lease_revoke(lease).await }
        });
        if let Err(e) = revoke.await
            && !matches!(e, LockError::Etcd { failure: EtcdFailure::LeaseNotFound, .. })
        {
            tracing::debug!(lease = self.lease, error = %e, "lease revoke failed; it expires by its TTL");
        }
    }
}

/// The compare that holds only while `guard` holds its lock (the Go client's
/// `Mutex.IsOwner()`): its key still exists with the create revision that is its token.
/// Put it into a transaction of your own, with your compares and else branch.
///
/// ```no_run
/// # use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
/// # use lockguard_lock::{LockGuard, etcd::is_owner};
/// # async fn run(mut client: Client, guard: LockGuard) -> Result<(), etcd_client::Error> {
/// // Advance a counter from 41 to 42, only while holding the lock; else read it.
/// let txn = Txn::new()
///     .when([is_owner(&guard), Compare::value("counter", CompareOp::Equal, "41")])
///     .and_then([TxnOp::put("counter", "42", None)])
///     .or_else([TxnOp::get("counter", None)]);
/// let committed = client.txn(txn).await?.succeeded();
/// # Ok(())
/// # }
/// ```
pub fn is_owner(guard: &LockGuard) -> Compare {
    fence(guard.key(), guard.fencing_token())
}

/// The compare that holds only while the lock key `key` still exists with create revision
/// `token` (for a key and token kept apart from their guard).
pub fn fence(key: &str, token: u64) -> Compare {
    Compare::create_revision(key, CompareOp::Equal, token as i64)
}

fn prefix(name: &str) -> String {
    format!("{name}/")
}

fn check_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() || name.len() > 1024 || name.ends_with('/') {
        return Err(LockError::InvalidName {
            name: name.into(),
            reason: "must be 1–1024 bytes and not end with '/'".into(),
        });
    }
    Ok(())
}

/// The key-values of each range of a transaction, in order.
fn ranges(response: &TxnResponse) -> Vec<Vec<KeyValue>> {
    response
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().to_vec()),
            _ => None,
        })
        .collect()
}

fn value(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.value()).into_owned()
}
