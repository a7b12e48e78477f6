//! An item stays with its claim until the claim lets go of it: no edit of the pool's spec
//! moves a bound item, at any revision.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::Api;
use lockguard::api::Pool;
use support::{Operator, audit, claims_in, history_violations, kube_client, kubectl_ok, record_history};

/// Each claim of the operator's namespace and the items its status shows.
async fn items_of(op: &Operator) -> BTreeMap<String, Vec<String>> {
    claims_in(std::slice::from_ref(&op.ns))
        .await
        .into_iter()
        .map(|c| (c.metadata.name.clone().unwrap_or_default(), c.shown_items().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resorted_list_pool_moves_no_item() {
    let recorder = record_history().await;
    let op = Operator::start(3, "resort").await;
    op.apply_pool("{list: [red, green, blue, cyan, pink, gold]}", "Etcd");
    // One after another, so that they hold the first three items in order.
    for name in ["a", "b", "c"] {
        op.claim(name, 1).await;
        op.bound(name, Duration::from_secs(30), &format!("{name} bound")).await;
    }
    let before = items_of(&op).await;
    let expected: BTreeMap<String, Vec<String>> = [("a", "red"), ("b", "green"), ("c", "blue")]
        .map(|(c, i)| (c.to_string(), vec![i.to_string()]))
        .into();
    assert_eq!(before, expected);

    // A generator or a GitOps tool writes the same items in another order.
    op.apply_pool("{list: [gold, pink, cyan, blue, green, red]}", "Etcd");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let after = items_of(&op).await;
    if after != before {
        op.replicas.fail(&format!("the re-sort moved items: before {before:?}, after {after:?}"));
    }
    // A new claim gets a free item, never a held one.
    op.claim("d", 1).await;
    op.bound("d", Duration::from_secs(30), "d bound after the re-sort").await;
    let d = items_of(&op).await.remove("d").unwrap_or_default();
    assert!(
        d.len() == 1 && ["cyan", "pink", "gold"].contains(&d[0].as_str()),
        "d got {d:?}, not one of the free items"
    );
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "violations at some revision:\n{}\n{}", seen.join("\n"), op.replicas.tails());
}

/// The pool's status as `kubectl get pool` and its conditions show it.
async fn pool_status(name: &str) -> lockguard::api::PoolStatus {
    Api::<Pool>::all(kube_client().await).get(name).await.expect("get pool").status.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_grows_and_shrinks_while_claims_hold_and_ask() {
    let recorder = record_history().await;
    let op = Operator::start(3, "resize").await;
    op.apply_pool("{range: {start: 100, end: 109}}", "Etcd");
    let first: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    for name in &first {
        op.claim(name, 1).await;
    }
    op.all_bound(&first, Duration::from_secs(60), "the first ten bound").await;
    let held_before = items_of(&op).await;

    // Full: ten more claims wait, and the pool grows while they are created.
    let second: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    for (i, name) in second.iter().enumerate() {
        op.claim(name, 1).await;
        if i == 4 {
            op.apply_pool("{range: {start: 100, end: 119}}", "Etcd");
        }
    }
    op.all_bound(&second, Duration::from_secs(60), "the grown pool serves ten more").await;

    // Shrunk below held items (100-104 go) while more claims are created: those items stay
    // with their claims, the pool counts them, and no new claim gets one.
    let third: Vec<String> = (0..3).map(|i| format!("c{i}")).collect();
    op.claim(&third[0], 1).await;
    op.apply_pool("{range: {start: 105, end: 124}}", "Etcd");
    for name in &third[1..] {
        op.claim(name, 1).await;
    }
    op.all_bound(&third, Duration::from_secs(60), "the shrunk pool serves").await;
    let after = items_of(&op).await;
    for (claim, items) in &held_before {
        assert_eq!(after.get(claim), Some(items), "{claim} kept its item through grow and shrink");
    }
    let removed = ["100", "101", "102", "103", "104"];
    for name in &third {
        let items = &after[name.as_str()];
        assert!(items.iter().all(|i| !removed.contains(&i.as_str())), "{name} got a removed item: {items:?}");
    }
    let status = op
        .replicas
        .eventually(Duration::from_secs(20), "the pool counts 5 removed items still held", || async {
            Some(pool_status(&op.pool).await).filter(|s| s.removed_held == Some(5))
        })
        .await;
    let condition = status.conditions.iter().find(|c| c.type_ == "RemovedItemsHeld").expect("condition");
    assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "RemovedItemsStillHeld"));
    assert!(condition.message.starts_with("5 items removed"), "{}", condition.message);
    let table = kubectl_ok(&["get", "pool", &op.pool], None);
    let mut lines = table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>());
    let (header, row) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
    let column =
        header.iter().position(|h| *h == "REMOVED").unwrap_or_else(|| panic!("no REMOVED column:\n{table}"));
    assert_eq!(row.get(column), Some(&"5"), "kubectl get pool:\n{table}");

    // A released removed item is gone for good: the count drops, nobody gets it.
    let holder = held_before
        .iter()
        .find(|(_, i)| i.as_slice() == ["100"])
        .map(|(c, _)| c.clone())
        .expect("holder of 100");
    kubectl_ok(&["delete", "claim", "-n", &op.ns, &holder, "--wait=true", "--timeout=60s"], None);
    op.replicas
        .eventually(Duration::from_secs(20), "4 removed items still held", || async {
            Some(pool_status(&op.pool).await).filter(|s| s.removed_held == Some(4)).map(|_| ())
        })
        .await;
    op.claim("d", 1).await;
    op.bound("d", Duration::from_secs(30), "d bound").await;
    let d = items_of(&op).await.remove("d").unwrap_or_default();
    assert!(d.iter().all(|i| !removed.contains(&i.as_str())), "d got a removed item: {d:?}");

    assert_eq!(audit(&[&op.pool]).await.map(|_| ()), Ok(()), "the audit agrees");
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "violations at some revision:\n{}\n{}", seen.join("\n"), op.replicas.tails());
}

/// A claim that names its items, as YAML (quoted: items are strings, numbers too).
fn named_claim(ns: &str, name: &str, pool: &str, items: &[&str]) -> String {
    format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{poolRef: {pool}, count: {}, items: [{}]}}\n",
        items.len(),
        items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_gets_the_items_it_names_and_gets_them_back_after_a_restore() {
    let recorder = record_history().await;
    let op = Operator::start(3, "named").await;
    let pool = op.pool_yaml("{range: {start: 30000, end: 30009}}", "Etcd");
    support::apply(&pool);
    op.claim("any", 2).await; // 30000, 30001
    op.bound("any", Duration::from_secs(30), "any bound").await;
    support::apply(&named_claim(&op.ns, "free", &op.pool, &["30007"]));
    support::apply(&named_claim(&op.ns, "taken", &op.pool, &["30001"]));
    support::apply(&named_claim(&op.ns, "missing", &op.pool, &["31000"]));
    op.bound("free", Duration::from_secs(30), "a free item named is granted").await;
    op.reports("taken", "ItemTaken", Duration::from_secs(30), "a taken item is refused").await;
    op.reports("missing", "ItemNotInPool", Duration::from_secs(30), "an item not in the pool").await;
    let items = items_of(&op).await;
    assert_eq!(items["free"], ["30007"]);
    assert_eq!(items["any"], ["30000", "30001"], "never taken from another claim");
    assert!(items["taken"].is_empty() && items["missing"].is_empty(), "{items:?}");
    // The missing item comes into the pool: the claim binds.
    support::apply(&op.pool_yaml("{range: {start: 30000, end: 31000}}", "Etcd"));
    op.bound("missing", Duration::from_secs(30), "bound once the pool has the item").await;

    // A full restore from Git: claims and pool gone, then applied again from their manifests
    // (no status). The claims that name their items get them back, whoever asks first.
    kubectl_ok(&["delete", "claims", "--all", "-n", &op.ns, "--wait=true", "--timeout=60s"], None);
    kubectl_ok(&["delete", "pool", &op.pool, "--wait=true", "--timeout=60s"], None);
    support::apply(&named_claim(&op.ns, "late", &op.pool, &["30002"]));
    op.claim("any", 3).await;
    support::apply(&named_claim(&op.ns, "free", &op.pool, &["30007"]));
    support::apply(&named_claim(&op.ns, "missing", &op.pool, &["31000"]));
    support::apply(&pool.replace("end: 30009", "end: 31000"));
    for name in ["any", "free", "missing", "late"] {
        op.bound(name, Duration::from_secs(30), &format!("{name} bound after the restore")).await;
    }
    let items = items_of(&op).await;
    assert_eq!(
        (items["free"].as_slice(), items["missing"].as_slice()),
        (&["30007".to_string()][..], &["31000".to_string()][..])
    );
    assert_eq!(items["late"], ["30002"]);
    assert!(items["any"].iter().all(|i| !["30002", "30007", "31000"].contains(&i.as_str())), "{items:?}");
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "violations at some revision:\n{}\n{}", seen.join("\n"), op.replicas.tails());
}

/// A pool on `backend` whose claim `a` holds items 1 and 2, its stored token then set to the
/// largest there is, and a claim `b` created after; returns the operator and the epoch before.
async fn poisoned(label: &str, backend: &str) -> (Operator, i64) {
    let op = Operator::start(2, label).await;
    op.apply_pool("{range: {start: 1, end: 10}}", backend);
    op.claim("a", 2).await;
    op.bound("a", Duration::from_secs(30), "a bound").await;
    let epoch = pool_status(&op.pool).await.lock_epoch.expect("an epoch");
    let poison = r#"{"status":{"fencingToken":9223372036854775807}}"#;
    kubectl_ok(&["patch", "pool", &op.pool, "--subresource=status", "--type=merge", "-p", poison], None);
    op.claim("b", 1).await;
    (op, epoch)
}

/// A stored fencing token out of reach (set by hand, or by a build with the fence off) refuses
/// every honest write of its epoch; the annotation the operator acts on opens a new epoch.
/// (On a Lease pool: nothing tells the operator which Lease tokens were ever issued. An Etcd
/// pool repairs itself, below.)
#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_token_is_repaired_by_a_new_lock_epoch() {
    let (op, epoch) = poisoned("poison", "Lease").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let stuck = support::reason_of(&op.ns, "b").await;
    assert_ne!(stuck.as_ref().map(|(s, _)| s.as_str()), Some("True"), "bound under a poisoned token?");

    kubectl_ok(&["annotate", "pool", &op.pool, "lockguard.dev/new-lock-epoch=repair-1"], None);
    op.bound("b", Duration::from_secs(30), "bound once a new epoch is open").await;
    let status = pool_status(&op.pool).await;
    assert_eq!(status.lock_epoch, Some(epoch + 1));
    assert_eq!(status.epoch_request.as_deref(), Some("repair-1"));
    assert!(status.fencing_token.is_some_and(|t| t < i64::MAX));
    assert_eq!(items_of(&op).await["a"], ["1", "2"], "the repair moved nothing");
    assert_eq!(audit(&[&op.pool]).await.map(|_| ()), Ok(()));
    // Honoured once: the same annotation opens no further epoch.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pool_status(&op.pool).await.lock_epoch, Some(epoch + 1));
}

/// On an Etcd pool a stored token above every revision the lock etcd has reached cannot have
/// been issued by it: the operator opens a new epoch by itself, as after a restore.
#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_token_of_an_etcd_pool_opens_a_new_epoch_by_itself() {
    let (op, epoch) = poisoned("poison-etcd", "Etcd").await;
    op.bound("b", Duration::from_secs(30), "bound under a new epoch").await;
    let status = pool_status(&op.pool).await;
    assert_eq!(status.lock_epoch, Some(epoch + 1));
    assert_eq!(status.epoch_request, None, "nobody asked");
    let said = status.conditions.iter().find(|c| c.type_ == "LockEpoch").map(|c| c.message.clone());
    assert!(said.as_deref().is_some_and(|m| m.contains("went back in time")), "{said:?}");
    assert_eq!(items_of(&op).await["a"], ["1", "2"], "the repair moved nothing");
    assert_eq!(audit(&[&op.pool]).await.map(|_| ()), Ok(()));
}

/// A pool re-created from its manifest without status (its finalizer stripped by hand, then
/// applied again from Git) while 50 claims are bound: every claim keeps every item at every
/// moment looked at, and new claims still bind, to free items only.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_recreated_without_status_keeps_every_bound_item() {
    let recorder = record_history().await;
    let op = Operator::start(3, "recreate").await;
    let manifest = op.pool_yaml("{range: {start: 40000, end: 40199}}", "Etcd");
    support::apply(&manifest);
    // 60 claims, then every sixth deleted: the 50 left hold items with holes between them,
    // so that allocating again from scratch would not give each the same items.
    let names: Vec<String> = (0..60).map(|i| format!("c{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        op.claim(name, 1 + (i % 3) as i32).await;
    }
    op.all_bound(&names, Duration::from_secs(90), "the 60 claims bound").await;
    let gone: Vec<&String> = names.iter().step_by(6).collect();
    for name in &gone {
        kubectl_ok(&["delete", "claim", name, "-n", &op.ns, "--wait=true", "--timeout=60s"], None);
    }
    let kept: Vec<String> = names.iter().filter(|n| !gone.contains(n)).cloned().collect();
    let before = items_of(&op).await;
    assert_eq!(before.len(), 50);

    // Watch every claim while the pool is gone and back: none may show anything else.
    let watch = {
        let (ns, before) = (op.ns.clone(), before.clone());
        tokio::spawn(async move {
            let mut moved = Vec::new();
            for _ in 0..150 {
                for claim in claims_in(std::slice::from_ref(&ns)).await {
                    let name = claim.metadata.name.clone().unwrap_or_default();
                    if before.get(&name).is_some_and(|items| items.as_slice() != claim.shown_items()) {
                        moved.push(format!("{name}: {:?}", claim.shown_items()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            moved
        })
    };
    delete_unprotected(&op.pool);
    tokio::time::sleep(Duration::from_secs(5)).await;
    support::apply(&manifest);
    for name in ["n1", "n2", "n3"] {
        op.claim(name, 3).await;
    }
    op.all_bound(&["n1", "n2", "n3"], Duration::from_secs(60), "new claims bound after the re-create").await;
    op.all_bound(&kept, Duration::from_secs(60), "the 50 claims bound after the re-create").await;
    let moved = watch.await.expect("watch");
    if !moved.is_empty() {
        let first: Vec<&String> = moved.iter().take(20).collect();
        op.replicas.fail(&format!("{} looks at claims showed other items, first:\n{first:?}", moved.len()));
    }
    let after = items_of(&op).await;
    for name in &kept {
        assert_eq!(after[name], before[name], "{name} lost or changed items");
    }
    let held: Vec<&String> = before.values().flatten().collect();
    for name in ["n1", "n2", "n3"] {
        assert!(after[name].iter().all(|i| !held.contains(&i)), "{name} got a held item: {:?}", after[name]);
    }
    assert_eq!(audit(&[&op.pool]).await, Ok(before.values().map(Vec::len).sum::<usize>() + 9));
    // Adopted, and every claim now records the new pool.
    assert!(support::event_reasons(&op.pool).contains("ItemsAdopted"), "no ItemsAdopted Event");
    let uid = Api::<Pool>::all(kube_client().await).get(&op.pool).await.expect("pool").metadata.uid;
    for claim in claims_in(std::slice::from_ref(&op.ns)).await {
        assert_eq!(
            claim.status.and_then(|s| s.pool_uid),
            uid,
            "{:?} records another pool",
            claim.metadata.name
        );
    }
    let seen = history_violations(&recorder.finish(), &[&op.pool]);
    assert!(seen.is_empty(), "violations at some revision:\n{}\n{}", seen.join("\n"), op.replicas.tails());
}

/// Deletes the pool with its protection stripped (as a hand clean-up does) and waits until
/// it is gone.
fn delete_unprotected(pool: &str) {
    kubectl_ok(&["delete", "pool", pool, "--wait=false"], None);
    let strip = r#"[{"op":"remove","path":"/metadata/finalizers"}]"#;
    kubectl_ok(&["patch", "pool", pool, "--type=json", "-p", strip], None);
    kubectl_ok(&["wait", "--for=delete", &format!("pool/{pool}"), "--timeout=30s"], None);
}

/// Two claims show one item when a lost ledger is rebuilt (restored from two backups, or a
/// status edited by hand while the pool was gone): neither keeps it, nobody else gets it,
/// both claims, the pool and the audit say so; once one lets go, the other has it.
#[tokio::test(flavor = "multi_thread")]
async fn an_item_two_claims_show_goes_to_neither_until_one_lets_go() {
    let op = Operator::start(2, "dispute").await;
    let manifest = op.pool_yaml("{range: {start: 1, end: 4}}", "Etcd");
    support::apply(&manifest);
    for name in ["a", "b"] {
        op.claim(name, 1).await;
        op.bound(name, Duration::from_secs(30), &format!("{name} bound")).await;
    }
    assert_eq!(
        items_of(&op).await,
        [("a", "1"), ("b", "2")].map(|(c, i)| (c.to_string(), vec![i.to_string()])).into()
    );
    delete_unprotected(&op.pool);
    op.reports("b", "PoolNotFound", Duration::from_secs(30), "b sees its pool gone").await;
    let shows_one = r#"{"status":{"items":["1"]}}"#;
    kubectl_ok(
        &["patch", "claim", "b", "-n", &op.ns, "--subresource=status", "--type=merge", "-p", shows_one],
        None,
    );
    support::apply(&manifest);

    for name in ["a", "b"] {
        op.reports(name, "ItemDisputed", Duration::from_secs(30), &format!("{name} told of the dispute"))
            .await;
    }
    assert_eq!(items_of(&op).await["b"], ["1"], "b's status is left as it is");
    let status = pool_status(&op.pool).await;
    assert_eq!(status.disputed.len(), 1, "{:?}", status.disputed);
    assert_eq!(status.disputed[0].item, "1");
    let disputed = status.conditions.iter().find(|c| c.type_ == "ItemsDisputed").expect("condition");
    assert_eq!((disputed.status.as_str(), disputed.reason.as_str()), ("True", "ItemsDisputed"));
    assert!(support::event_reasons(&op.pool).contains("ItemsDisputed"), "no ItemsDisputed Event");
    let report = audit(&[&op.pool]).await.expect_err("the audit reports it");
    assert!(report.contains("ItemTwice") && report.contains("item 1"), "{report}");
    // Nobody else gets it: a claim that counts gets the free items, one that names it waits.
    op.claim("c", 3).await;
    op.bound("c", Duration::from_secs(30), "c bound from the free items").await;
    assert_eq!(items_of(&op).await["c"], ["2", "3", "4"]);
    support::apply(&named_claim(&op.ns, "d", &op.pool, &["1"]));
    op.reports("d", "ItemTaken", Duration::from_secs(30), "d waits: the item is disputed").await;

    // b lets go (deleted): a has the item, and the pool says the dispute is over.
    kubectl_ok(&["delete", "claim", "b", "-n", &op.ns, "--wait=true", "--timeout=60s"], None);
    op.bound("a", Duration::from_secs(30), "a bound once b let go").await;
    assert_eq!(items_of(&op).await["a"], ["1"]);
    let status = pool_status(&op.pool).await;
    assert!(status.disputed.is_empty(), "{:?}", status.disputed);
    assert!(status.conditions.iter().any(|c| c.type_ == "ItemsDisputed" && c.status == "False"));
    assert_eq!(support::reason_of(&op.ns, "d").await.map(|(_, r)| r).as_deref(), Some("ItemTaken"));
    assert_eq!(audit(&[&op.pool]).await, Ok(4));
}
