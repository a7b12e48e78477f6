//! Replicas are SIGKILLed mid-run, while allocating and while freeing: the others finish
//! the work and no item leaks or is held twice.

mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams};
use lockguard::api::{Claim, Pool};
use support::{
    Operator, Replicas, apply, audit, bound_reason, claims_in, create_claim, kube_client, namespace, poll,
    pool_yaml, unique,
};

/// Waits until replica `i` has logged `needle` at least `times` times, looking every 20 ms to
/// catch it in the middle of that work; fails with `what` and the logs after 60 s.
async fn logged(replicas: &Replicas, i: usize, needle: &str, times: usize, what: &str) {
    let seen = poll(Duration::from_millis(20), Duration::from_secs(60), || async {
        (replicas.log(i).matches(needle).count() >= times).then_some(())
    })
    .await;
    if seen.is_none() {
        replicas.fail(what);
    }
}

/// The replica among `live` that serves `pool` (pools are divided between the replicas).
fn serving(replicas: &Replicas, live: &[usize], pool: &str) -> usize {
    let members: Vec<String> = live.iter().map(|&i| replicas.identity(i).to_string()).collect();
    let owner = lockguard::controller::pool_owner(pool, &members).expect("an owner");
    live[members.iter().position(|m| m == owner).expect("a member")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replicas_leave_no_leaked_or_duplicated_item() {
    let mut op = Operator::start(3, "crash").await;
    let (ports, seats) = (&op.pool, unique("seats"));
    op.apply_pool("{range: {start: 1, end: 1000}}", "Etcd");
    apply(&pool_yaml(&seats, "{range: {start: 1, end: 1000}}", "Lease"));
    let namespaces = vec![op.ns.clone(), namespace("crash").await];
    for i in 0..160 {
        let pool = if i % 2 == 0 { ports } else { &seats };
        create_claim(&namespaces[i % 2], &format!("c{i}"), pool, 3).await;
    }
    // Kill the replica that serves the first pool as soon as it is in the middle of allocating.
    let first = serving(&op.replicas, &[0, 1, 2], ports);
    logged(&op.replicas, first, "allocated claim=", 3, "the serving replica never allocated").await;
    op.replicas.kill(first);
    op.replicas
        .eventually(Duration::from_secs(120), "the surviving replicas bind everything", || async {
            let claims = claims_in(&namespaces).await;
            claims.iter().all(|c| bound_reason(c).is_some_and(|(s, _)| s == "True")).then_some(())
        })
        .await;
    assert_eq!(audit(&[ports, &seats]).await, Ok(160 * 3));

    // Now kill another one while claims are being deleted; a fresh replica joins.
    for i in 0..80 {
        let api: Api<Claim> = Api::namespaced(kube_client().await, &namespaces[i % 2]);
        api.delete(&format!("c{i}"), &DeleteParams::default()).await.expect("delete");
    }
    let survivors: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let second = serving(&op.replicas, &survivors, &seats);
    logged(&op.replicas, second, "freed", 2, "the serving replica never freed").await;
    op.replicas.kill(second);
    op.replicas.add();
    op.replicas
        .eventually(Duration::from_secs(120), "every deleted claim's items are back", || async {
            let remaining = claims_in(&namespaces).await.len();
            let pools: Api<Pool> = Api::all(kube_client().await);
            let allocated = pools.get(ports).await.ok()?.status?.allocated
                + pools.get(&seats).await.ok()?.status?.allocated;
            (remaining == 80 && allocated == 80 * 3).then_some(())
        })
        .await;
    assert_eq!(audit(&[ports, &seats]).await, Ok(80 * 3));
    assert!(op.replicas.all_alive(), "a replica died\n{}", op.replicas.tails());
}
