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
