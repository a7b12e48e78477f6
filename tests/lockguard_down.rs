//! Lockguard down: a claim carries no finalizer, so a namespace full of claims goes while no
//! replica runs, and the items come back once one runs again. Its own test binary: replicas
//! of other tests would be running.

mod support;

use std::time::Duration;

use support::{Operator, audit, create_claim, kubectl, kubectl_ok, namespace};

fn pool_status(pool: &str) -> serde_json::Value {
    let json = kubectl_ok(&["get", "pool", pool, "-o", "json"], None);
    serde_json::from_str::<serde_json::Value>(&json).expect("pool json")["status"].clone()
}

/// A claim carries no finalizer: a namespace full of claims goes while no replica runs, and
/// the items come back once one runs again (freed late, never lost, never given twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_of_claims_goes_while_lockguard_is_down_and_its_items_come_back() {
    support::install().await;
    devenv::shared().controllers(); // the namespace controller deletes what a namespace holds
    let mut op = Operator::start(1, "down").await;
    op.apply_pool("{range: {start: 1, end: 10}}", "Etcd");
    let doomed = namespace("down-x").await;
    for name in ["a", "b", "c"] {
        create_claim(&doomed, name, &op.pool, 2).await;
    }
    op.replicas
        .eventually(Duration::from_secs(30), "the claims bound", || async {
            let claims = support::claims_in(std::slice::from_ref(&doomed)).await;
            (claims.len() == 3 && claims.iter().all(|c| c.is_bound())).then_some(())
        })
        .await;
    op.replicas.kill(0);
    let out = kubectl(&["delete", "namespace", &doomed, "--wait=true", "--timeout=60s"], None);
    assert!(
        out.status.success(),
        "the namespace hung while lockguard was down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Held until a replica sees them gone: nobody else got them meanwhile.
    assert_eq!(pool_status(&op.pool)["allocated"], 6, "{}", pool_status(&op.pool));
    op.replicas.restart(0);
    let freed = support::eventually(Duration::from_secs(30), || async {
        (pool_status(&op.pool)["free"] == 10).then_some(())
    })
    .await;
    assert!(freed.is_some(), "the gone claims' items: {}", pool_status(&op.pool));
    assert_eq!(audit(&[&op.pool]).await, Ok(0));
}
