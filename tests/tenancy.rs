//! Pools shared by tenants (namespaces): which namespaces may claim, how much, and one
//! namespace's claim that does not fit stalls only its own namespace. The people here are
//! users bound to the built-in `edit` role in their namespaces (kubectl `--as`), with
//! kube-controller-manager running the controllers a real cluster has for them: role
//! aggregation (so `edit` carries lockguard's claim rules), ResourceQuota, namespace deletion
//! and garbage collection.

mod support;

use std::process::Output;
use std::time::Duration;

use support::{Operator, audit, create_claim, kubectl, kubectl_ok, namespace, reasons, unique};

/// The controllers run and `edit` carries lockguard's claim rules (aggregated).
async fn controllers() {
    support::install().await;
    devenv::shared().controllers();
    let aggregated = support::eventually(Duration::from_secs(60), || async {
        let json = kubectl_ok(&["get", "clusterrole", "edit", "-o", "json"], None);
        json.contains("\"claims\"").then_some(())
    })
    .await;
    if aggregated.is_none() {
        panic!("edit never got the claim rules:\n{}", devenv::shared().controllers().log_tail(30));
    }
}

/// A new user bound to the built-in `edit` role in each of `namespaces`.
fn editor(namespaces: &[&str]) -> String {
    let user = unique("editor");
    for ns in namespaces {
        kubectl_ok(&["create", "rolebinding", &user, "--clusterrole=edit", "--user", &user, "-n", ns], None);
    }
    user
}

/// kubectl as `user`.
fn as_user(user: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = args.to_vec();
    all.extend(["--as", user]);
    kubectl(&all, stdin)
}

fn claim_yaml(ns: &str, name: &str, pool: &str, count: i32) -> String {
    format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{poolRef: {pool}, count: {count}}}\n"
    )
}

/// `user` creates claim `ns/name`; panics if refused.
fn claim_as(user: &str, ns: &str, name: &str, pool: &str, count: i32) {
    let out = as_user(user, &["create", "-f", "-"], Some(&claim_yaml(ns, name, pool, count)));
    assert!(out.status.success(), "{user} creates {ns}/{name}: {}", String::from_utf8_lossy(&out.stderr));
}

fn set_count_as(user: &str, ns: &str, name: &str, count: i32) {
    let patch = format!(r#"{{"spec":{{"count":{count}}}}}"#);
    let out = as_user(user, &["patch", "claim", name, "-n", ns, "--type=merge", "-p", &patch], None);
    assert!(out.status.success(), "{user} patches {ns}/{name}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The Bound condition of `ns/name` once it has `reason` (its message), or the test fails.
async fn waits_with(op: &Operator, ns: &str, name: &str, reason: &str) -> String {
    let seen = support::eventually(Duration::from_secs(30), || async {
        support::reason_of(ns, name).await.filter(|(_, r)| r == reason)?;
        support::bound_message(ns, name).await
    })
    .await;
    let now = support::reason_of(ns, name).await;
    seen.unwrap_or_else(|| op.replicas.fail(&format!("{ns}/{name} never said {reason}; it says {now:?}")))
}

async fn bound_in(op: &Operator, ns: &str, names: &[&str]) {
    let bound = support::eventually(Duration::from_secs(30), || async {
        reasons(ns, names).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await;
    if bound.is_none() {
        let seen = reasons(ns, names).await;
        op.replicas.fail(&format!("{ns}: {names:?} not all bound: {seen:?}"));
    }
}

/// The test's pool of 20 items (Etcd) with `fields` added to its spec.
fn pool_of_20(op: &Operator, fields: &str) -> String {
    op.pool_yaml("{range: {start: 1, end: 20}}", "Etcd").replace("lock:", &format!("{fields}, lock:"))
}

fn pool_status(pool: &str) -> serde_json::Value {
    let json = kubectl_ok(&["get", "pool", pool, "-o", "json"], None);
    serde_json::from_str::<serde_json::Value>(&json).expect("pool json")["status"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selector_pool_serves_the_namespaces_it_selects_and_follows_their_labels() {
    controllers().await;
    let op = Operator::start(2, "allow").await;
    let team = unique("team");
    let yaml = pool_of_20(
        &op,
        &format!("allowedNamespaces: {{from: Selector, selector: {{matchLabels: {{team: {team}}}}}}}"),
    );
    support::apply(&yaml);
    let outside = namespace("allow-out").await;
    kubectl_ok(&["label", "namespace", &op.ns, &format!("team={team}")], None);
    let user = editor(&[&op.ns, &outside]);

    claim_as(&user, &op.ns, "inside", &op.pool, 3);
    claim_as(&user, &outside, "outside", &op.pool, 2);
    bound_in(&op, &op.ns, &["inside"]).await;
    let message = waits_with(&op, &outside, "outside", "NamespaceNotAllowed").await;
    assert!(
        message.contains(&format!("namespace {outside} may not claim from pool {}", op.pool)),
        "{message}"
    );
    let events = kubectl_ok(&["get", "events", "-n", &outside, "-o", "json"], None);
    assert!(events.contains("NamespaceNotAllowed"), "no Event says so: {events}");
    // Tenants read their claims, not the pools (a ledger names every tenant's claims).
    let read = as_user(&user, &["get", "pool", &op.pool], None);
    assert!(!read.status.success(), "an editor reads pools: {}", String::from_utf8_lossy(&read.stdout));

    // Labelled in, the namespace is served; labelled out, it keeps what it holds.
    kubectl_ok(&["label", "namespace", &outside, &format!("team={team}")], None);
    bound_in(&op, &outside, &["outside"]).await;
    kubectl_ok(&["label", "namespace", &op.ns, "team-"], None);
    set_count_as(&user, &op.ns, "inside", 5);
    let message = waits_with(&op, &op.ns, "inside", "NamespaceNotAllowed").await;
    assert!(message.contains("keeps the 3 items it holds"), "{message}");
    let items = support::claims_in(std::slice::from_ref(&op.ns)).await[0].shown_items().len();
    assert_eq!(items, 3, "a namespace no longer allowed keeps its items");
    let held = support::eventually(Duration::from_secs(30), || async {
        (pool_status(&op.pool)["disallowedHeld"] == 3).then_some(())
    })
    .await;
    assert!(held.is_some(), "status.disallowedHeld: {}", pool_status(&op.pool));
    assert_eq!(audit(&[&op.pool]).await, Ok(3 + 2));

    let explain = kubectl_ok(&["explain", "pool.spec.allowedNamespaces"], None);
    assert!(
        explain.contains("Which namespaces may claim items") && explain.contains("selector"),
        "{explain}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_limits_hold_for_an_editor_and_a_limit_above_capacity_is_clamped() {
    controllers().await;
    let recorder = support::record_history().await;
    let op = Operator::start(2, "limits").await;
    let yaml = pool_of_20(&op, "limits: {maxItemsPerNamespace: 5, maxClaimsPerNamespace: 3}");
    support::apply(&yaml);
    let other = namespace("limits-b").await;
    let user = editor(&[&op.ns, &other]);
    claim_as(&user, &op.ns, "one", &op.pool, 2);
    claim_as(&user, &op.ns, "two", &op.pool, 2);
    bound_in(&op, &op.ns, &["one", "two"]).await;
    claim_as(&user, &op.ns, "three", &op.pool, 2);
    let message = waits_with(&op, &op.ns, "three", "NamespaceLimitReached").await;
    assert!(message.contains("holds 4 items") && message.contains("maxItemsPerNamespace"), "{message}");
    // Another namespace is not held up by it.
    claim_as(&user, &other, "b", &op.pool, 5);
    bound_in(&op, &other, &["b"]).await;
    // Within the limit it binds; a fourth claim passes the claim limit.
    set_count_as(&user, &op.ns, "three", 1);
    bound_in(&op, &op.ns, &["three"]).await;
    claim_as(&user, &op.ns, "four", &op.pool, 1);
    let message = waits_with(&op, &op.ns, "four", "NamespaceLimitReached").await;
    assert!(
        message.contains("3 claims of namespace") && message.contains("maxClaimsPerNamespace"),
        "{message}"
    );
    kubectl_ok(&["delete", "claim", "one", "-n", &op.ns, "--wait=true", "--timeout=60s"], None);
    bound_in(&op, &op.ns, &["four"]).await;
    assert_eq!(audit(&[&op.pool]).await, Ok(2 + 1 + 1 + 5));
    let replay = recorder.finish();
    let violations = support::history_violations(&replay, &[&op.pool]);
    assert!(violations.is_empty(), "{violations:#?}");

    // Zero is refused at admission; a limit above the pool's capacity is clamped and said.
    let zero = pool_of_20(&op, "limits: {maxItemsPerNamespace: 0}");
    let refused = kubectl(&["apply", "-f", "-"], Some(&zero));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("maxItemsPerNamespace"), "{stderr}");
    let wide = pool_of_20(&op, "limits: {maxItemsPerNamespace: 500}");
    support::apply(&wide);
    let clamped = support::eventually(Duration::from_secs(30), || async {
        let status = pool_status(&op.pool);
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        conditions
            .into_iter()
            .find(|c| c["type"] == "LimitsClamped" && c["status"] == "True")
            .and_then(|c| c["message"].as_str().map(String::from))
    })
    .await;
    let clamped = clamped.unwrap_or_else(|| op.replicas.fail("no LimitsClamped condition"));
    assert!(
        clamped.contains("maxItemsPerNamespace 500 is above the pool's 20 items; 20 applies"),
        "{clamped}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_quota_of_two_claims_refuses_the_third_create() {
    controllers().await;
    let ns = namespace("quota").await;
    let quota = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: claims, namespace: {ns}}}\nspec: {{hard: {{count/claims.lockguard.dev: \"2\"}}}}\n"
    );
    support::apply(&quota);
    // The quota controller fills in status.hard (and counts claims) before admission uses it.
    let counted = support::eventually(Duration::from_secs(90), || async {
        let json = kubectl_ok(&["get", "resourcequota", "claims", "-n", &ns, "-o", "json"], None);
        let quota: serde_json::Value = serde_json::from_str(&json).expect("json");
        (quota["status"]["used"]["count/claims.lockguard.dev"] == "0").then_some(())
    })
    .await;
    assert!(
        counted.is_some(),
        "the quota was never counted:\n{}",
        devenv::shared().controllers().log_tail(30)
    );
    let user = editor(&[&ns]);
    claim_as(&user, &ns, "first", "no-such-pool", 1);
    claim_as(&user, &ns, "second", "no-such-pool", 1);
    let third = as_user(&user, &["create", "-f", "-"], Some(&claim_yaml(&ns, "third", "no-such-pool", 1)));
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success() && stderr.contains("exceeded quota"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_namespace_goes_and_its_claims_items_are_freed() {
    controllers().await;
    let op = Operator::start(2, "nsgone").await;
    op.apply_pool("{range: {start: 1, end: 10}}", "Etcd");
    let doomed = namespace("nsgone-x").await;
    for name in ["a", "b", "c"] {
        create_claim(&doomed, name, &op.pool, 2).await;
    }
    bound_in(&op, &doomed, &["a", "b", "c"]).await;
    kubectl_ok(&["delete", "namespace", &doomed, "--wait=true", "--timeout=90s"], None);
    let freed = support::eventually(Duration::from_secs(30), || async {
        (pool_status(&op.pool)["free"] == 10).then_some(())
    })
    .await;
    assert!(freed.is_some(), "items of the deleted namespace's claims: {}", pool_status(&op.pool));
    assert_eq!(audit(&[&op.pool]).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_growth_in_one_namespace_does_not_stall_another() {
    controllers().await;
    let op = Operator::start(2, "fair").await;
    op.apply_pool("{range: {start: 1, end: 40}}", "Etcd");
    let other = namespace("fair-b").await;
    let (team_a, team_b) = (editor(&[&op.ns]), editor(&[&other]));
    // Team A holds 15 of 40 items, then asks for 30 more than its 5: 25 are free.
    claim_as(&team_a, &op.ns, "filler", &op.pool, 10);
    claim_as(&team_a, &op.ns, "big", &op.pool, 5);
    op.all_bound(&["filler", "big"], Duration::from_secs(30), "team A bound").await;
    set_count_as(&team_a, &op.ns, "big", 35);
    op.reports("big", "PoolExhausted", Duration::from_secs(30), "the growth does not fit").await;
    claim_as(&team_a, &op.ns, "young", &op.pool, 1);

    // Team B's 20 new claims fit in what is free: they bind while team A's growth waits.
    let names: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    for name in &names {
        claim_as(&team_b, &other, name, &op.pool, 1);
    }
    let bound = support::eventually(Duration::from_secs(60), || async {
        reasons(&other, &names).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await;
    if bound.is_none() {
        let seen = reasons(&other, &names).await;
        op.replicas.fail(&format!("team B stalled behind team A's growth: {seen:?}"));
    }
    // Team A's younger claim still waits behind its own namespace's older one.
    op.reports("young", "PoolExhausted", Duration::from_secs(30), "young waits in its namespace").await;
    let young = support::bound_message(&op.ns, "young").await.unwrap_or_default();
    assert!(young.contains(&format!("{}/big", op.ns)), "{young}");
    assert_eq!(audit(&[&op.pool]).await, Ok(15 + 20));
}

/// A claim that waited longer than the pool's bound (`spec.fairness.maxWaitSeconds`) holds up
/// every namespace until it fits, and the others are told so without its name.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_that_waited_past_the_bound_holds_up_every_namespace_until_it_fits() {
    let op = Operator::start(2, "starve").await;
    let yaml = pool_of_20(&op, "fairness: {maxWaitSeconds: 3}");
    support::apply(&yaml);
    let other = namespace("starve-b").await;
    op.claim("filler", 10).await;
    op.claim("big", 5).await;
    op.all_bound(&["filler", "big"], Duration::from_secs(30), "team A bound").await;
    kubectl_ok(
        &["patch", "claim", "big", "-n", &op.ns, "--type=merge", "-p", r#"{"spec":{"count":15}}"#],
        None,
    );
    op.reports("big", "PoolExhausted", Duration::from_secs(30), "the growth does not fit").await;
    // Within the bound, team B is served; past it, team B waits too.
    create_claim(&other, "early", &op.pool, 1).await;
    support::eventually(Duration::from_secs(30), || async {
        reasons(&other, &["early"]).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await
    .expect("served within the bound");
    tokio::time::sleep(Duration::from_secs(5)).await;
    create_claim(&other, "late", &op.pool, 1).await;
    let waits = support::eventually(Duration::from_secs(30), || async {
        let claims = support::claims_in(std::slice::from_ref(&other)).await;
        let late = claims.iter().find(|c| c.metadata.name.as_deref() == Some("late"))?;
        late.bound_condition().filter(|c| c.reason == "PoolExhausted").map(|c| c.message.clone())
    })
    .await;
    let message = waits.unwrap_or_else(|| op.replicas.fail("late was not held up by the starving claim"));
    assert!(message.contains("longer than 3 s") && !message.contains(&op.ns), "{message}");
    // Once it fits, it goes first, then the others.
    kubectl_ok(&["delete", "claim", "filler", "-n", &op.ns, "--wait=true", "--timeout=60s"], None);
    op.bound("big", Duration::from_secs(30), "big bound once it fits").await;
    support::eventually(Duration::from_secs(30), || async {
        reasons(&other, &["late"]).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await
    .unwrap_or_else(|| op.replicas.fail("late bound after big"));
    assert_eq!(audit(&[&op.pool]).await, Ok(15 + 1 + 1));
}

/// Gone means gone: a claim that another controller's finalizer keeps (as PVC protection
/// does) keeps its items while it exists, and no other claim gets them.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_kept_by_another_finalizer_keeps_its_items_until_it_is_gone() {
    let op = Operator::start(2, "kept").await;
    op.apply_pool("{range: {start: 1, end: 4}}", "Etcd");
    op.claim("kept", 4).await;
    op.bound("kept", Duration::from_secs(30), "kept bound").await;
    let keep = r#"{"metadata":{"finalizers":["example.com/keep"]}}"#;
    kubectl_ok(&["patch", "claim", "kept", "-n", &op.ns, "--type=merge", "-p", keep], None);
    kubectl_ok(&["delete", "claim", "kept", "-n", &op.ns, "--wait=false"], None);
    op.claim("next", 2).await;
    op.reports("next", "PoolExhausted", Duration::from_secs(30), "the kept claim's items are not free").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = support::claims_in(std::slice::from_ref(&op.ns)).await;
    let kept = kept.iter().find(|c| c.metadata.name.as_deref() == Some("kept")).expect("kept exists");
    assert_eq!(kept.shown_items().len(), 4, "a claim being deleted still shows its items");
    assert_eq!(pool_status(&op.pool)["allocated"], 4);
    kubectl_ok(
        &[
            "patch",
            "claim",
            "kept",
            "-n",
            &op.ns,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    op.bound("next", Duration::from_secs(30), "next binds once kept is gone").await;
    assert_eq!(audit(&[&op.pool]).await, Ok(2));
}
