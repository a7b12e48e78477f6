//! Fencing across lock-service changes: a backend switch (a re-created Lease:
//! epochs_lease_deleted.rs; a replaced lock etcd: epochs_etcd_replaced.rs) opens a new lock epoch by themselves, claims keep binding, the audit stays
//! clean, and a replica frozen before its write under the old service is refused by the API
//! server when it is thawed.

mod support;

use std::time::Duration;

use support::epochs::{
    TTL, epoch_after, frozen_writer, pool_status, pool_yaml, refused_when_thawed, set_backend,
};
use support::{
    Replicas, all_bound, audit, create_claim, event_reasons, install, kubectl_ok, namespace, unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_backend_back_and_forth_while_claims_bind_opens_new_epochs() {
    let kubeconfig = install().await;
    let mut replicas = Replicas::none(&kubeconfig, &support::lock_etcd(), &[]);
    let pool = unique("switch");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "Etcd")));
    let ns = namespace("switch").await;
    let frozen = frozen_writer(&mut replicas, &ns, &pool).await;
    replicas.add();
    replicas.add();
    // The first epoch, under etcd, is written once the frozen replica's lease has expired.
    assert!(
        epoch_after(&pool, 0, Duration::from_secs(30)).await.is_some(),
        "a first epoch\n{}",
        replicas.tails()
    );
    for i in 0..100 {
        create_claim(&ns, &format!("c{i}"), &pool, 1 + (i % 3)).await;
        let switch_to = match i {
            30 => "Lease",
            60 => "Etcd",
            _ => continue,
        };
        let epoch = pool_status(&pool).await.lock_epoch.unwrap_or_default();
        set_backend(&pool, switch_to).await;
        let took = epoch_after(&pool, epoch, Duration::from_secs(30)).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(TTL + 3)),
            "switch to {switch_to} took {took:?}\n{}",
            replicas.tails()
        );
        eprintln!("switch to {switch_to}: new epoch after {took:?}");
        if i == 30 {
            refused_when_thawed(&replicas, frozen).await;
        }
    }
    let namespaces = [ns.clone()];
    assert!(
        all_bound(&namespaces, 101, Duration::from_secs(90)).await,
        "every claim bound\n{}",
        replicas.tails()
    );
    assert!(audit(&[&pool]).await.is_ok(), "{:?}", audit(&[&pool]).await);
    let status = pool_status(&pool).await;
    assert!(status.lock_service.as_deref().is_some_and(|s| s.starts_with("etcd:")), "{status:?}");
    assert!(status.lock_epoch >= Some(3), "two switches, two new epochs: {status:?}");
    let events = event_reasons(&pool);
    assert!(events.contains("LockEpochAdvanced"), "{events}");
}
