//! `--leader-elect`: only the leader reconciles; a killed leader is replaced within the
//! lease duration. Both lock backends elect.

mod support;

use std::time::{Duration, Instant};

use support::{Operator, Replicas, audit, lock_etcd};

fn leaders(replicas: &Replicas, alive: &[usize]) -> Vec<usize> {
    alive.iter().copied().filter(|&i| replicas.log(i).contains("elected leader")).collect()
}

async fn only_the_leader_reconciles(backend: &str) {
    let args = ["--leader-elect", "--leader-elect-backend", backend, "--leader-elect-ttl", "4"];
    let mut op = Operator::start_with(3, "leader", &lock_etcd(), &args).await;
    op.apply_pool("{range: {start: 1, end: 100}}", "Etcd");
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    for name in &first {
        op.claim(name, 1).await;
    }
    op.all_bound(&first, Duration::from_secs(60), "the first claims bind").await;
    let leader = leaders(&op.replicas, &[0, 1, 2]);
    assert_eq!(leader.len(), 1, "exactly one leader\n{}", op.replicas.tails());
    let leader = leader[0];
    for i in (0..3).filter(|&i| i != leader) {
        assert!(
            !op.replicas.log(i).contains("allocated"),
            "replica {i} is not the leader but reconciled\n{}",
            op.replicas.tails()
        );
    }

    op.replicas.kill(leader);
    let killed = Instant::now();
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let next = op
        .replicas
        .eventually(Duration::from_secs(15), "no new leader", || async {
            leaders(&op.replicas, &rest).first().copied()
        })
        .await;
    assert!(
        killed.elapsed() < Duration::from_secs(4 + 2),
        "took over within the lease duration: {:?}",
        killed.elapsed()
    );
    let second: Vec<String> = (0..5).map(|i| format!("b{i}")).collect();
    for name in &second {
        op.claim(name, 1).await;
    }
    op.all_bound(&second, Duration::from_secs(60), "the next claims bind").await;
    assert!(op.replicas.log(next).contains("allocated claim="), "the new leader reconciles");
    assert_eq!(audit(&[&op.pool]).await, Ok(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_on_either_backend() {
    only_the_leader_reconciles("lease").await;
    only_the_leader_reconciles("etcd").await;
}
