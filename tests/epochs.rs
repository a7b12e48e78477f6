//! Fencing across lock-service changes: a backend switch (a re-created Lease:
//! epochs_lease_deleted.rs; a replaced lock etcd: epochs_etcd_replaced.rs) opens a new lock epoch by themselves, claims keep binding, the audit stays
//! clean, and a replica frozen before its write under the old service is refused by the API
//! server when it is thawed.

mod support;

use std::time::Duration;

use support::epochs::{
    TTL, epoch_after, frozen_writer, pool_status, pool_yaml, refused_when_thawed, set_backend,
};
use support::{Operator, apply, audit, event_reasons};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_backend_back_and_forth_while_claims_bind_opens_new_epochs() {
    let mut op = Operator::start(0, "switch").await;
    apply(&pool_yaml(&op.pool, "Etcd"));
    let frozen = frozen_writer(&mut op).await;
    op.replicas.add();
    op.replicas.add();
    // The first epoch, under etcd, is written once the frozen replica's lease has expired.
    epoch_after(&op, 0, Duration::from_secs(30), "a first epoch").await;
    for i in 0..100 {
        op.claim(&format!("c{i}"), 1 + (i % 3)).await;
        let switch_to = match i {
            30 => "Lease",
            60 => "Etcd",
            _ => continue,
        };
        let epoch = pool_status(&op.pool).await.lock_epoch.unwrap_or_default();
        set_backend(&op.pool, switch_to).await;
        let took =
            epoch_after(&op, epoch, Duration::from_secs(30), &format!("switch to {switch_to}: no new epoch"))
                .await;
        assert!(
            took < Duration::from_secs(TTL + 3),
            "switch to {switch_to} took {took:?}\n{}",
            op.replicas.tails()
        );
        eprintln!("switch to {switch_to}: new epoch after {took:?}");
        if i == 30 {
            refused_when_thawed(&op.replicas, frozen).await;
        }
    }
    op.bound_exactly(101, Duration::from_secs(90), "every claim bound").await;
    assert!(audit(&[&op.pool]).await.is_ok(), "{:?}", audit(&[&op.pool]).await);
    let status = pool_status(&op.pool).await;
    assert!(status.lock_service.as_deref().is_some_and(|s| s.starts_with("etcd:")), "{status:?}");
    assert!(status.lock_epoch >= Some(3), "two switches, two new epochs: {status:?}");
    let events = event_reasons(&op.pool);
    assert!(events.contains("LockEpochAdvanced"), "{events}");
}
