//! A pool's Lease deleted while claims bind (its own test binary: the frozen replica must
//! stop at a write of this test's pool, not another test's).

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use support::epochs::{epoch_after, frozen_writer, pool_status, pool_yaml, refused_then_all_bound};
use support::{Operator, apply, kube_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_opens_a_new_epoch_by_itself() {
    let mut op = Operator::start(0, "lease-gone").await;
    apply(&pool_yaml(&op.pool, "Lease"));
    let frozen = frozen_writer(&mut op).await;
    op.replicas.add();
    let before = pool_status(&op.pool).await.lock_epoch.unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(kube_client().await, support::OPERATOR_NAMESPACE);
    leases
        .delete(&format!("lockguard-pool-{}", op.pool), &DeleteParams::default())
        .await
        .expect("delete the pool's Lease");
    for i in 0..20 {
        op.claim(&format!("c{i}"), 2).await;
    }
    let took = epoch_after(&op, before, Duration::from_secs(30), "a new epoch under the new Lease").await;
    refused_then_all_bound(&op, frozen, 21).await;
    eprintln!("a deleted Lease: new epoch after {took:?}");
}
