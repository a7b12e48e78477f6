//! The lock's guarantees in the corner cases, against real etcd and the real API server:
//! release checks whose key it deletes, the guard hears of its key's deletion, a pause
//! cannot hide a loss, `lockguard lock`'s command never outlives the lock or lockguard, a
//! signal while waiting leaves the queue at once, and a Lease deleted while held.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{PutOptions, Txn, TxnOp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use lockguard_lock::etcd::{EtcdLock, fence};
use lockguard_lock::lease::LeaseLock;
use lockguard_lock::{Lock, LockOptions, unique_identity};
use support::{Cli, etcd_client, eventually, kube_client, lock_etcd, namespace, unique};

fn options(ttl: u32, timeout_s: u64) -> LockOptions {
    LockOptions::new(ttl, Duration::from_secs(timeout_s)).expect("valid options")
}

async fn etcd_lock() -> EtcdLock {
    EtcdLock::new(etcd_client(&lock_etcd()).await, unique_identity("test"))
}

async fn key_exists(key: &str) -> bool {
    let mut etcd = etcd_client(&lock_etcd()).await;
    etcd.get(key, None).await.expect("get").count() > 0
}

#[tokio::test]
async fn a_guard_whose_key_was_deleted_is_lost_and_its_release_spares_the_new_key() {
    let lock = etcd_lock().await;
    let name = unique("deleted-key");
    let guard = lock.acquire(&name, options(10, 5)).await.expect("acquire");
    let key = guard.key().to_string();
    // The key goes and comes back under the same name: what a delayed delete followed by a
    // later acquisition of the same key looks like from etcd.
    let mut etcd = etcd_client(&lock_etcd()).await;
    etcd.delete(key.as_str(), None).await.expect("delete the key");
    let other = etcd.lease_grant(30, None).await.expect("lease").id();
    etcd.put(key.as_str(), "next holder", Some(PutOptions::new().with_lease(other)))
        .await
        .expect("re-create");
    let lost = eventually(Duration::from_secs(2), || async { guard.is_lost().then_some(()) }).await;
    assert!(lost.is_some(), "the guard watches its own key and reports the loss");
    let _ = guard.release().await;
    assert!(key_exists(&key).await, "release deleted a key this guard did not create");
}

#[tokio::test]
async fn a_stale_guards_fence_refuses_its_key_recreated_under_a_reused_lease() {
    let lock = etcd_lock().await;
    let name = unique("reused");
    let first = lock.acquire(&name, options(10, 5)).await.expect("acquire");
    let (old_key, old_token) = (first.key().to_string(), first.fencing_token());
    first.release().await.expect("release");
    let second = lock.acquire(&name, options(10, 5)).await.expect("acquire again");
    assert_eq!(second.key(), old_key, "the released lease was reused: the same key again");
    assert!(second.fencing_token() > old_token);
    let mut etcd = etcd_client(&lock_etcd()).await;
    let target = unique("fenced-target");
    let stale =
        Txn::new().when([fence(&old_key, old_token)]).and_then([TxnOp::put(target.as_str(), "stale", None)]);
    assert!(
        !etcd.txn(stale).await.expect("txn").succeeded(),
        "the old token must not pass: the key exists, but is not its"
    );
    let fresh = Txn::new().when([fence(second.key(), second.fencing_token())]).and_then([TxnOp::put(
        target.as_str(),
        "fresh",
        None,
    )]);
    assert!(etcd.txn(fresh).await.expect("txn").succeeded());
    second.release().await.expect("release");
}

/// A pause (here: the only runtime thread blocked) past the deadline: the guard must say
/// lost at once, before the keep-alive task had a chance to run.
async fn a_pause_is_seen_by_the_guard_itself(lock: impl Lock, name: &str) {
    let guard = lock.acquire(name, options(2, 10)).await.expect("acquire");
    assert!(!guard.is_lost());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(guard.is_lost(), "2.5 s without a keep-alive is past the 1.8 s deadline of a 2 s TTL");
}

#[tokio::test]
async fn etcd_is_lost_sees_a_pause_before_the_keepalive_task_runs() {
    a_pause_is_seen_by_the_guard_itself(etcd_lock().await, &unique("paused")).await;
}

#[tokio::test]
async fn lease_is_lost_sees_a_pause_before_the_keepalive_task_runs() {
    let ns = namespace("paused").await;
    a_pause_is_seen_by_the_guard_itself(
        LeaseLock::new(kube_client().await, &ns, unique_identity("t")),
        "paused",
    )
    .await;
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(marker))
        })
        .collect()
}

fn signal_all(pids: &[i32], signal: i32) {
    for &pid in pids {
        // SAFETY: processes this test started (found by their unique marker).
        unsafe { libc::kill(pid, signal) };
    }
}

/// `sh -c 'echo started; sleep <marker> & wait'`: a command with a grandchild.
fn command_with_grandchild() -> (String, String) {
    let marker = format!("3600.{}{}", std::process::id(), unique("").replace('-', ""));
    (format!("echo started; sleep {marker} & wait"), marker)
}

#[tokio::test]
async fn a_frozen_cli_leaves_no_process_of_its_command_once_thawed() {
    let name = unique("frozen-cli");
    let (script, marker) = command_with_grandchild();
    let mut cli = Cli::lock(&[&name, "--ttl", "3", "--", "sh", "-c", &script]);
    assert_eq!(cli.line(Duration::from_secs(10)).as_deref(), Some("started"), "{}", cli.stderr());
    // The whole machine freezes: lockguard and everything the command started.
    let command = processes_with(&marker);
    assert!(!command.is_empty());
    cli.signal(libc::SIGSTOP);
    signal_all(&processes_with(&marker), libc::SIGSTOP);
    let next = Cli::lock(&[&name, "--ttl", "3", "--timeout", "20"]);
    next.held(Duration::from_secs(20));
    cli.signal(libc::SIGCONT);
    signal_all(&processes_with(&marker), libc::SIGCONT);
    let gone =
        eventually(Duration::from_secs(3), || async { processes_with(&marker).is_empty().then_some(()) })
            .await;
    assert!(
        gone.is_some(),
        "processes of the command still run without the lock: {:?}",
        processes_with(&marker)
    );
    assert_eq!(cli.wait(Duration::from_secs(5)).and_then(|s| s.code()), Some(4), "exit 4: lock lost");
    next.signal(libc::SIGTERM);
}

#[tokio::test]
async fn no_process_of_the_command_outlives_a_killed_cli() {
    let name = unique("killed-cli");
    let (script, marker) = command_with_grandchild();
    let mut cli = Cli::lock(&[&name, "--ttl", "5", "--", "sh", "-c", &script]);
    assert_eq!(cli.line(Duration::from_secs(10)).as_deref(), Some("started"), "{}", cli.stderr());
    // SAFETY: kill(2) on the lockguard process alone, not its group.
    unsafe { libc::kill(cli.pid(), libc::SIGKILL) };
    let gone =
        eventually(Duration::from_secs(2), || async { processes_with(&marker).is_empty().then_some(()) })
            .await;
    assert!(gone.is_some(), "the command outlived lockguard: {:?}", processes_with(&marker));
    let _ = cli.wait(Duration::from_secs(2));
}

#[tokio::test]
async fn a_signal_while_waiting_leaves_the_queue_before_exit() {
    let name = unique("withdraw");
    let holder = Cli::lock(&[&name, "--ttl", "30"]);
    holder.held(Duration::from_secs(10));
    let mut waiter = Cli::lock(&[&name, "--ttl", "30", "--timeout", "60"]);
    let lock = etcd_lock().await;
    let queued = eventually(Duration::from_secs(10), || async {
        (lock.queue(&name).await.ok()?.len() == 2).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the waiter queued");
    waiter.signal(libc::SIGINT);
    assert_eq!(waiter.wait(Duration::from_secs(5)).and_then(|s| s.code()), Some(130));
    let queue = lock.queue(&name).await.expect("queue");
    assert_eq!(queue.len(), 1, "the waiter's key must be gone when it exits, not a TTL later: {queue:?}");
    holder.signal(libc::SIGTERM);
}

#[tokio::test]
async fn a_lease_deleted_while_held_is_not_taken_before_the_holders_duration() {
    let ns = namespace("lease-deleted").await;
    let holder = LeaseLock::new(kube_client().await, &ns, unique_identity("holder"));
    let waiter = LeaseLock::new(kube_client().await, &ns, unique_identity("waiter"));
    let guard = holder.acquire("shared", options(4, 5)).await.expect("acquire");
    let waiting =
        tokio::spawn(
            async move { waiter.acquire("shared", options(4, 30)).await.map(|g| (Instant::now(), g)) },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deleted = Instant::now();
    Api::<Lease>::namespaced(kube_client().await, &ns)
        .delete("shared", &DeleteParams::default())
        .await
        .expect("delete");
    let (taken, second) = waiting.await.expect("task").expect("the waiter gets it in the end");
    let after = taken - deleted;
    assert!(
        after >= Duration::from_millis(3500),
        "taken {after:?} after the delete; the holder may still act for 4 s"
    );
    assert!(guard.is_lost(), "the holder learnt of the delete at its renewal");
    second.release().await.expect("release");
}

#[tokio::test]
async fn an_old_guard_never_adopts_a_recreated_lease_of_the_same_identity() {
    let ns = namespace("lease-adopt").await;
    let lock = LeaseLock::new(kube_client().await, &ns, unique_identity("same"));
    let first = lock.acquire("adopted", options(3, 5)).await.expect("acquire");
    Api::<Lease>::namespaced(kube_client().await, &ns)
        .delete("adopted", &DeleteParams::default())
        .await
        .expect("delete");
    let second = lock.acquire("adopted", options(3, 10)).await.expect("acquire the re-created Lease");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        first.is_lost(),
        "the old guard must not take the new Lease (token {}) for its own",
        second.fencing_token()
    );
    assert!(!second.is_lost());
    second.release().await.expect("release");
}
