//! A pool's Lease deleted while claims bind (its own test binary: the frozen replica must
//! stop at a write of this test's pool, not another test's).

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams};
use support::epochs::{epoch_after, frozen_writer, pool_status, pool_yaml, refused_then_all_bound};
use support::{Replicas, create_claim, install, kube_client, kubectl_ok, namespace, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_lease_opens_a_new_epoch_by_itself() {
    let kubeconfig = install().await;
    let mut replicas = Replicas::none(&kubeconfig, &support::lock_etcd(), &[]);
    let pool = unique("lease-gone");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "Lease")));
    let ns = namespace("lease-gone").await;
    let frozen = frozen_writer(&mut replicas, &ns, &pool).await;
    replicas.add();
    let before = pool_status(&pool).await.lock_epoch.unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(kube_client().await, support::OPERATOR_NAMESPACE);
    leases
        .delete(&format!("lockguard-pool-{pool}"), &DeleteParams::default())
        .await
        .expect("delete the pool's Lease");
    for i in 0..20 {
        create_claim(&ns, &format!("c{i}"), &pool, 2).await;
    }
    let took = epoch_after(&pool, before, Duration::from_secs(30)).await;
    assert!(took.is_some(), "a new epoch under the new Lease\n{}", replicas.tails());
    refused_then_all_bound(&replicas, frozen, &ns, 21, &pool).await;
    eprintln!("a deleted Lease: new epoch after {took:?}");
}
