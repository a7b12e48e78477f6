//! A shrink, and a claim status write thawed after others moved on, never show items the
//! ledger does not give. Its own test binary: the failpoint must stop the replica at *this*
//! claim's allocation, and replicas of other tests would take that allocation first.

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use lockguard::api::Claim;
use serde_json::json;
use support::{Operator, audit, history_violations, kube_client, record_history};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_and_a_late_status_write_never_show_items_the_ledger_does_not_give() {
    let recorder = record_history().await;
    let mut op = Operator::start(0, "shrink").await;
    op.replicas.add_with(&[("LOCKGUARD_FAILPOINT", "stop-before-status-write")]);
    op.apply_pool("{range: {start: 1, end: 6}}", "Etcd");
    op.claim("c", 4).await;
    // Replica 0 allocated c and stopped before writing c's status.
    op.replicas.until_stopped(0, Duration::from_secs(30)).await;
    op.replicas.add();
    op.bound("c", Duration::from_secs(30), "replica 1 writes c's status").await;

    let claims: Api<Claim> = Api::namespaced(kube_client().await, &op.ns);
    claims
        .patch("c", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "count": 2 } })))
        .await
        .expect("shrink");
    op.replicas
        .eventually(Duration::from_secs(30), "c shrinks to 2", || async {
            let c = claims.get("c").await.ok()?;
            (c.status?.items.len() == 2).then_some(())
        })
        .await;
    op.claim("d", 2).await;
    op.bound("d", Duration::from_secs(30), "d binds the freed items").await;

    // Thawed, replica 0 goes on with the status write it had prepared for 4 items.
    op.replicas.signal(0, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    op.bound("c", Duration::from_secs(30), "c stays bound after the thawed write").await;
    assert_eq!(audit(&[&op.pool]).await, Ok(4));
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "safety violations:\n{}\n{}", seen.join("\n"), op.replicas.tails());
}
