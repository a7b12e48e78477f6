//! The lock module against real etcd and the real API server, both backends.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use lockguard_lock::etcd::{EtcdConfig, EtcdLock, fence, is_owner};
use lockguard_lock::lease::LeaseLock;
use lockguard_lock::{Backend, Lock, LockError, LockOptions, unique_identity};
use support::{Cli, etcd_client, kube_client, lock_etcd, namespace, unique};

fn options(ttl: u32, timeout_ms: u64) -> LockOptions {
    LockOptions::new(ttl, Duration::from_millis(timeout_ms)).expect("valid options")
}

async fn etcd_lock() -> EtcdLock {
    EtcdLock::new(etcd_client(&lock_etcd()).await, unique_identity("test"))
}

async fn lease_lock(ns: &str) -> LeaseLock {
    LeaseLock::new(kube_client().await, ns, unique_identity("test"))
}

/// A counter in etcd, incremented by read, sleep, write: no concurrency control of its own.
async fn increment(etcd: &mut etcd_client::Client, key: &str) {
    let current = etcd.get(key, None).await.expect("get counter");
    let value: u64 =
        current.kvs().first().map(|kv| kv.value_str().expect("utf8").parse().expect("number")).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1)).await;
    etcd.put(key, (value + 1).to_string(), None).await.expect("put counter");
}

async fn counter(key: &str) -> u64 {
    let mut etcd = etcd_client(&lock_etcd()).await;
    let got = etcd.get(key, None).await.expect("get counter");
    got.kvs().first().map(|kv| kv.value_str().expect("utf8").parse().expect("number")).unwrap_or(0)
}

/// 8 workers × 25 increments, each under the lock when `lock` is given.
async fn count_with<L: Lock + Clone + 'static>(locks: Vec<L>, name: &str, key: &str) -> u64 {
    let mut workers = Vec::new();
    for lock in locks {
        let (name, key) = (name.to_string(), key.to_string());
        workers.push(tokio::spawn(async move {
            let mut etcd = etcd_client(&lock_etcd()).await;
            for _ in 0..25 {
                let guard = lock.acquire(&name, options(10, 60_000)).await.expect("acquire");
                increment(&mut etcd, &key).await;
                guard.release().await.expect("release");
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    counter(key).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_lock_concurrent_increments_lose_updates() {
    let key = unique("counter/unlocked");
    let mut workers = Vec::new();
    for _ in 0..8 {
        let key = key.clone();
        workers.push(tokio::spawn(async move {
            let mut etcd = etcd_client(&lock_etcd()).await;
            for _ in 0..25 {
                increment(&mut etcd, &key).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let total = counter(&key).await;
    assert!(
        total < 200,
        "read-sleep-write without a lock must lose updates (got {total}); otherwise the locked tests prove nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_lock_gives_mutual_exclusion() {
    let mut locks = Vec::new();
    for _ in 0..8 {
        locks.push(etcd_lock().await);
    }
    let key = unique("counter/etcd");
    assert_eq!(count_with(locks, &unique("mutex"), &key).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lease_lock_gives_mutual_exclusion() {
    let ns = namespace("lock-mutex").await;
    let mut locks = Vec::new();
    for _ in 0..8 {
        locks.push(lease_lock(&ns).await);
    }
    let key = unique("counter/lease");
    assert_eq!(count_with(locks, "mutex", &key).await, 200);
}

/// A holder process is SIGKILLed; a waiter gets the lock within TTL + 1 s of the kill.
async fn crash_hands_over(backend: &str, ns: &str, name: &str, waiter: impl Lock + 'static) {
    let holder = Cli::lock(&[name, "--backend", backend, "--namespace", ns, "--ttl", "3"]);
    let (_, old_token) = holder.held(Duration::from_secs(10));
    let owned = name.to_string();
    let wait = tokio::spawn(async move {
        let guard = waiter.acquire(&owned, options(3, 20_000)).await;
        (Instant::now(), guard)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.signal(libc::SIGKILL);
    let killed = Instant::now();
    let (acquired, guard) = wait.await.expect("waiter");
    let guard = guard.expect("the waiter gets the lock after the holder died");
    let took = acquired - killed;
    assert!(took <= Duration::from_secs(4), "{backend}: took {took:?} after the kill, TTL is 3 s");
    assert!(guard.fencing_token() > old_token);
}

#[tokio::test]
async fn etcd_lock_of_a_killed_holder_frees_itself_by_lease_expiry() {
    crash_hands_over("etcd", "default", &unique("crash"), etcd_lock().await).await;
}

#[tokio::test]
async fn lease_lock_of_a_killed_holder_frees_itself_by_expiry() {
    let ns = namespace("lock-crash").await;
    crash_hands_over("lease", &ns, "crash", lease_lock(&ns).await).await;
}

/// A holder process is frozen (SIGSTOP) past its TTL; another takes the lock; once thawed,
/// the old holder notices the loss and exits with code 4.
async fn pause_is_detected(
    backend: &str,
    ns: &str,
    name: &str,
    other: impl Lock,
) -> (String, u64, lockguard_lock::LockGuard) {
    let mut holder = Cli::lock(&[name, "--backend", backend, "--namespace", ns, "--ttl", "3"]);
    let (key, old_token) = holder.held(Duration::from_secs(10));
    holder.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let guard = other.acquire(name, options(3, 20_000)).await.expect("another replica takes over");
    assert!(frozen.elapsed() <= Duration::from_secs(5), "{backend}: takeover took {:?}", frozen.elapsed());
    assert!(guard.fencing_token() > old_token);
    holder.signal(libc::SIGCONT);
    let status = holder.wait(Duration::from_secs(5)).expect("the thawed holder exits");
    assert_eq!(status.code(), Some(4), "exit code 4 = lock lost; stderr: {}", holder.stderr());
    assert!(holder.stderr().contains("lost"), "says why: {}", holder.stderr());
    (key, old_token, guard)
}

#[tokio::test]
async fn etcd_paused_holder_loses_the_lock_and_its_fenced_write_is_rejected() {
    let name = unique("pause");
    let other = etcd_lock().await;
    let (old_key, old_token, guard) = pause_is_detected("etcd", "default", &name, other.clone()).await;
    let data = unique("fenced/data");
    let mut etcd = etcd_client(&lock_etcd()).await;

    // The stale holder's write, with its own key and token: etcd itself refuses it.
    let stale =
        Txn::new().when([fence(&old_key, old_token)]).and_then([TxnOp::put(data.as_str(), "stale", None)]);
    assert!(!etcd.txn(stale).await.expect("txn").succeeded(), "a stale token must not commit");
    // The pitfall: without the fence, the same write goes through.
    etcd.put(data.as_str(), "unfenced", None).await.expect("a plain put is not stopped by a lock");
    // The current holder's fenced write commits.
    other
        .fenced_txn(&guard, vec![TxnOp::put(data.as_str(), "current", None)])
        .await
        .expect("current holder writes");
    assert_eq!(etcd.get(data.as_str(), None).await.expect("get").kvs()[0].value(), b"current");
}

#[tokio::test]
async fn lease_paused_holder_loses_the_lock() {
    let ns = namespace("lock-pause").await;
    pause_is_detected("lease", &ns, "pause", lease_lock(&ns).await).await;
}

#[tokio::test]
async fn in_process_fenced_write_fails_once_the_lock_is_lost() {
    let name = unique("lost");
    let lock = etcd_lock().await;
    let guard = lock.acquire(&name, options(2, 5_000)).await.expect("acquire");
    // Someone deletes the lock key (an operator at a shell, or a lease revoked elsewhere).
    let mut etcd = etcd_client(&lock_etcd()).await;
    etcd.delete(guard.key(), None).await.expect("delete");
    match lock.fenced_txn(&guard, vec![TxnOp::put(unique("x").as_str(), "v", None)]).await {
        Err(LockError::Fenced { token, .. }) => assert_eq!(token, guard.fencing_token()),
        other => panic!("expected Fenced, got {other:?}"),
    }
}

#[tokio::test]
async fn etcdctl_lock_excludes_lockguard() {
    let name = unique("interop");
    let etcdctl = devenv::binary("etcdctl").expect("bin/etcdctl");
    let mut command = std::process::Command::new(&etcdctl);
    command.args(["--endpoints", &lock_etcd(), "lock", &name]).stdout(std::process::Stdio::piped());
    let mut person = devenv::process::spawn_tied(command).expect("etcdctl lock");
    let mut out = std::io::BufReader::new(person.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("etcdctl prints its key");
    assert!(line.starts_with(&format!("{name}/")), "etcdctl key layout NAME/<lease>: {line}");

    let lock = etcd_lock().await;
    match lock.acquire(&name, options(5, 1_000)).await {
        Err(LockError::Timeout { .. }) => {}
        other => panic!("lockguard must wait while etcdctl holds the lock: {other:?}"),
    }
    // SAFETY: SIGINT to our child; etcdctl releases the lock and exits.
    unsafe { libc::kill(person.id() as i32, libc::SIGINT) };
    let guard = lock.acquire(&name, options(5, 5_000)).await.expect("free once etcdctl let go");
    let _ = person.wait();
    guard.release().await.expect("release");
}

#[tokio::test]
async fn lockguard_lock_excludes_etcdctl() {
    let name = unique("interop");
    let holder = Cli::lock(&[&name, "--ttl", "5"]);
    let (key, _) = holder.held(Duration::from_secs(10));
    assert!(key.starts_with(&format!("{name}/")));
    let etcdctl = devenv::binary("etcdctl").expect("bin/etcdctl");
    let mut command = std::process::Command::new(&etcdctl);
    command
        .args(["--endpoints", &lock_etcd(), "lock", &name, "echo", "etcdctl-got-it"])
        .stdout(std::process::Stdio::piped());
    let mut person = devenv::process::spawn_tied(command).expect("etcdctl lock");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        person.try_wait().expect("try_wait").is_none(),
        "etcdctl must wait while lockguard holds the lock"
    );
    holder.signal(libc::SIGTERM);
    let released = Instant::now();
    let output = person.wait_with_output().expect("etcdctl finishes");
    assert!(String::from_utf8_lossy(&output.stdout).contains("etcdctl-got-it"));
    assert!(released.elapsed() < Duration::from_secs(3), "released at once on SIGTERM, not by expiry");
}

/// 100 acquisitions, every tenth by a fresh `lockguard lock` process (a restart with a new
/// identity): the tokens strictly increase.
async fn tokens_increase(backend: &str, ns: &str, name: &str, lock: impl Lock) {
    let mut tokens = Vec::new();
    for i in 0..100 {
        if i % 10 == 0 {
            let mut holder = Cli::lock(&[name, "--backend", backend, "--namespace", ns, "--ttl", "5"]);
            let (_, token) = holder.held(Duration::from_secs(10));
            tokens.push(token);
            holder.signal(libc::SIGTERM);
            assert!(
                holder.wait(Duration::from_secs(5)).is_some_and(|s| s.success()),
                "clean exit on SIGTERM"
            );
        } else {
            let guard = lock.acquire(name, options(5, 10_000)).await.expect("acquire");
            tokens.push(guard.fencing_token());
            guard.release().await.expect("release");
        }
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{backend}: tokens not strictly increasing: {tokens:?}");
}

#[tokio::test]
async fn etcd_tokens_strictly_increase_across_restarts() {
    tokens_increase("etcd", "default", &unique("tokens"), etcd_lock().await).await;
}

#[tokio::test]
async fn lease_tokens_strictly_increase_across_restarts() {
    let ns = namespace("lock-tokens").await;
    tokens_increase("lease", &ns, "tokens", lease_lock(&ns).await).await;
}

#[tokio::test]
async fn stopped_etcd_fails_within_the_timeout_and_recovers_after_restart() {
    let dir = devenv::run_dir("lock-outage").expect("dir");
    let mut etcd = devenv::etcd::start_single(&dir, "outage").expect("etcd");
    let client = EtcdConfig::new([etcd.endpoint()]).connect(Duration::from_secs(5)).await.expect("connect");
    let lock = EtcdLock::new(client, unique_identity("test"));
    lock.acquire("outage", options(5, 2_000))
        .await
        .expect("works while up")
        .release()
        .await
        .expect("release");

    etcd.stop();
    let started = Instant::now();
    let error = lock.acquire("outage", options(5, 2_000)).await.expect_err("etcd is down");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "bounded by the timeout: {:?}",
        started.elapsed()
    );
    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("etcd"), "the message names the backend: {error}");

    etcd.start().expect("restart etcd");
    let guard = lock.acquire("outage", options(5, 10_000)).await.expect("works again after restart");
    assert!(guard.fencing_token() > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn hung_etcd_fails_within_the_timeout() {
    let dir = devenv::run_dir("lock-hung").expect("dir");
    let etcd = devenv::etcd::start_single(&dir, "hung").expect("etcd");
    let client = EtcdConfig::new([etcd.endpoint()]).connect(Duration::from_secs(5)).await.expect("connect");
    let lock = EtcdLock::new(client, unique_identity("test"));
    etcd.pause().expect("SIGSTOP etcd");
    let started = Instant::now();
    let error = lock.acquire("hung", options(5, 1_500)).await.expect_err("etcd hangs");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded: {:?}", started.elapsed());
    assert!(matches!(error, LockError::Unresponsive { backend: Backend::Etcd, .. }), "{error}");
    etcd.resume().expect("SIGCONT");
    drop(etcd);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn unreachable_api_server_fails_within_the_timeout() {
    let port = devenv::process::free_port().expect("port");
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let lock = LeaseLock::new(client, "default", "test");
    let started = Instant::now();
    let error = lock.acquire("unreachable", options(5, 1_500)).await.expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded: {:?}", started.elapsed());
    assert!(error.is_unavailable(), "{error}");
}

/// A waiter gets the lock promptly after the holder's release: it watches (etcd: the key
/// before it; Lease: the record), it does not poll (client-go's Lease lock retries every 2 s).
/// The bound is loose because a test under load is not a benchmark: `make bench-lock` measures
/// the handoff (p50 1 ms etcd, 4 ms Lease); under a full test run one took 239 ms.
async fn hands_off_promptly(name: &str, holder: impl Lock, waiter: impl Lock + 'static) {
    let guard = holder.acquire(name, options(10, 5_000)).await.expect("holder");
    let name = name.to_string();
    let wait = tokio::spawn(async move {
        let guard = waiter.acquire(&name, options(10, 10_000)).await.expect("waiter");
        (Instant::now(), guard)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let released = Instant::now();
    guard.release().await.expect("release");
    let (acquired, _guard) = wait.await.expect("waiter task");
    let handoff = acquired - released;
    assert!(handoff < Duration::from_secs(1), "handoff took {handoff:?}");
}

#[tokio::test]
async fn etcd_release_hands_off_promptly() {
    hands_off_promptly(&unique("handoff"), etcd_lock().await, etcd_lock().await).await;
}

#[tokio::test]
async fn lease_release_hands_off_promptly() {
    let ns = namespace("lock-handoff").await;
    hands_off_promptly("handoff", lease_lock(&ns).await, lease_lock(&ns).await).await;
}

#[tokio::test]
async fn one_process_holding_twice_is_still_exclusive() {
    // Two reconciles of one replica race for the same lock: one identity, two acquisitions.
    let ns = namespace("lock-self").await;
    let lease = lease_lock(&ns).await;
    let first = lease.acquire("self", options(5, 2_000)).await.expect("first");
    assert!(matches!(lease.acquire("self", options(5, 500)).await, Err(LockError::Timeout { .. })));
    drop(first);
    let etcd = etcd_lock().await;
    let name = unique("self");
    let first = etcd.acquire(&name, options(5, 2_000)).await.expect("first");
    assert!(matches!(etcd.acquire(&name, options(5, 500)).await, Err(LockError::Timeout { .. })));
    drop(first);
}

#[test]
fn bad_options_are_rejected_with_a_clear_message() {
    let error = LockOptions::new(1, Duration::from_secs(1)).expect_err("ttl 1");
    assert!(error.to_string().contains("ttl must be between 2 and 300"), "{error}");
}

#[tokio::test]
async fn a_timed_out_waiter_leaves_nothing_in_the_queue() {
    let name = unique("withdraw");
    let holder = etcd_lock().await;
    let guard = holder.acquire(&name, options(5, 2_000)).await.expect("holder");
    let waiter = etcd_lock().await;
    assert!(matches!(waiter.acquire(&name, options(5, 500)).await, Err(LockError::Timeout { .. })));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queue = holder.queue(&name).await.expect("queue");
    assert_eq!(queue.len(), 1, "only the holder is left: {queue:?}");
    assert_eq!(queue[0].key, guard.key());
}

/// A busy lock fails at once, names its holder, and leaves nothing behind; a free one is
/// taken with a token above every earlier one.
async fn try_acquire_does_not_wait(name: &str, holder: impl Lock, other: impl Lock, holder_identity: &str) {
    let guard = holder.acquire(name, options(5, 5_000)).await.expect("holder");
    let started = Instant::now();
    match other.try_acquire(name, options(5, 5_000)).await {
        Err(LockError::Busy { holder, .. }) => assert_eq!(holder, holder_identity),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "try_acquire waited {:?}", started.elapsed());
    let first = guard.fencing_token();
    guard.release().await.expect("release");
    let taken = other.try_acquire(name, options(5, 5_000)).await.expect("free now");
    assert!(taken.fencing_token() > first, "{} after {first}", taken.fencing_token());
}

#[tokio::test]
async fn etcd_try_acquire_fails_at_once_on_a_held_lock_and_leaves_no_key() {
    let name = unique("try");
    let (holder, other) = (etcd_lock().await, etcd_lock().await);
    let identity = holder.identity().to_string();
    let observer = etcd_lock().await;
    let guard = holder.acquire(&name, options(5, 5_000)).await.expect("holder");
    assert!(matches!(other.try_acquire(&name, options(5, 5_000)).await, Err(LockError::Busy { .. })));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queue = observer.queue(&name).await.expect("queue");
    assert_eq!(queue.len(), 1, "only the holder is queued: {queue:?}");
    guard.release().await.expect("release");
    try_acquire_does_not_wait(&unique("try"), holder, other, &identity).await;
}

#[tokio::test]
async fn lease_try_acquire_fails_at_once_on_a_held_lock() {
    let ns = namespace("lock-try").await;
    let (holder, other) = (lease_lock(&ns).await, lease_lock(&ns).await);
    let identity = holder.identity().to_string();
    try_acquire_does_not_wait("try", holder, other, &identity).await;
}

#[tokio::test]
async fn the_etcd_token_is_the_create_revision_of_the_lock_key() {
    let name = unique("token");
    let lock = etcd_lock().await;
    // Other writes in between, so that a header revision would differ from the key's.
    let mut etcd = etcd_client(&lock_etcd()).await;
    for _ in 0..3 {
        let guard = lock.acquire(&name, options(5, 5_000)).await.expect("acquire");
        etcd.put(unique("noise").as_str(), "x", None).await.expect("put");
        let read = etcd.get(guard.key(), None).await.expect("get");
        assert_eq!(guard.fencing_token(), read.kvs()[0].create_revision() as u64);
        guard.release().await.expect("release");
    }
}

/// `is_owner` goes into a caller's own transaction, next to its own compare and with its own
/// else branch: here a counter advanced only by the holder while it holds the lock.
#[tokio::test]
async fn is_owner_composes_into_a_transaction_of_ones_own() {
    let name = unique("owner");
    let counter = unique("owner/counter");
    let lock = etcd_lock().await;
    let mut etcd = etcd_client(&lock_etcd()).await;
    etcd.put(counter.as_str(), "1", None).await.expect("seed");
    let guard = lock.acquire(&name, options(2, 5_000)).await.expect("acquire");
    let step = |from: &str, to: &str| {
        Txn::new()
            .when([is_owner(&guard), Compare::value(counter.as_str(), CompareOp::Equal, from)])
            .and_then([TxnOp::put(counter.as_str(), to, None)])
            .or_else([TxnOp::get(counter.as_str(), None)])
    };
    assert!(etcd.txn(step("1", "2")).await.expect("txn").succeeded(), "holder and value match");
    let stale = etcd.txn(step("1", "3")).await.expect("txn");
    assert!(!stale.succeeded(), "the value compare of one's own refuses");
    let seen = match &stale.op_responses()[0] {
        TxnOpResponse::Get(get) => get.kvs()[0].value().to_vec(),
        other => panic!("the else branch reads the counter, got {other:?}"),
    };
    assert_eq!(seen, b"2");
    // Once the key is gone the lock is not held: the same transaction refuses.
    etcd.delete(guard.key(), None).await.expect("delete the lock key");
    assert!(!etcd.txn(step("2", "3")).await.expect("txn").succeeded(), "not the owner any more");
}

#[tokio::test]
async fn cli_reports_timeout_with_its_own_exit_code_and_lists_the_queue() {
    let name = unique("cli");
    let holder = Cli::lock(&[&name, "--identity", "shell-user"]);
    let (key, token) = holder.held(Duration::from_secs(10));
    let mut waiter = Cli::lock(&[&name, "--timeout", "1"]);
    let status = waiter.wait(Duration::from_secs(5)).expect("the waiter gives up");
    assert_eq!(status.code(), Some(3), "exit code 3 = timeout");
    assert!(waiter.stderr().contains("timed out"), "{}", waiter.stderr());

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lockguard"))
        .args(["locks", &name, "--etcd-endpoints", &lock_etcd()])
        .output()
        .expect("lockguard locks");
    let table = String::from_utf8_lossy(&output.stdout);
    let row = table.lines().find(|l| l.starts_with("holder")).expect("a holder row");
    assert!(row.contains(&key) && row.contains("shell-user") && row.contains(&token.to_string()), "{table}");
}

#[tokio::test]
async fn cli_runs_the_command_with_key_and_token_and_exits_with_its_status() {
    let name = unique("cli-run");
    let mut cli = Cli::lock(&[
        &name,
        "--",
        "sh",
        "-c",
        "echo \"$LOCKGUARD_LOCK_KEY $LOCKGUARD_FENCING_TOKEN\"; exit 7",
    ]);
    let line = cli.line(Duration::from_secs(10)).expect("the command ran");
    let (key, token) = line.split_once(' ').expect("key and token");
    assert!(key.starts_with(&format!("{name}/")), "{line}");
    assert!(token.parse::<u64>().is_ok_and(|t| t > 0), "{line}");
    assert_eq!(cli.wait(Duration::from_secs(5)).and_then(|s| s.code()), Some(7));
    // Released on exit: the lock is free at once.
    let guard = etcd_lock().await.acquire(&name, options(5, 500)).await;
    assert!(guard.is_ok(), "released when the command exited: {guard:?}");
}

#[tokio::test]
async fn cli_stops_the_command_when_the_lock_is_lost() {
    let name = unique("cli-lost");
    let mut cli =
        Cli::lock(&[&name, "--ttl", "3", "--", "sh", "-c", "echo $$ $LOCKGUARD_LOCK_KEY; exec sleep 60"]);
    let line = cli.line(Duration::from_secs(10)).expect("the command ran");
    let (pid, key) = line.split_once(' ').expect("pid and key");
    let pid: i32 = pid.parse().expect("pid");
    let lease = i64::from_str_radix(key.rsplit('/').next().expect("lease hex"), 16).expect("hex lease id");
    // The lease is revoked behind the holder's back (an admin, or etcd expiring it).
    etcd_client(&lock_etcd()).await.lease_revoke(lease).await.expect("revoke");
    let status = cli.wait(Duration::from_secs(5)).expect("lockguard notices at its next keep-alive");
    assert_eq!(status.code(), Some(4), "exit code 4 = lock lost; stderr: {}", cli.stderr());
    // SAFETY: signal 0 only checks that the process exists.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the command must not keep running without the lock");
}

#[tokio::test]
async fn etcd_over_tls_needs_the_client_certificate() {
    let dir = devenv::run_dir("lock-tls").expect("dir");
    let etcd = devenv::etcd::start_tls(&dir, "tls").expect("etcd with TLS and client-cert auth");
    let pki = etcd.tls().expect("tls").clone();
    let with_cert = EtcdConfig {
        ca: Some(pki.ca_cert.clone()),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
        ..EtcdConfig::new([etcd.endpoint()])
    };
    let client =
        with_cert.connect(Duration::from_secs(5)).await.expect("connect with the client certificate");
    let lock = EtcdLock::new(client, unique_identity("tls"));
    lock.acquire("tls", options(5, 5_000)).await.expect("lock over TLS").release().await.expect("release");

    // Without a client certificate the server refuses: a clear error in bounded time.
    let without = EtcdConfig { ca: Some(pki.ca_cert.clone()), ..EtcdConfig::new([etcd.endpoint()]) };
    let started = Instant::now();
    let refused = match without.connect(Duration::from_secs(2)).await {
        Ok(client) => EtcdLock::new(client, "anonymous").acquire("tls", options(5, 2_000)).await.map(drop),
        Err(e) => Err(e),
    };
    assert!(refused.is_err(), "a client without a certificate must be refused");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded: {:?}", started.elapsed());

    // The CLI takes the same settings as flags.
    let endpoint = etcd.endpoint();
    let paths = [&pki.ca_cert, &pki.client_cert, &pki.client_key].map(|p| p.display().to_string());
    let mut cli = Cli::lock(&[
        "tls-cli",
        "--etcd-endpoints",
        &endpoint,
        "--etcd-ca",
        &paths[0],
        "--etcd-cert",
        &paths[1],
        "--etcd-key",
        &paths[2],
        "--",
        "true",
    ]);
    assert_eq!(cli.wait(Duration::from_secs(10)).and_then(|s| s.code()), Some(0), "{}", cli.stderr());
    drop(etcd);
    let _ = std::fs::remove_dir_all(dir);
}
