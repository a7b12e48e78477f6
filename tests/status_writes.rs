//! Each claim's status is written once: a replica does not write a claim again from a cached
//! copy older than its own last write of it. In a binary of its own: the replicas of another
//! test (another shard group) on the same control plane would serve its pools too, and their
//! writes would race this one's.

mod support;

use std::time::Duration;

use support::{Operator, apply, create_claim, pool_yaml};

/// A burst over a few pools: each claim's status is written once. A claim woken by another
/// hold's ledger write while the cache had not yet shown its own status write was written
/// again from the stale copy: refused (409), logged as a failed reconcile, retried 200 ms later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_a_few_pools_writes_each_status_once() {
    use futures::{StreamExt, stream};
    let op = Operator::start(1, "once").await;
    let pools: Vec<String> = (0..4).map(|k| format!("{}-{k}", op.pool)).collect();
    for pool in &pools {
        apply(&pool_yaml(pool, "{range: {start: 1, end: 1000}}", "Etcd"));
    }
    let (op, pools) = (&op, &pools);
    stream::iter(0..400)
        .map(|i| async move { create_claim(&op.ns, &format!("c{i}"), &pools[i % 4], 1).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    op.bound_exactly(400, Duration::from_secs(90), "not all 400 claims bound").await;
    // Only this test's claims: the binary holds this test alone, and stays right if another
    // test (and its replicas, serving every pool too) joins it.
    let (log, ours) = (op.replicas.log(0), format!("claim={}/", op.ns));
    let rewritten: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reconcile failed") && l.contains("kind=\"changed\"") && l.contains(&ours))
        .collect();
    assert!(
        rewritten.is_empty(),
        "{} status writes refused as written over a stale copy, the first:\n{}",
        rewritten.len(),
        rewritten.iter().take(5).copied().collect::<Vec<_>>().join("\n")
    );
}
