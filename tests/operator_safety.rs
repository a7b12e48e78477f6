//! No item is ever held twice, whatever administrators and interleavings do: a pool deleted
//! while in use, a pool restored without status, a corrupt ledger, a deleted claim's late
//! reconcile, a late status write and a shrink. Each test records the history of pools and
//! claims and checks the safety invariants at every revision, then audits the end state.

mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use lockguard::api::{Claim, Pool};
use lockguard::audit::history::Recorder;
use lockguard_lock::etcd::EtcdLock;
use lockguard_lock::{Lock, LockOptions};
use serde_json::json;
use support::{
    Replicas, audit, create_claim, etcd_client, eventually, history_violations, install, kube_client,
    kubectl, kubectl_ok, lock_etcd, namespace, pool_yaml, reason_of, unique,
};

async fn bound(ns: &str, name: &str, timeout: Duration) -> bool {
    eventually(timeout, || async { reason_of(ns, name).await.filter(|(s, _)| s == "True") }).await.is_some()
}

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
    let kubeconfig = install().await;
    let recorder = Recorder::start(kube_client().await);
    let replicas = Replicas::start(2, &kubeconfig, &lock_etcd());
    let pool = unique("re");
    let yaml = pool_yaml(&pool, "{range: {start: 1000, end: 1005}}", "Etcd");
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    let ns = namespace("re").await;
    for name in ["r1", "r2", "r3"] {
        create_claim(&ns, name, &pool, 2).await;
    }
    for name in ["r1", "r2", "r3"] {
        assert!(bound(&ns, name, Duration::from_secs(30)).await, "{name} bound\n{}", replicas.tails());
    }

    // A GitOps prune: the pool is deleted while its items are allocated. It stays, says why.
    kubectl_ok(&["delete", "pool", &pool, "--wait=false"], None);
    let blocked = eventually(Duration::from_secs(20), || async {
        pool_condition(&pool, "Ready").await.filter(|(s, r, _)| s == "False" && r == "DeletionBlocked")
    })
    .await;
    let (_, _, message) = blocked
        .unwrap_or_else(|| panic!("the pool stays, Ready=False DeletionBlocked\n{}", replicas.tails()));
    assert!(
        message.contains(&format!("{ns}/r1")) && message.contains("delete"),
        "says which claims and what to do: {message}"
    );
    assert!(events_of(None, &pool).contains("DeletionBlocked"), "an Event says why");
    // The re-sync cannot re-create it while it is being deleted; a new claim does not bind.
    let again = kubectl(&["create", "-f", "-"], Some(&yaml));
    assert!(!again.status.success(), "the pool still exists while it is being deleted");
    create_claim(&ns, "r4", &pool, 2).await;
    let waits = eventually(Duration::from_secs(20), || async {
        reason_of(&ns, "r4").await.filter(|(_, r)| r == "PoolDeleting")
    })
    .await;
    assert!(waits.is_some(), "a claim on a deleting pool waits\n{}", replicas.tails());

    // Once its claims are gone, the pool goes; re-created, it serves the waiting claim.
    let claims: Api<Claim> = Api::namespaced(kube_client().await, &ns);
    for name in ["r1", "r2", "r3"] {
        claims.delete(name, &DeleteParams::default()).await.expect("delete claim");
    }
    let gone = eventually(Duration::from_secs(30), || async {
        Api::<Pool>::all(kube_client().await)
            .get_opt(&pool)
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
    assert!(gone.is_some(), "the pool goes once its claims are gone\n{}", replicas.tails());
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    for name in ["r5", "r6"] {
        create_claim(&ns, name, &pool, 2).await;
    }
    for name in ["r4", "r5", "r6"] {
        assert!(bound(&ns, name, Duration::from_secs(30)).await, "{name} bound\n{}", replicas.tails());
    }
    assert_eq!(audit(&[&pool]).await, Ok(6));
    let seen = history_violations(&recorder.finish(), &[&pool]);
    assert!(seen.is_empty(), "safety violations:\n{}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_claims_follow_the_ledger_when_a_pool_is_restored_without_its_ledger() {
    let kubeconfig = install().await;
    let replicas = Replicas::start(2, &kubeconfig, &lock_etcd());
    let pool = unique("restored");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "{range: {start: 1, end: 6}}", "Lease")));
    let ns = namespace("restored").await;
    for name in ["a", "b", "c"] {
        create_claim(&ns, name, &pool, 1).await;
    }
    for name in ["a", "b", "c"] {
        assert!(bound(&ns, name, Duration::from_secs(30)).await, "{name} bound\n{}", replicas.tails());
    }
    // A restore from a backup taken before the claims: the ledger is empty again (the
    // fencing token is kept, as the API server demands).
    patch_pool_status(&pool, json!({ "ledger": [], "allocated": 0, "free": 6 })).await;
    create_claim(&ns, "d", &pool, 2).await;
    let healed = eventually(Duration::from_secs(40), || async {
        for name in ["a", "b", "c", "d"] {
            reason_of(&ns, name).await.filter(|(s, _)| s == "True")?;
        }
        audit(&[&pool]).await.ok()
    })
    .await;
    assert_eq!(
        healed,
        Some(5),
        "every claim re-bound from the ledger: {:?}\n{}",
        audit(&[&pool]).await,
        replicas.tails()
    );
    assert!(events_of(Some(&ns), "a").contains("ItemsRevoked"), "an Event says the items were taken back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_ledger_stops_only_its_pool_and_no_replica_balloons() {
    let kubeconfig = install().await;
    let mut replicas = Replicas::none(&kubeconfig, &lock_etcd(), &[]);
    // As a container memory limit would: 1 GiB of address space is many times the need.
    replicas.limit_memory(1 << 30);
    replicas.add();
    replicas.add();
    let (bad, good) = (unique("corrupt"), unique("healthy"));
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&bad, "{range: {start: 1, end: 6}}", "Etcd")));
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&good, "{range: {start: 1, end: 6}}", "Etcd")));
    let ns = namespace("corrupt").await;
    create_claim(&ns, "x", &bad, 1).await;
    assert!(bound(&ns, "x", Duration::from_secs(30)).await, "x bound\n{}", replicas.tails());
    let uid = claim_uid(&ns, "x").await;

    // A hand edit: an entry that spans the whole u32 range.
    let entry = |items: &str| json!([{ "claim": format!("{ns}/x"), "uid": uid, "items": items }]);
    patch_pool_status(&bad, json!({ "ledger": entry("0-4294967295") })).await;
    let corrupt = eventually(Duration::from_secs(20), || async {
        pool_condition(&bad, "Ready").await.filter(|(s, r, _)| s == "False" && r == "LedgerCorrupt")
    })
    .await;
    let (_, _, message) =
        corrupt.unwrap_or_else(|| panic!("Ready=False LedgerCorrupt\n{}", replicas.tails()));
    assert!(message.contains(&format!("{ns}/x")), "the message names the entry: {message}");
    assert!(events_of(None, &bad).contains("LedgerCorrupt"), "an Event");

    // Other pools go on; nobody crashed or grew.
    create_claim(&ns, "y", &good, 2).await;
    assert!(bound(&ns, "y", Duration::from_secs(30)).await, "the healthy pool serves\n{}", replicas.tails());
    create_claim(&ns, "z", &bad, 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(replicas.all_alive(), "a replica died\n{}", replicas.tails());
    for i in 0..2 {
        let rss = replicas.rss_kib(i).unwrap_or(u64::MAX);
        assert!(rss < 200 * 1024, "replica {i} uses {rss} KiB");
    }
    assert_ne!(
        reason_of(&ns, "z").await.map(|(s, _)| s),
        Some("True".to_string()),
        "no allocation from a corrupt ledger"
    );
    let metrics = devenv::http_get(&replicas.metrics_addr(0).expect("metrics address"), "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(metrics.contains("lockguard_pools_ledger_corrupt 1"), "{metrics}");

    // The repair the README describes: fix the entry on the status subresource.
    patch_pool_status(&bad, json!({ "ledger": entry("0") })).await;
    assert!(
        bound(&ns, "z", Duration::from_secs(30)).await,
        "repaired, the pool serves again\n{}",
        replicas.tails()
    );
    assert_eq!(audit(&[&bad, &good]).await, Ok(4));
}

/// A reconcile of a claim that waits for the lock while the claim is deleted and created
/// again under the same name must not touch the new claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_claims_late_reconcile_never_touches_its_successor() {
    let kubeconfig = install().await;
    let recorder = Recorder::start(kube_client().await);
    let mut replicas = Replicas::start(2, &kubeconfig, &lock_etcd());
    let pool = unique("late");
    let yaml = pool_yaml(&pool, "{range: {start: 1, end: 6}}", "Etcd")
        .replace("acquireTimeoutSeconds: 20", "acquireTimeoutSeconds: 90");
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    // Let the pool controller settle before the test holds the pool's lock.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lock = EtcdLock::new(etcd_client(&lock_etcd()).await, "test");
    let name = format!("lockguard/pools/{pool}");
    let held = lock
        .acquire(&name, LockOptions::new(30, Duration::from_secs(10)).expect("options"))
        .await
        .expect("lock");
    let queued = |n: usize| {
        let (lock, name) = (lock.clone(), name.clone());
        async move {
            eventually(Duration::from_secs(30), || async {
                (lock.queue(&name).await.ok()?.len() >= n).then_some(())
            })
            .await
            .is_some()
        }
    };

    let ns = namespace("late").await;
    create_claim(&ns, "c", &pool, 1).await;
    assert!(queued(3).await, "both replicas wait for the lock\n{}", replicas.tails());
    // Both replicas are busy with c; a fresh replica runs its finalizer (nothing allocated).
    Api::<Claim>::namespaced(kube_client().await, &ns)
        .delete("c", &DeleteParams::default())
        .await
        .expect("delete");
    replicas.kill(1);
    replicas.add();
    let gone = eventually(Duration::from_secs(30), || async {
        Api::<Claim>::namespaced(kube_client().await, &ns)
            .get_opt("c")
            .await
            .ok()
            .and_then(|c| c.is_none().then_some(()))
    })
    .await;
    assert!(gone.is_some(), "the first c is gone\n{}", replicas.tails());
    create_claim(&ns, "c", &pool, 1).await;
    let successor = claim_uid(&ns, "c").await;
    held.release().await.expect("release");

    assert!(bound(&ns, "c", Duration::from_secs(60)).await, "the new c binds\n{}", replicas.tails());
    assert_eq!(claim_uid(&ns, "c").await, successor);
    assert_eq!(audit(&[&pool]).await, Ok(1));
    let seen = history_violations(&recorder.finish(), &[&pool]);
    assert!(seen.is_empty(), "safety violations:\n{}\n{}", seen.join("\n"), replicas.tails());
}

/// A pool created together with many claims: no item is given out before the pool carries
/// its deletion protection, however busy its ledger is (a pool without it could vanish
/// with its ledger and leave its claims holding items nobody records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_created_under_load_is_protected_before_it_gives_out_items() {
    let kubeconfig = install().await;
    let recorder = Recorder::start(kube_client().await);
    let replicas = Replicas::start(3, &kubeconfig, &lock_etcd());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pool = unique("busy-from-birth");
    let ns = namespace("busy-from-birth").await;
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "{range: {start: 1, end: 200}}", "Etcd")));
    for i in 0..40 {
        create_claim(&ns, &format!("c{i}"), &pool, 1).await;
    }
    for i in 0..40 {
        assert!(
            bound(&ns, &format!("c{i}"), Duration::from_secs(60)).await,
            "c{i} bound\n{}",
            replicas.tails()
        );
    }
    assert_eq!(audit(&[&pool]).await, Ok(40));
    let seen = history_violations(&recorder.finish(), &[&pool]);
    assert!(seen.is_empty(), "safety violations:\n{}", seen.join("\n"));
}
