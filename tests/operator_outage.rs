//! The lock etcd goes away under three replicas and comes back.

mod support;

use std::time::Duration;

use support::{
    Replicas, audit, create_claim, eventually, install, kubectl_ok, namespace, pool_yaml, reasons, unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_wait_with_lock_unavailable_while_etcd_is_down_and_bind_after() {
    let kubeconfig = install().await;
    let dir = devenv::run_dir("outage").expect("dir");
    let mut etcd = devenv::etcd::start_single(&dir, "lock-etcd").expect("lock etcd");
    let mut replicas = Replicas::start(3, &kubeconfig, &etcd.endpoint());
    let (on_etcd, on_lease) = (unique("on-etcd"), unique("on-lease"));
    let short = |y: String| y.replace("acquireTimeoutSeconds: 20", "acquireTimeoutSeconds: 2");
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&short(pool_yaml(&on_etcd, "{range: {start: 1, end: 100}}", "Etcd"))),
    );
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&short(pool_yaml(&on_lease, "{range: {start: 1, end: 100}}", "Lease"))),
    );
    let ns = namespace("outage").await;
    create_claim(&ns, "before", &on_etcd, 1).await;
    let before = eventually(Duration::from_secs(30), || async {
        reasons(&ns, &["before".into()]).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await;
    assert!(before.is_some(), "bound while etcd is up\n{}", replicas.tails());

    etcd.stop();
    let etcd_claims: Vec<String> = (0..5).map(|i| format!("etcd-{i}")).collect();
    let lease_claims: Vec<String> = (0..5).map(|i| format!("lease-{i}")).collect();
    for name in &etcd_claims {
        create_claim(&ns, name, &on_etcd, 2).await;
    }
    for name in &lease_claims {
        create_claim(&ns, name, &on_lease, 2).await;
    }
    let unavailable = eventually(Duration::from_secs(30), || async {
        reasons(&ns, &etcd_claims)
            .await
            .iter()
            .all(|(s, r)| s == "False" && r == "LockUnavailable")
            .then_some(())
    })
    .await;
    assert!(
        unavailable.is_some(),
        "claims of the Etcd pool report LockUnavailable: {:?}\n{}",
        reasons(&ns, &etcd_claims).await,
        replicas.tails()
    );
    let lease_ok = eventually(Duration::from_secs(30), || async {
        reasons(&ns, &lease_claims).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await;
    assert!(lease_ok.is_some(), "the Lease backend does not depend on the lock etcd\n{}", replicas.tails());
    let events = kubectl_ok(&["get", "events", "-n", &ns, "-o", "jsonpath={.items[*].reason}"], None);
    assert!(events.contains("LockUnavailable"), "an Event says why: {events}");

    etcd.start().expect("restart the lock etcd");
    let after = eventually(Duration::from_secs(60), || async {
        reasons(&ns, &etcd_claims).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await;
    assert!(
        after.is_some(),
        "bound once etcd is back: {:?}\n{}",
        reasons(&ns, &etcd_claims).await,
        replicas.tails()
    );
    assert!(replicas.all_alive(), "no replica died during the outage\n{}", replicas.tails());
    assert_eq!(audit(&[&on_etcd, &on_lease]).await, Ok(1 + 10 + 10));
    drop(replicas);
    drop(etcd);
    let _ = std::fs::remove_dir_all(dir);
}
