//! A shrink, and a claim status write thawed after others moved on, never show items the
//! ledger does not give. Its own test binary: the failpoint must stop the replica at *this*
//! claim's allocation, and replicas of other tests would take that allocation first.

mod support;

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use lockguard::api::Claim;
use lockguard::audit::history::Recorder;
use serde_json::json;
use support::{
    Replicas, audit, create_claim, eventually, history_violations, install, kube_client, kubectl_ok,
    lock_etcd, namespace, pool_yaml, reason_of, unique,
};

async fn bound(ns: &str, name: &str, timeout: Duration) -> bool {
    eventually(timeout, || async { reason_of(ns, name).await.filter(|(s, _)| s == "True") }).await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrink_and_a_late_status_write_never_show_items_the_ledger_does_not_give() {
    let kubeconfig = install().await;
    let recorder = Recorder::start(kube_client().await);
    let mut replicas = Replicas::none(&kubeconfig, &lock_etcd(), &[]);
    replicas.add_with(&[("LOCKGUARD_FAILPOINT", "stop-before-status-write")]);
    let pool = unique("shrink");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "{range: {start: 1, end: 6}}", "Etcd")));
    let ns = namespace("shrink").await;
    create_claim(&ns, "c", &pool, 4).await;
    // Replica 0 allocated c and stopped before writing c's status.
    let stopped =
        eventually(Duration::from_secs(30), || async { replicas.is_stopped(0).then_some(()) }).await;
    assert!(stopped.is_some(), "the failpoint stopped replica 0\n{}", replicas.tails());
    replicas.add();
    assert!(
        bound(&ns, "c", Duration::from_secs(30)).await,
        "replica 1 writes c's status\n{}",
        replicas.tails()
    );

    let claims: Api<Claim> = Api::namespaced(kube_client().await, &ns);
    claims
        .patch("c", &PatchParams::default(), &Patch::Merge(&json!({ "spec": { "count": 2 } })))
        .await
        .expect("shrink");
    let shrunk = eventually(Duration::from_secs(30), || async {
        let c = claims.get("c").await.ok()?;
        (c.status?.items.len() == 2).then_some(())
    })
    .await;
    assert!(shrunk.is_some(), "c shrinks to 2\n{}", replicas.tails());
    create_claim(&ns, "d", &pool, 2).await;
    assert!(bound(&ns, "d", Duration::from_secs(30)).await, "d binds the freed items\n{}", replicas.tails());

    // Thawed, replica 0 goes on with the status write it had prepared for 4 items.
    replicas.signal(0, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(bound(&ns, "c", Duration::from_secs(30)).await);
    assert_eq!(audit(&[&pool]).await, Ok(4));
    let seen = history_violations(&recorder.finish(), &[&pool]);
    assert!(seen.is_empty(), "safety violations:\n{}\n{}", seen.join("\n"), replicas.tails());
}
