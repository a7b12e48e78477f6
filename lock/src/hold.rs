//! What every backend shares once it holds a lease: renew at an interval, declare the lock
//! lost when no renewal succeeded before the deadline, release on request or drop.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{Backend, LockError, LockGuard, LockOptions};

/// Default keep-alive interval: a third of the TTL, so two renewals can fail before expiry.
pub fn renew_interval(ttl_seconds: u32) -> Duration {
    Duration::from_secs(ttl_seconds.into()) / 3
}

/// How long after the *sending* of the last successful renewal the holder still trusts its
/// lease: the TTL minus a margin (a tenth of it, at least 200 ms). The server counts from
/// when it received the renewal, which is later, so the holder gives up first.
///
/// ```
/// use std::time::Duration;
/// use lockguard_lock::lost_deadline;
///
/// assert_eq!(lost_deadline(Duration::from_secs(10)), Duration::from_secs(9));
/// assert_eq!(lost_deadline(Duration::from_secs(2)), Duration::from_millis(1800));
/// ```
pub fn lost_deadline(ttl: Duration) -> Duration {
    let margin = (ttl / 10).max(Duration::from_millis(200));
    ttl.saturating_sub(margin)
}

/// A backend's renew and release calls for one held lease.
pub(crate) trait Renewal: Send + 'static {
    /// One renewal; `Ok(false)` means the lease is gone for good.
    fn renew(&mut self) -> impl Future<Output = Result<bool, LockError>> + Send;
    /// Gives the lock up (waiters may proceed once it returns); must be bounded in time.
    fn release(&mut self) -> impl Future<Output = Result<(), LockError>> + Send;
    /// Completes when the backend learns that the lock is gone although the lease lives
    /// (its key deleted by someone else). Must be cancel-safe: it is polled again after
    /// every renewal.
    fn gone(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
    /// Tidies up after the release was reported, off the caller's critical path.
    /// `clean` carries when the last renewal was sent if a guard was released without loss.
    fn cleanup(self, clean: Option<Instant>) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        let _ = clean;
        async {}
    }
}

/// When the holder stops trusting its lease, shared between the keep-alive task and the
/// guard: the guard compares the clock with it itself, so a holder that runs before the
/// task after a pause (SIGSTOP, a long GC) still sees the loss.
#[derive(Debug)]
pub(crate) struct Deadline {
    base: Instant,
    /// Nanoseconds after `base`.
    at: AtomicU64,
}

impl Deadline {
    fn new(at: Instant) -> Arc<Self> {
        let base = Instant::now();
        let deadline = Arc::new(Self { base, at: AtomicU64::new(0) });
        deadline.set(at);
        deadline
    }

    fn set(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        self.at.store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Release);
    }

    pub fn passed(&self) -> bool {
        let at = self.base + Duration::from_nanos(self.at.load(Ordering::Acquire));
        Instant::now() >= at
    }
}

/// A lease being kept alive by a background task.
pub(crate) struct Session {
    lost: CancellationToken,
    deadline: Arc<Deadline>,
    release: oneshot::Sender<()>,
    released: oneshot::Receiver<Result<(), LockError>>,
}

pub(crate) struct Held {
    pub name: String,
    pub key: String,
    pub token: u64,
    pub token_space: String,
    pub backend: Backend,
    pub waited: Duration,
}

impl Session {
    /// Starts keeping the lease alive; `renewed_at` is when the request that created or last
    /// renewed the lease was sent.
    pub fn start(renewal: impl Renewal, options: &LockOptions, renewed_at: Instant, name: &str) -> Self {
        let lost = CancellationToken::new();
        let (release, release_rx) = oneshot::channel();
        let (released_tx, released) = oneshot::channel();
        let timing = Timing { interval: options.renew_interval(), deadline: lost_deadline(options.ttl()) };
        let deadline = Deadline::new(renewed_at + timing.deadline);
        let ends = Ends {
            lost: lost.clone(),
            deadline: deadline.clone(),
            release: release_rx,
            released: released_tx,
        };
        tokio::spawn(hold(renewal, timing, renewed_at, ends, name.to_string()));
        Self { lost, deadline, release, released }
    }

    #[cfg(test)]
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Only the etcd backend waits on a session (a lease lost while queued).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }

    pub fn into_guard(self, held: Held) -> LockGuard {
        LockGuard {
            name: held.name,
            key: held.key,
            token: held.token,
            token_space: held.token_space,
            backend: held.backend,
            waited: held.waited,
            acquired_at: std::time::Instant::now(),
            lost: self.lost,
            deadline: self.deadline,
            release: Some(self.release),
            released: Some(self.released),
        }
    }
}

#[derive(Clone, Copy)]
struct Timing {
    interval: Duration,
    deadline: Duration,
}

enum Ended {
    Released { by_guard: bool },
    Lost(String),
}

/// How the keep-alive task reports and is told to end.
struct Ends {
    lost: CancellationToken,
    deadline: Arc<Deadline>,
    release: oneshot::Receiver<()>,
    released: oneshot::Sender<Result<(), LockError>>,
}

/// Ends when the guard is released (explicitly or by drop: a sent signal), when a session
/// is dropped before it became a guard (a failed acquisition: a closed channel), or when
/// the lease is lost.
async fn hold(mut renewal: impl Renewal, timing: Timing, mut renewed_at: Instant, ends: Ends, name: String) {
    let Ends { lost, deadline: shared_deadline, mut release, released } = ends;
    let _live = LiveSession::enter();
    let mut next = renewed_at + timing.interval;
    let ended = loop {
        let deadline = renewed_at + timing.deadline;
        // Checked first: after a pause (SIGSTOP, a long GC) every timer is due at once.
        if Instant::now() >= deadline {
            break Ended::Lost(format!("no successful keep-alive within {:?}", timing.deadline));
        }
        tokio::select! {
            biased;
            signal = &mut release => break Ended::Released { by_guard: signal.is_ok() },
            _ = renewal.gone() => break Ended::Lost("the lock key was deleted by someone else".into()),
            _ = sleep_until(deadline) => {}
            _ = sleep_until(next) => {
                let sent = Instant::now();
                match timeout(deadline.saturating_duration_since(sent), renewal.renew()).await {
                    Ok(Ok(true)) => {
                        renewed_at = sent;
                        shared_deadline.set(sent + timing.deadline);
                        next = sent + timing.interval;
                    }
                    Ok(Ok(false)) => break Ended::Lost("the lease is gone".into()),
                    Ok(Err(e)) => {
                        tracing::warn!(lock = %name, error = %e, "keep-alive failed; retrying");
                        next = Instant::now() + (timing.interval / 4).max(Duration::from_millis(100));
                    }
                    Err(_) => {}
                }
            }
        }
    };
    let (result, clean) = match ended {
        Ended::Released { by_guard } => {
            let result = renewal.release().await;
            let clean = (by_guard && result.is_ok()).then_some(renewed_at);
            (result, clean)
        }
        Ended::Lost(reason) => {
            lost.cancel();
            tracing::warn!(lock = %name, %reason, "lock lost");
            // Best effort, so that waiters need not wait for the server-side expiry.
            let _ = renewal.release().await;
            (Ok(()), None)
        }
    };
    let _ = released.send(result);
    renewal.cleanup(clean).await;
}

/// Counts keep-alive tasks that have not finished (their release included), so a process
/// can wait for them before it exits: see [`drain`].
struct LiveSession;

static LIVE_SESSIONS: AtomicU64 = AtomicU64::new(0);
static SESSION_ENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl LiveSession {
    fn enter() -> Self {
        LIVE_SESSIONS.fetch_add(1, Ordering::AcqRel);
        Self
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        LIVE_SESSIONS.fetch_sub(1, Ordering::AcqRel);
        SESSION_ENDED.notify_waiters();
    }
}

/// Waits (at most `limit`) until every lock of this process has been released or given up,
/// including acquisitions that were abandoned (a dropped `acquire` future withdraws its key
/// in the background). Call it before exiting, or the runtime may end first and a queued
/// key blocks the lock until its lease expires.
pub async fn drain(limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        loop {
            let ended = SESSION_ENDED.notified();
            if LIVE_SESSIONS.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_leaves_a_margin_before_the_ttl() {
        assert_eq!(lost_deadline(Duration::from_secs(2)), Duration::from_millis(1800));
        assert_eq!(lost_deadline(Duration::from_secs(10)), Duration::from_secs(9));
        assert_eq!(renew_interval(15), Duration::from_secs(5));
    }

    struct Scripted {
        answers: Vec<Result<bool, LockError>>,
        released: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Renewal for Scripted {
        async fn renew(&mut self) -> Result<bool, LockError> {
            if self.answers.is_empty() {
                std::future::pending::<()>().await;
            }
            self.answers.remove(0)
        }
        async fn release(&mut self) -> Result<(), LockError> {
            self.released.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    fn session(
        answers: Vec<Result<bool, LockError>>,
    ) -> (Session, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let options = LockOptions::new(3, Duration::from_secs(1)).unwrap();
        let renewal = Scripted { answers, released: released.clone() };
        (Session::start(renewal, &options, Instant::now(), "test"), released)
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_the_lock_and_a_hung_renewal_loses_it() {
        // Three good renewals (1 s apart), then the backend hangs.
        let (session, released) = session(vec![Ok(true), Ok(true), Ok(true)]);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(!session.is_lost(), "renewed at 1, 2 and 3 s: still held at 3.5 s");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert!(!session.is_lost(), "the deadline is 3 s + 2.7 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(session.is_lost(), "no renewal since 3 s, deadline 2.7 s later");
        tokio::task::yield_now().await;
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_reported_gone_is_lost_at_once() {
        let (session, _) = session(vec![Ok(false)]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(session.is_lost());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_guard_releases() {
        let (session, released) = session(vec![]);
        let guard = session.into_guard(Held {
            name: "n".into(),
            key: "k".into(),
            token: 1,
            token_space: "etcd:test".into(),
            backend: Backend::Etcd,
            waited: Duration::ZERO,
        });
        drop(guard);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(released.load(std::sync::atomic::Ordering::SeqCst));
    }
}
