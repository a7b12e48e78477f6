//! A lock etcd restored with `etcdutl snapshot restore --bump-revision --mark-compacted` from
//! a snapshot taken thousands of revisions earlier (its own test binary: see
//! epochs_etcd_restored.rs).

mod support;

use support::epochs::restored;

/// The documented restore: the revision bumped past every token issued since the snapshot,
/// so tokens keep growing and the epoch stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_etcd_restored_by_etcdutl_with_a_revision_bump_binds_in_the_same_epoch() {
    const BUMP: u64 = 1_000_000;
    let (before, after) = restored(
        "snapshot",
        |etcd, to| etcd.save_snapshot(to).expect("etcdctl snapshot save"),
        |etcd, from| etcd.restore_snapshot(from, BUMP).expect("etcdutl snapshot restore"),
    )
    .await;
    assert_eq!(after.lock_service, before.lock_service, "the same token space, restored");
    assert_eq!(after.lock_epoch, before.lock_epoch, "no new epoch needed");
    assert!(after.fencing_token > Some(BUMP as i64), "tokens past the bump: {after:?}");
}
