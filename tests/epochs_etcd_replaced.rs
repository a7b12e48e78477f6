//! A lock etcd replaced by a fresh cluster (its own test binary: its replicas use their own
//! lock etcd, and replicas of other tests in the same binary would reconcile its pool through
//! another one).

mod support;

use std::time::Duration;

use support::epochs::{epoch_after, frozen_writer, pool_status, pool_yaml, refused_then_all_bound};
use support::{Replicas, all_bound, create_claim, install, kubectl_ok, namespace, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_etcd_replaced_by_a_fresh_cluster_opens_a_new_epoch_by_itself() {
    let kubeconfig = install().await;
    let dir = devenv::run_dir("fresh-etcd").expect("run dir");
    let mut etcd = devenv::etcd::start_single(&dir, "replaced").expect("etcd");
    let mut replicas = Replicas::none(&kubeconfig, &etcd.endpoint(), &[]);
    let pool = unique("fresh");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "Etcd")));
    let ns = namespace("fresh").await;
    let frozen = frozen_writer(&mut replicas, &ns, &pool).await;
    replicas.add();
    for i in 0..10 {
        create_claim(&ns, &format!("c{i}"), &pool, 1).await;
    }
    assert!(
        all_bound(std::slice::from_ref(&ns), 11, Duration::from_secs(60)).await,
        "bound before\n{}",
        replicas.tails()
    );
    let before = pool_status(&pool).await;
    // Disaster recovery without a snapshot: same address, new cluster, revisions from 1.
    etcd.replace_with_fresh_cluster().expect("fresh etcd");
    for i in 10..20 {
        create_claim(&ns, &format!("c{i}"), &pool, 1).await;
    }
    let took = epoch_after(&pool, before.lock_epoch.unwrap_or_default(), Duration::from_secs(60)).await;
    assert!(took.is_some(), "a new epoch under the fresh cluster\n{}", replicas.tails());
    let after = pool_status(&pool).await;
    assert_ne!(after.lock_service, before.lock_service);
    // (Its tokens restarted from the fresh cluster's revisions; by now they may have passed the
    // old ones again, so only the epoch and the service are compared.)
    assert!(after.lock_epoch > before.lock_epoch, "{after:?} vs {before:?}");
    refused_then_all_bound(&replicas, frozen, &ns, 21, &pool).await;
    eprintln!("a replaced lock etcd: new epoch after {took:?}");
}
