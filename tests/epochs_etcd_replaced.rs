//! A lock etcd replaced by a fresh cluster (its own test binary: its replicas use their own
//! lock etcd, and replicas of other tests in the same binary would reconcile its pool through
//! another one).

mod support;

use std::time::Duration;

use support::epochs::{epoch_after, frozen_writer, pool_status, pool_yaml, refused_then_all_bound};
use support::{Operator, apply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_etcd_replaced_by_a_fresh_cluster_opens_a_new_epoch_by_itself() {
    let dir = devenv::run_dir("fresh-etcd").expect("run dir");
    let mut etcd = devenv::etcd::start_single(&dir, "replaced").expect("etcd");
    let mut op = Operator::start_with(0, "fresh", &etcd.endpoint(), &[]).await;
    apply(&pool_yaml(&op.pool, "Etcd"));
    let frozen = frozen_writer(&mut op).await;
    op.replicas.add();
    for i in 0..10 {
        op.claim(&format!("c{i}"), 1).await;
    }
    op.bound_exactly(11, Duration::from_secs(60), "bound before").await;
    let before = pool_status(&op.pool).await;
    // Disaster recovery without a snapshot: same address, new cluster, revisions from 1.
    etcd.replace_with_fresh_cluster().expect("fresh etcd");
    for i in 10..20 {
        op.claim(&format!("c{i}"), 1).await;
    }
    let epoch = before.lock_epoch.unwrap_or_default();
    let took = epoch_after(&op, epoch, Duration::from_secs(60), "a new epoch under the fresh cluster").await;
    let after = pool_status(&op.pool).await;
    assert_ne!(after.lock_service, before.lock_service);
    // (Its tokens restarted from the fresh cluster's revisions; by now they may have passed the
    // old ones again, so only the epoch and the service are compared.)
    assert!(after.lock_epoch > before.lock_epoch, "{after:?} vs {before:?}");
    refused_then_all_bound(&op, frozen, 21).await;
    eprintln!("a replaced lock etcd: new epoch after {took:?}");
}
