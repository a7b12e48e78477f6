//! Helpers of the lock-epoch tests.

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use lockguard::api::Pool;
use serde_json::json;

use super::{Operator, Replicas, audit, kube_client};

pub const TTL: u64 = 3;

pub fn pool_yaml(name: &str, backend: &str) -> String {
    format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\n\
         spec: {{items: {{range: {{start: 1, end: 500}}}}, lock: {{backend: {backend}, ttlSeconds: {TTL}, acquireTimeoutSeconds: 20}}}}\n"
    )
}

pub async fn pool_status(name: &str) -> lockguard::api::PoolStatus {
    Api::<Pool>::all(kube_client().await).get(name).await.expect("pool").status.unwrap_or_default()
}

pub async fn set_backend(pool: &str, backend: &str) {
    let patch = json!({ "spec": { "lock": { "backend": backend } } });
    Api::<Pool>::all(kube_client().await)
        .patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("switch");
}

/// Waits until the pool's ledger was written in an epoch after `epoch`; returns how long.
/// Fails with `what` and the logs if that takes longer than `limit`.
pub async fn epoch_after(op: &Operator, epoch: i64, limit: Duration, what: &str) -> Duration {
    let started = Instant::now();
    op.replicas
        .eventually(limit, what, || async { (pool_status(&op.pool).await.lock_epoch? > epoch).then_some(()) })
        .await;
    started.elapsed()
}

/// Starts a replica that stops itself (SIGSTOP) at its first ledger write, holding the pool's
/// lock under the current lock service, and waits until it did.
pub async fn frozen_writer(op: &mut Operator) -> usize {
    let i = op.replicas.add_with(&[("LOCKGUARD_FAILPOINT", "stop-before-ledger-write")]);
    op.claim("first", 1).await;
    op.replicas.until_stopped(i, Duration::from_secs(30)).await;
    i
}

/// Thaws the frozen replica and checks the API server refused its write.
pub async fn refused_when_thawed(replicas: &Replicas, i: usize) {
    replicas.signal(i, libc::SIGCONT);
    replicas
        .eventually(Duration::from_secs(15), "the old service's write must be refused", || async {
            replicas.log(i).contains("fenced ledger write rejected").then_some(())
        })
        .await;
}

/// The end of each epoch test: the frozen writer is refused when thawed, the `n` claims of
/// the namespace all bind and the pool audits clean.
pub async fn refused_then_all_bound(op: &Operator, frozen: usize, n: usize) {
    refused_when_thawed(&op.replicas, frozen).await;
    op.bound_exactly(n, Duration::from_secs(60), "every claim bound").await;
    assert!(audit(&[&op.pool]).await.is_ok(), "{:?}", audit(&[&op.pool]).await);
}

/// The story of a lock etcd restored from a backup: 3 claims bound, `backup` taken into a
/// path, 3,000 further revisions and 5 more claims, then `restore` from that path, and 5 new
/// claims that must bind within the TTL + 10 s, with no bound claim moved and nothing held
/// twice. Returns the pool's status before the restore and after.
pub async fn restored(
    label: &str,
    backup: impl FnOnce(&mut devenv::etcd::EtcdServer, &std::path::Path),
    restore: impl FnOnce(&mut devenv::etcd::EtcdServer, &std::path::Path),
) -> (lockguard::api::PoolStatus, lockguard::api::PoolStatus) {
    let dir = devenv::run_dir(label).expect("run dir");
    let mut etcd = devenv::etcd::start_single(&dir, label).expect("etcd");
    let op = Operator::start_with(2, label, &etcd.endpoint(), &[]).await;
    super::apply(&pool_yaml(&op.pool, "Etcd"));
    for i in 0..3 {
        op.claim(&format!("a{i}"), 1).await;
    }
    op.bound_exactly(3, Duration::from_secs(60), "bound before the backup").await;
    let saved = dir.join("backup");
    backup(&mut etcd, &saved);

    // Thousands of revisions later, more claims bind under much higher tokens.
    let mut client = super::etcd_client(&etcd.endpoint()).await;
    for i in 0..3_000 {
        client.put(format!("other/{}", i % 10), "x", None).await.expect("put");
    }
    for i in 0..5 {
        op.claim(&format!("b{i}"), 1).await;
    }
    op.bound_exactly(8, Duration::from_secs(60), "bound after the backup").await;
    let before = pool_status(&op.pool).await;
    let shown = || async {
        super::claims_in(std::slice::from_ref(&op.ns))
            .await
            .into_iter()
            .map(|c| (c.metadata.name.clone().unwrap_or_default(), c.shown_items().to_vec()))
            .collect::<Vec<_>>()
    };
    let held = shown().await;

    restore(&mut etcd, &saved);
    let restored = Instant::now();
    for i in 0..5 {
        op.claim(&format!("c{i}"), 1).await;
    }
    op.bound_exactly(13, Duration::from_secs(TTL + 10), "bound within TTL + 10 s of the restore").await;
    println!("{label}: bound again {:?} after the restore", restored.elapsed());
    let now = shown().await;
    for (name, items) in &held {
        assert!(now.contains(&(name.clone(), items.clone())), "{name} moved from {items:?}: {now:?}");
    }
    assert_eq!(audit(&[&op.pool]).await, Ok(13));
    (before, pool_status(&op.pool).await)
}
