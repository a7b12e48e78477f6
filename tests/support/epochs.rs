//! Helpers of the lock-epoch tests.

use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use lockguard::api::Pool;
use serde_json::json;

use super::{Replicas, all_bound, audit, create_claim, eventually, kube_client};

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
pub async fn epoch_after(pool: &str, epoch: i64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    eventually(limit, || async { (pool_status(pool).await.lock_epoch? > epoch).then_some(()) }).await?;
    Some(started.elapsed())
}

/// Starts a replica that stops itself (SIGSTOP) at its first ledger write, holding the pool's
/// lock under the current lock service, and waits until it did.
pub async fn frozen_writer(replicas: &mut Replicas, ns: &str, pool: &str) -> usize {
    let i = replicas.add_with(&[("LOCKGUARD_FAILPOINT", "stop-before-ledger-write")]);
    create_claim(ns, "first", pool, 1).await;
    let stopped =
        eventually(Duration::from_secs(30), || async { replicas.is_stopped(i).then_some(()) }).await;
    assert!(stopped.is_some(), "the failpoint stopped the replica\n{}", replicas.tails());
    i
}

/// Thaws the frozen replica and checks the API server refused its write.
pub async fn refused_when_thawed(replicas: &Replicas, i: usize) {
    replicas.signal(i, libc::SIGCONT);
    let refused = eventually(Duration::from_secs(15), || async {
        replicas.log(i).contains("fenced ledger write rejected").then_some(())
    })
    .await;
    assert!(refused.is_some(), "the old service's write must be refused\n{}", replicas.tails());
}

/// The end of each epoch test: the frozen writer is refused when thawed, the `n` claims of
/// `ns` all bind and the pool audits clean.
pub async fn refused_then_all_bound(replicas: &Replicas, frozen: usize, ns: &str, n: usize, pool: &str) {
    refused_when_thawed(replicas, frozen).await;
    assert!(
        all_bound(&[ns.to_string()], n, Duration::from_secs(60)).await,
        "every claim bound\n{}",
        replicas.tails()
    );
    assert!(audit(&[pool]).await.is_ok(), "{:?}", audit(&[pool]).await);
}
