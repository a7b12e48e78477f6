//! The lock etcd reaches its quota (its own test binary: its replicas use their own lock etcd,
//! and replicas of another test in the same binary, on another etcd, would say why they fail
//! on this test's claims too).

mod support;

use std::time::Duration;

use support::{Operator, apply, audit};

/// The lock etcd reaches its quota (the NOSPACE alarm): no replica crashes, the pool and the
/// claims that wait say `LockUnavailable` and what to do; after the documented repair
/// (delete, compact, defragment, disarm) the claims bind by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_etcd_out_of_space_is_reported_and_binds_again_after_the_repair() {
    use etcd_client::{AlarmAction, AlarmType, CompactionOptions, DeleteOptions};
    let dir = devenv::run_dir("nospace").expect("dir");
    let etcd =
        devenv::etcd::start_with(&dir, "full-etcd", &["--quota-backend-bytes=16777216"]).expect("etcd");
    let op = Operator::start_with(2, "nospace", &etcd.endpoint(), &[]).await;
    let short = |y: String| y.replace("acquireTimeoutSeconds: 20", "acquireTimeoutSeconds: 2");
    apply(&short(op.pool_yaml("{range: {start: 1, end: 100}}", "Etcd")));
    op.claim("before", 1).await;
    op.bound("before", Duration::from_secs(30), "bound while etcd has room").await;

    // Another user of the etcd fills it.
    let mut client = support::etcd_client(&etcd.endpoint()).await;
    let junk = vec![b'x'; 1 << 20];
    let mut puts = 0;
    loop {
        match client.put(format!("junk/{puts}"), junk.clone(), None).await {
            Ok(_) => puts += 1,
            Err(e) if e.to_string().contains("database space exceeded") => break,
            Err(e) => panic!("put {puts}: {e}"),
        }
        assert!(puts < 64, "a 16 MiB quota took {puts} MiB");
    }
    let alarms = client.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("alarms");
    assert!(
        alarms.alarms().iter().any(|a| a.alarm() == AlarmType::Nospace),
        "NOSPACE raised after {puts} puts"
    );

    op.claim("during", 1).await;
    op.reports("during", "LockUnavailable", Duration::from_secs(30), "the claim says why it waits").await;
    let said = support::bound_message(&op.ns, "during").await.unwrap_or_default();
    assert!(said.contains("NOSPACE") && said.contains("alarm disarm"), "{said}");
    let lock_healthy = || async {
        let status = support::kube_client().await;
        let pool = kube::Api::<lockguard::api::Pool>::all(status).get(&op.pool).await.expect("pool");
        let conditions = pool.status.map(|s| s.conditions).unwrap_or_default();
        conditions.into_iter().find(|c| c.type_ == "LockHealthy").map(|c| (c.status, c.reason, c.message))
    };
    let unhealthy = support::eventually(Duration::from_secs(30), || async {
        lock_healthy().await.filter(|(s, r, _)| s == "False" && r == "LockUnavailable")
    })
    .await;
    assert!(
        unhealthy.as_ref().is_some_and(|(_, _, m)| m.contains("NOSPACE")),
        "the pool says so: {unhealthy:?}"
    );

    // The repair docs/operations.md gives.
    let deleted = client.delete("junk/", Some(DeleteOptions::new().with_prefix())).await.expect("delete");
    let revision = deleted.header().map(|h| h.revision()).expect("a revision");
    client.compact(revision, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    client.defragment().await.expect("defragment");
    // As `etcdctl alarm disarm` does: each member's alarm by its member id.
    for alarm in alarms.alarms() {
        let mut member = etcd_client::AlarmOptions::new();
        member.with_member(alarm.member_id());
        client.alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(member)).await.expect("disarm");
    }
    let left = client.alarm(AlarmAction::Get, AlarmType::None, None).await.expect("alarms");
    assert!(left.alarms().is_empty(), "{} alarms left after the disarm", left.alarms().len());
    op.bound("during", Duration::from_secs(60), "bound after the repair").await;
    let healthy = support::eventually(Duration::from_secs(30), || async {
        lock_healthy().await.filter(|(s, _, _)| s == "True")
    })
    .await;
    assert!(healthy.is_some(), "the pool's lock is healthy again");
    let mut op = op;
    assert!(op.replicas.all_alive(), "no replica died\n{}", op.replicas.tails());
    assert_eq!(audit(&[&op.pool]).await, Ok(2));
}
