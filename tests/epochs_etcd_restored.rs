//! A lock etcd restored from a backup taken thousands of revisions earlier (its own test
//! binary: its replicas use their own lock etcd).

mod support;

use std::time::{Duration, Instant};

use support::epochs::{TTL, pool_status, pool_yaml};
use support::{Operator, apply, audit, claims_in};

/// A volume put back as it was (a volume snapshot restore): the lock etcd is the same
/// cluster with the same token space, its revisions back where they were. Every token it
/// issues now is below the stored one; the operator must notice that the service went back
/// in time and open a new epoch by itself, within the pool's TTL + 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_etcd_volume_put_back_opens_a_new_epoch_by_itself() {
    let dir = devenv::run_dir("restored-etcd").expect("run dir");
    let mut etcd = devenv::etcd::start_single(&dir, "restored").expect("etcd");
    let op = Operator::start_with(2, "restored", &etcd.endpoint(), &[]).await;
    apply(&pool_yaml(&op.pool, "Etcd"));
    for i in 0..3 {
        op.claim(&format!("a{i}"), 1).await;
    }
    op.bound_exactly(3, Duration::from_secs(60), "bound before the backup").await;
    let backup = dir.join("backup");
    etcd.copy_volume(&backup).expect("a copy of the volume");

    // Thousands of revisions later, more claims bind under much higher tokens.
    let mut client = support::etcd_client(&etcd.endpoint()).await;
    for i in 0..3_000 {
        client.put(format!("other/{}", i % 10), "x", None).await.expect("put");
    }
    for i in 0..5 {
        op.claim(&format!("b{i}"), 1).await;
    }
    op.bound_exactly(8, Duration::from_secs(60), "bound after the backup").await;
    let before = pool_status(&op.pool).await;
    let held: Vec<(String, Vec<String>)> = claims_in(std::slice::from_ref(&op.ns))
        .await
        .into_iter()
        .map(|c| (c.metadata.name.clone().unwrap_or_default(), c.shown_items().to_vec()))
        .collect();

    etcd.put_back_volume(&backup).expect("the volume put back");
    let put_back = Instant::now();
    for i in 0..5 {
        op.claim(&format!("c{i}"), 1).await;
    }
    op.bound_exactly(13, Duration::from_secs(TTL + 10), "bound within TTL + 10 s of the restore").await;
    println!("bound again {:?} after the volume was put back", put_back.elapsed());
    let after = pool_status(&op.pool).await;
    assert_eq!(after.lock_service, before.lock_service, "the same etcd, restored");
    assert!(after.lock_epoch > before.lock_epoch, "a new epoch: {after:?} vs {before:?}");
    // Nothing moved, nothing is held twice.
    let now: Vec<(String, Vec<String>)> = claims_in(std::slice::from_ref(&op.ns))
        .await
        .into_iter()
        .map(|c| (c.metadata.name.clone().unwrap_or_default(), c.shown_items().to_vec()))
        .collect();
    for (name, items) in &held {
        assert!(now.contains(&(name.clone(), items.clone())), "{name} moved from {items:?}: {now:?}");
    }
    assert_eq!(audit(&[&op.pool]).await, Ok(13));
    let events = support::event_reasons(&op.pool);
    assert!(events.contains("LockEpochAdvanced"), "{events}");
}
