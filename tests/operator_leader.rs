//! `--leader-elect`: only the leader reconciles; a killed leader is replaced within the
//! lease duration. Both lock backends elect.

mod support;

use std::time::{Duration, Instant};

use support::{
    Replicas, audit, create_claim, eventually, install, kubectl_ok, lock_etcd, namespace, pool_yaml, reasons,
    unique,
};

async fn all_bound(ns: &str, names: &[String]) -> bool {
    reasons(ns, names).await.iter().all(|(status, _)| status == "True")
}

fn leaders(replicas: &Replicas, alive: &[usize]) -> Vec<usize> {
    alive.iter().copied().filter(|&i| replicas.log(i).contains("elected leader")).collect()
}

async fn only_the_leader_reconciles(backend: &str) {
    let kubeconfig = install().await;
    let args = ["--leader-elect", "--leader-elect-backend", backend, "--leader-elect-ttl", "4"];
    let mut replicas = Replicas::start_with(3, &kubeconfig, &lock_etcd(), &args);
    let pool = unique("led");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "{range: {start: 1, end: 100}}", "Etcd")));
    let ns = namespace("leader").await;
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    for name in &first {
        create_claim(&ns, name, &pool, 1).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || async { all_bound(&ns, &first).await.then_some(()) })
            .await
            .is_some(),
        "{}",
        replicas.tails()
    );
    let leader = leaders(&replicas, &[0, 1, 2]);
    assert_eq!(leader.len(), 1, "exactly one leader\n{}", replicas.tails());
    let leader = leader[0];
    for i in (0..3).filter(|&i| i != leader) {
        assert!(
            !replicas.log(i).contains("allocated"),
            "replica {i} is not the leader but reconciled\n{}",
            replicas.tails()
        );
    }

    replicas.kill(leader);
    let killed = Instant::now();
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let next =
        eventually(Duration::from_secs(15), || async { leaders(&replicas, &rest).first().copied() }).await;
    let next = next.unwrap_or_else(|| panic!("no new leader\n{}", replicas.tails()));
    assert!(
        killed.elapsed() < Duration::from_secs(4 + 2),
        "took over within the lease duration: {:?}",
        killed.elapsed()
    );
    let second: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    for name in &second {
        create_claim(&ns, name, &pool, 1).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || async { all_bound(&ns, &second).await.then_some(()) })
            .await
            .is_some(),
        "{}",
        replicas.tails()
    );
    assert!(replicas.log(next).contains("allocated claim="), "the new leader reconciles");
    assert_eq!(audit(&[&pool]).await, Ok(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_on_either_backend() {
    only_the_leader_reconciles("lease").await;
    only_the_leader_reconciles("etcd").await;
}
