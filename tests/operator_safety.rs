//! No item is ever held twice, whatever administrators and interleavings do: a pool deleted
//! while in use, a pool restored without status, a corrupt ledger, a deleted claim's late
//! reconcile, a late status write and a shrink. Each test records the history of pools and
//! claims and checks the safety invariants at every revision, then audits the end state.

mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use lockguard::api::{Claim, Pool};
use lockguard_lock::etcd::EtcdLock;
use lockguard_lock::{Lock, LockOptions};
use serde_json::json;
use support::{
    Operator, apply, audit, create_claim, etcd_client, eventually, history_violations, kube_client, kubectl,
    kubectl_ok, lock_etcd, pool_yaml, reason_of, record_history, unique,
};

async fn pool_condition(pool: &str, type_: &str) -> Option<(String, String, String)> {
    let pool = Api::<Pool>::all(kube_client().await).get_opt(pool).await.ok()??;
    let c = pool.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

fn events_of(namespace: Option<&str>, name: &str) -> String {
    let selector = format!("involvedObject.name={name}");
    let mut args = vec!["get", "events", "--field-selector", &selector, "-o", "jsonpath={.items[*].reason}"];
    match namespace {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("-A"),
    }
    kubectl_ok(&args, None)
}

async fn patch_pool_status(pool: &str, status: serde_json::Value) {
    Api::<Pool>::all(kube_client().await)
        .patch_status(pool, &PatchParams::default(), &Patch::Merge(&json!({ "status": status })))
        .await
        .expect("patch pool status");
}

async fn claim_uid(ns: &str, name: &str) -> String {
    Api::<Claim>::namespaced(kube_client().await, ns)
        .get(name)
        .await
        .expect("claim")
        .metadata
        .uid
        .expect("uid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_in_use_is_not_deleted_until_its_claims_are_gone() {
    let recorder = record_history().await;
    let op = Operator::start(2, "re").await;
    let yaml = op.pool_yaml("{range: {start: 1000, end: 1005}}", "Etcd");
    apply(&yaml);
    for name in ["r1", "r2", "r3"] {
        op.claim(name, 2).await;
    }
    for name in ["r1", "r2", "r3"] {
        op.bound(name, Duration::from_secs(30), &format!("{name} bound")).await;
    }

    // A GitOps prune: the pool is deleted while its items are allocated. It stays, says why.
    kubectl_ok(&["delete", "pool", &op.pool, "--wait=false"], None);
    let (_, _, message) = op
        .replicas
        .eventually(Duration::from_secs(20), "the pool stays, Ready=False DeletionBlocked", || async {
            pool_condition(&op.pool, "Ready").await.filter(|(s, r, _)| s == "False" && r == "DeletionBlocked")
        })
        .await;
    assert!(
        message.contains(&format!("{}/r1", op.ns)) && message.contains("delete"),
        "says which claims and what to do: {message}"
    );
    assert!(events_of(None, &op.pool).contains("DeletionBlocked"), "an Event says why");
    // The re-sync cannot re-create it while it is being deleted; a new claim does not bind.
    let again = kubectl(&["create", "-f", "-"], Some(&yaml));
    assert!(!again.status.success(), "the pool still exists while it is being deleted");
    op.claim("r4", 2).await;
    op.reports("r4", "PoolDeleting", Duration::from_secs(20), "a claim on a deleting pool waits").await;

    // Once its claims are gone, the pool goes; re-created, it serves the waiting claim.
    let claims: Api<Claim> = Api::namespaced(kube_client().await, &op.ns);
    for name in ["r1", "r2", "r3"] {
        claims.delete(name, &DeleteParams::default()).await.expect("delete claim");
    }
    op.replicas
        .eventually(Duration::from_secs(30), "the pool goes once its claims are gone", || async {
            Api::<Pool>::all(kube_client().await)
                .get_opt(&op.pool)
                .await
                .ok()
                .and_then(|p| p.is_none().then_some(()))
        })
        .await;
    apply(&yaml);
    for name in ["r5", "r6"] {
        op.claim(name, 2).await;
    }
    for name in ["r4", "r5", "r6"] {
        op.bound(name, Duration::from_secs(30), &format!("{name} bound")).await;
    }
    assert_eq!(audit(&[&op.pool]).await, Ok(6));
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "safety violations:\n{}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_claims_follow_the_ledger_when_a_pool_is_restored_without_its_ledger() {
    let op = Operator::start(2, "restored").await;
    op.apply_pool("{range: {start: 1, end: 6}}", "Lease");
    for name in ["a", "b", "c"] {
        op.claim(name, 1).await;
    }
    for name in ["a", "b", "c"] {
        op.bound(name, Duration::from_secs(30), &format!("{name} bound")).await;
    }
    // A restore from a backup taken before the claims: the ledger is empty again (the
    // fencing token is kept, as the API server demands).
    patch_pool_status(&op.pool, json!({ "ledger": [], "allocated": 0, "free": 6 })).await;
    op.claim("d", 2).await;
    let healed = eventually(Duration::from_secs(40), || async {
        for name in ["a", "b", "c", "d"] {
            reason_of(&op.ns, name).await.filter(|(s, _)| s == "True")?;
        }
        audit(&[&op.pool]).await.ok()
    })
    .await;
    if healed != Some(5) {
        // The audit as it is now says what is wrong.
        let now = audit(&[&op.pool]).await;
        op.replicas.fail(&format!("every claim re-bound from the ledger: {healed:?}, audit {now:?}"));
    }
    assert!(events_of(Some(&op.ns), "a").contains("ItemsRevoked"), "an Event says the items were taken back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_ledger_stops_only_its_pool_and_no_replica_balloons() {
    let mut op = Operator::start(0, "corrupt").await;
    // As a container memory limit would: 1 GiB of address space is many times the need.
    op.replicas.limit_memory(1 << 30);
    op.replicas.add();
    op.replicas.add();
    let (bad, good) = (&op.pool, unique("healthy"));
    op.apply_pool("{range: {start: 1, end: 6}}", "Etcd");
    apply(&pool_yaml(&good, "{range: {start: 1, end: 6}}", "Etcd"));
    op.claim("x", 1).await;
    op.bound("x", Duration::from_secs(30), "x bound").await;
    let uid = claim_uid(&op.ns, "x").await;

    // A hand edit: an entry that spans the whole u32 range.
    let entry = |items: &str| json!([{ "claim": format!("{}/x", op.ns), "uid": uid, "items": items }]);
    patch_pool_status(bad, json!({ "ledger": entry("0-4294967295") })).await;
    let (_, _, message) = op
        .replicas
        .eventually(Duration::from_secs(20), "Ready=False LedgerCorrupt", || async {
            pool_condition(bad, "Ready").await.filter(|(s, r, _)| s == "False" && r == "LedgerCorrupt")
        })
        .await;
    assert!(message.contains(&format!("{}/x", op.ns)), "the message names the entry: {message}");
    assert!(events_of(None, bad).contains("LedgerCorrupt"), "an Event");

    // Other pools go on; nobody crashed or grew.
    create_claim(&op.ns, "y", &good, 2).await;
    op.bound("y", Duration::from_secs(30), "the healthy pool serves").await;
    op.claim("z", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(op.replicas.all_alive(), "a replica died\n{}", op.replicas.tails());
    for i in 0..2 {
        let rss = op.replicas.rss_kib(i).unwrap_or(u64::MAX);
        assert!(rss < 200 * 1024, "replica {i} uses {rss} KiB");
    }
    assert_ne!(
        reason_of(&op.ns, "z").await.map(|(s, _)| s),
        Some("True".to_string()),
        "no allocation from a corrupt ledger"
    );
    // The replica that serves the pool says so (pools are divided between the replicas).
    let corrupt = op.replicas.metric_sum("lockguard_pools_ledger_corrupt");
    assert_eq!(corrupt, 1.0, "lockguard_pools_ledger_corrupt summed over the replicas");

    // The repair the README describes: fix the entry on the status subresource.
    patch_pool_status(bad, json!({ "ledger": entry("0") })).await;
    op.bound("z", Duration::from_secs(30), "repaired, the pool serves again").await;
    assert_eq!(audit(&[bad, &good]).await, Ok(4));
}

/// A reconcile of a claim that waits for the lock while the claim is deleted and created
/// again under the same name must not touch the new claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_claims_late_reconcile_never_touches_its_successor() {
    let recorder = record_history().await;
    let mut op = Operator::start(2, "late").await;
    let yaml = op
        .pool_yaml("{range: {start: 1, end: 6}}", "Etcd")
        .replace("acquireTimeoutSeconds: 20", "acquireTimeoutSeconds: 90");
    apply(&yaml);
    // Let the pool controller settle before the test holds the pool's lock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lock = EtcdLock::new(etcd_client(&lock_etcd()).await, "test");
    let name = format!("lockguard/pools/{}", op.pool);
    let held = lock
        .acquire(&name, LockOptions::new(30, Duration::from_secs(10)).expect("options"))
        .await
        .expect("lock");

    op.claim("c", 1).await;
    op.replicas
        .eventually(Duration::from_secs(30), "both replicas wait for the lock", || async {
            (lock.queue(&name).await.ok()?.len() >= 3).then_some(())
        })
        .await;
    // Both replicas are busy with c; a fresh replica runs its finalizer (nothing allocated).
    let claims: Api<Claim> = Api::namespaced(kube_client().await, &op.ns);
    claims.delete("c", &DeleteParams::default()).await.expect("delete");
    op.replicas.kill(1);
    op.replicas.add();
    op.replicas
        .eventually(Duration::from_secs(30), "the first c is gone", || async {
            claims.get_opt("c").await.ok().and_then(|c| c.is_none().then_some(()))
        })
        .await;
    op.claim("c", 1).await;
    let successor = claim_uid(&op.ns, "c").await;
    held.release().await.expect("release");

    op.bound("c", Duration::from_secs(60), "the new c binds").await;
    assert_eq!(claim_uid(&op.ns, "c").await, successor);
    assert_eq!(audit(&[&op.pool]).await, Ok(1));
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "safety violations:\n{}\n{}", seen.join("\n"), op.replicas.tails());
}

/// A pool created together with many claims: no item is given out before the pool carries
/// its deletion protection, however busy its ledger is (a pool without it could vanish
/// with its ledger and leave its claims holding items nobody records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_created_under_load_is_protected_before_it_gives_out_items() {
    let recorder = record_history().await;
    let op = Operator::start(3, "busy-from-birth").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.apply_pool("{range: {start: 1, end: 200}}", "Etcd");
    for i in 0..40 {
        op.claim(&format!("c{i}"), 1).await;
    }
    for i in 0..40 {
        let name = format!("c{i}");
        op.bound(&name, Duration::from_secs(60), &format!("{name} bound")).await;
    }
    assert_eq!(audit(&[&op.pool]).await, Ok(40));
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "safety violations:\n{}", seen.join("\n"));
}
