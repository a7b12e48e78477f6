//! Fencing across lock-service changes: a backend switch, a re-created Lease and a replaced
//! lock etcd each open a new lock epoch by themselves, claims keep binding, the audit stays
//! clean, and a replica frozen before its write under the old service is refused by the API
//! server when it is thawed.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use lockguard::api::Pool;
use serde_json::json;
use support::{
    Replicas, audit, bound_reason, claims_in, create_claim, eventually, install, kube_client, kubectl_ok,
    namespace, unique,
};

const TTL: u64 = 3;

fn pool_yaml(name: &str, backend: &str) -> String {
    format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\n\
         spec: {{items: {{range: {{start: 1, end: 500}}}}, lock: {{backend: {backend}, ttlSeconds: {TTL}, acquireTimeoutSeconds: 20}}}}\n"
    )
}

async fn pool_status(name: &str) -> lockguard::api::PoolStatus {
    Api::<Pool>::all(kube_client().await).get(name).await.expect("pool").status.unwrap_or_default()
}

async fn set_backend(pool: &str, backend: &str) {
    let patch = json!({ "spec": { "lock": { "backend": backend } } });
    Api::<Pool>::all(kube_client().await)
        .patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("switch");
}

/// Waits until the pool's ledger was written in an epoch after `epoch`; returns how long.
async fn epoch_after(pool: &str, epoch: i64, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    eventually(limit, || async { (pool_status(pool).await.lock_epoch? > epoch).then_some(()) }).await?;
    Some(started.elapsed())
}

async fn all_bound(namespaces: &[String], n: usize, limit: Duration) -> bool {
    eventually(limit, || async {
        let claims = claims_in(namespaces).await;
        let bound = claims.iter().filter(|c| bound_reason(c).is_some_and(|(s, _)| s == "True")).count();
        (bound == n).then_some(())
    })
    .await
    .is_some()
}

/// Starts a replica that stops itself (SIGSTOP) at its first ledger write, holding the pool's
/// lock under the current lock service, and waits until it did.
async fn frozen_writer(replicas: &mut Replicas, ns: &str, pool: &str) -> usize {
    let i = replicas.add_with(&[("LOCKGUARD_FAILPOINT", "stop-before-ledger-write")]);
    create_claim(ns, "first", pool, 1).await;
    let stopped =
        eventually(Duration::from_secs(30), || async { replicas.is_stopped(i).then_some(()) }).await;
    assert!(stopped.is_some(), "the failpoint stopped the replica\n{}", replicas.tails());
    i
}

/// Thaws the frozen replica and checks the API server refused its write.
async fn refused_when_thawed(replicas: &Replicas, i: usize) {
    replicas.signal(i, libc::SIGCONT);
    let refused = eventually(Duration::from_secs(15), || async {
        replicas.log(i).contains("fenced ledger write rejected").then_some(())
    })
    .await;
    assert!(refused.is_some(), "the old service's write must be refused\n{}", replicas.tails());
}

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
        if i == 30 {
            let epoch = pool_status(&pool).await.lock_epoch.unwrap_or_default();
            set_backend(&pool, "Lease").await;
            let took = epoch_after(&pool, epoch, Duration::from_secs(30)).await;
            assert!(
                took.is_some_and(|t| t < Duration::from_secs(TTL + 3)),
                "Etcd → Lease took {took:?}\n{}",
                replicas.tails()
            );
            eprintln!("Etcd → Lease: new epoch after {took:?}");
            refused_when_thawed(&replicas, frozen).await;
        }
        if i == 60 {
            let epoch = pool_status(&pool).await.lock_epoch.unwrap_or_default();
            set_backend(&pool, "Etcd").await;
            let took = epoch_after(&pool, epoch, Duration::from_secs(30)).await;
            assert!(
                took.is_some_and(|t| t < Duration::from_secs(TTL + 3)),
                "Lease → Etcd took {took:?}\n{}",
                replicas.tails()
            );
            eprintln!("Lease → Etcd: new epoch after {took:?}");
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
    let events = kubectl_ok(
        &[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={pool}"),
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    );
    assert!(events.contains("LockEpochAdvanced"), "{events}");
}

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
    refused_when_thawed(&replicas, frozen).await;
    assert!(
        all_bound(std::slice::from_ref(&ns), 21, Duration::from_secs(60)).await,
        "every claim bound\n{}",
        replicas.tails()
    );
    assert!(audit(&[&pool]).await.is_ok(), "{:?}", audit(&[&pool]).await);
    eprintln!("a deleted Lease: new epoch after {took:?}");
}

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
    assert!(after.fencing_token < before.fencing_token, "tokens started over: {after:?} vs {before:?}");
    refused_when_thawed(&replicas, frozen).await;
    assert!(
        all_bound(std::slice::from_ref(&ns), 21, Duration::from_secs(60)).await,
        "every claim bound\n{}",
        replicas.tails()
    );
    assert!(audit(&[&pool]).await.is_ok(), "{:?}", audit(&[&pool]).await);
    eprintln!("a replaced lock etcd: new epoch after {took:?}");
}
