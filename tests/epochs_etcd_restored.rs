//! A lock etcd restored from a backup taken thousands of revisions earlier: a volume put
//! back as it was, and a snapshot restored with `etcdutl` (each its own test binary: the
//! replicas use their own lock etcd, and replicas of another test in the same binary would
//! reconcile its pool through another one).

mod support;

use support::epochs::restored;

/// A volume put back as it was (a volume snapshot restore): the same cluster and token space,
/// its revisions back where they were, so every token it issues is below the stored one. The
/// operator notices that the service went back in time and opens a new epoch by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_etcd_volume_put_back_opens_a_new_epoch_by_itself() {
    let (before, after) = restored(
        "volume",
        |etcd, to| etcd.copy_volume(to).expect("a copy of the volume"),
        |etcd, from| etcd.put_back_volume(from).expect("the volume put back"),
    )
    .await;
    assert_eq!(after.lock_service, before.lock_service, "the same etcd, restored");
    assert!(after.lock_epoch > before.lock_epoch, "a new epoch: {after:?} vs {before:?}");
    let advanced = after.conditions.iter().find(|c| c.type_ == "LockEpoch").map(|c| c.message.clone());
    assert!(advanced.as_deref().is_some_and(|m| m.contains("went back in time")), "{advanced:?}");
}
