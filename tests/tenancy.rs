//! Pools shared by tenants (namespaces): one namespace's claim that does not fit stalls only
//! its own namespace.

mod support;

use std::time::Duration;

use support::{Operator, audit, create_claim, kubectl_ok, namespace, reasons};

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_growth_in_one_namespace_does_not_stall_another() {
    let op = Operator::start(2, "fair").await;
    op.apply_pool("{range: {start: 1, end: 40}}", "Etcd");
    let other = namespace("fair-b").await;
    // Team A holds 15 of 40 items, then asks for 30 more than its 5: 25 are free.
    op.claim("filler", 10).await;
    op.claim("big", 5).await;
    op.all_bound(&["filler", "big"], Duration::from_secs(30), "team A bound").await;
    let grow = r#"{"spec":{"count":35}}"#;
    kubectl_ok(&["patch", "claim", "big", "-n", &op.ns, "--type=merge", "-p", grow], None);
    op.reports("big", "PoolExhausted", Duration::from_secs(30), "the growth does not fit").await;
    op.claim("young", 1).await;

    // Team B's 20 new claims fit in what is free: they bind while team A's growth waits.
    let names: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
    for name in &names {
        create_claim(&other, name, &op.pool, 1).await;
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
    let yaml = op
        .pool_yaml("{range: {start: 1, end: 20}}", "Etcd")
        .replace("lock:", "fairness: {maxWaitSeconds: 3}, lock:");
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
