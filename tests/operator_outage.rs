//! The lock etcd goes away under three replicas and comes back.

mod support;

use std::time::Duration;

use support::{Operator, apply, audit, create_claim, kubectl_ok, pool_yaml, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_wait_with_lock_unavailable_while_etcd_is_down_and_bind_after() {
    let dir = devenv::run_dir("outage").expect("dir");
    let mut etcd = devenv::etcd::start_single(&dir, "lock-etcd").expect("lock etcd");
    let mut op = Operator::start_with(3, "on-etcd", &etcd.endpoint(), &[]).await;
    let (on_etcd, on_lease) = (&op.pool, unique("on-lease"));
    let short = |y: String| y.replace("acquireTimeoutSeconds: 20", "acquireTimeoutSeconds: 2");
    apply(&short(op.pool_yaml("{range: {start: 1, end: 100}}", "Etcd")));
    apply(&short(pool_yaml(&on_lease, "{range: {start: 1, end: 100}}", "Lease")));
    op.claim("before", 1).await;
    op.bound("before", Duration::from_secs(30), "bound while etcd is up").await;

    etcd.stop();
    let etcd_claims: Vec<String> = (0..5).map(|i| format!("etcd-{i}")).collect();
    let lease_claims: Vec<String> = (0..5).map(|i| format!("lease-{i}")).collect();
    for name in &etcd_claims {
        op.claim(name, 2).await;
    }
    for name in &lease_claims {
        create_claim(&op.ns, name, &on_lease, 2).await;
    }
    op.until_claims(
        &etcd_claims,
        |status, reason| status == "False" && reason == "LockUnavailable",
        Duration::from_secs(30),
        "claims of the Etcd pool report LockUnavailable",
    )
    .await;
    op.all_bound(
        &lease_claims,
        Duration::from_secs(30),
        "the Lease backend does not depend on the lock etcd",
    )
    .await;
    let events = kubectl_ok(&["get", "events", "-n", &op.ns, "-o", "jsonpath={.items[*].reason}"], None);
    assert!(events.contains("LockUnavailable"), "an Event says why: {events}");

    etcd.start().expect("restart the lock etcd");
    op.all_bound(&etcd_claims, Duration::from_secs(60), "bound once etcd is back").await;
    assert!(op.replicas.all_alive(), "no replica died during the outage\n{}", op.replicas.tails());
    assert_eq!(audit(&[on_etcd, &on_lease]).await, Ok(1 + 10 + 10));
    drop(op);
    drop(etcd);
    let _ = std::fs::remove_dir_all(dir);
}
