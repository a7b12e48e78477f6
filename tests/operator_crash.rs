//! Replicas are SIGKILLed mid-run, while allocating and while freeing: the others finish
//! the work and no item leaks or is held twice.

mod support;

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams};
use lockguard::api::{Claim, Pool};
use support::{
    Replicas, audit, bound_reason, claims_in, create_claim, eventually, install, kube_client, kubectl_ok,
    lock_etcd, namespace, pool_yaml, unique,
};

/// Waits until replica `i` has logged `needle` at least `times` times.
async fn logged(replicas: &Replicas, i: usize, needle: &str, times: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if replicas.log(i).matches(needle).count() >= times {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicas_leave_no_leaked_or_duplicated_item() {
    let kubeconfig = install().await;
    let mut replicas = Replicas::start(3, &kubeconfig, &lock_etcd());
    let (ports, seats) = (unique("ports"), unique("seats"));
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&ports, "{range: {start: 1, end: 1000}}", "Etcd")));
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&seats, "{range: {start: 1, end: 1000}}", "Lease")));
    let namespaces = vec![namespace("crash").await, namespace("crash").await];
    for i in 0..160 {
        let pool = if i % 2 == 0 { &ports } else { &seats };
        create_claim(&namespaces[i % 2], &format!("c{i}"), pool, 3).await;
    }
    // Kill replica 0 as soon as it is in the middle of allocating.
    assert!(
        logged(&replicas, 0, "allocated claim=", 3).await,
        "replica 0 never allocated\n{}",
        replicas.tails()
    );
    replicas.kill(0);
    let bound = eventually(Duration::from_secs(120), || async {
        let claims = claims_in(&namespaces).await;
        claims.iter().all(|c| bound_reason(c).is_some_and(|(s, _)| s == "True")).then_some(())
    })
    .await;
    assert!(bound.is_some(), "the surviving replicas bind everything\n{}", replicas.tails());
    assert_eq!(audit(&[&ports, &seats]).await, Ok(160 * 3));

    // Now kill another one while claims are being deleted; a fresh replica joins.
    for i in 0..80 {
        let api: Api<Claim> = Api::namespaced(kube_client().await, &namespaces[i % 2]);
        api.delete(&format!("c{i}"), &DeleteParams::default()).await.expect("delete");
    }
    assert!(logged(&replicas, 1, "freed", 2).await, "replica 1 never freed\n{}", replicas.tails());
    replicas.kill(1);
    replicas.add();
    let freed = eventually(Duration::from_secs(120), || async {
        let remaining = claims_in(&namespaces).await.len();
        let pools: Api<Pool> = Api::all(kube_client().await);
        let allocated =
            pools.get(&ports).await.ok()?.status?.allocated + pools.get(&seats).await.ok()?.status?.allocated;
        (remaining == 80 && allocated == 80 * 3).then_some(())
    })
    .await;
    assert!(freed.is_some(), "every deleted claim's items are back\n{}", replicas.tails());
    assert_eq!(audit(&[&ports, &seats]).await, Ok(80 * 3));
    assert!(replicas.all_alive(), "{}", replicas.tails());
}
