//! Pools divided between replicas: each pool is served by one live member (rendezvous hashing
//! over the replicas' member Leases), a killed member's pools go to the others once its Lease
//! expires, a stopped one's at once, and a joining member takes its share. The pool lock stays
//! the fence throughout; the audit checks that no item is held twice.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lockguard::controller::pool_owner;
use support::{Operator, apply, audit, create_claim, pool_yaml, reasons, unique};

/// The identities of the replicas still running: not killed or stopped here (the harness
/// forgets their process), not exited by themselves, not frozen.
fn live(op: &mut Operator) -> Vec<String> {
    let dead = op.replicas.dead();
    let mut ids: Vec<String> = (0..op.replicas.len())
        .filter(|i| op.replicas.pid(*i).is_some() && !dead.contains(i) && !op.replicas.is_stopped(*i))
        .map(|i| op.replicas.identity(i).to_string())
        .collect();
    ids.sort();
    ids
}

/// Which replica (index) wrote each pool's ledger last, from the replicas' logs.
fn writers(op: &Operator, pools: &[String]) -> BTreeMap<String, Vec<usize>> {
    pools
        .iter()
        .map(|pool| {
            let needle = format!("pool={pool} ");
            let by: Vec<usize> = (0..op.replicas.len())
                .filter(|&i| {
                    op.replicas.log(i).lines().any(|l| l.contains("ledger written") && l.contains(&needle))
                })
                .collect();
            (pool.clone(), by)
        })
        .collect()
}

async fn bound_all(op: &Operator, ns: &str, names: &[String], timeout: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let done = support::eventually(timeout, || async {
        reasons(ns, names).await.iter().all(|(s, _)| s == "True").then_some(())
    })
    .await;
    if done.is_none() {
        op.replicas.fail(&format!("{what}: {:?}", reasons(ns, names).await));
    }
    started.elapsed()
}

/// Pool names (prefixed `prefix`) of which `member` is the owner among `members`.
fn pools_of(prefix: &str, member: &str, members: &[String], n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .filter(|p| pool_owner(p, members) == Some(member))
        .take(n)
        .collect()
}

/// Waits until the claims and the pools cached by the live replicas add up to `claims` and
/// `pools`, each in the cache of the one replica that serves the pool (every replica cached
/// all of them before the watches left out the pools of the others).
async fn cached_once(op: &Operator, claims: usize, pools: usize, when: &str) {
    let what =
        format!("{when}: the replicas' caches do not hold each of {claims} claims and {pools} pools once");
    let (claims, pools) = op
        .replicas
        .eventually(Duration::from_secs(15), &what, || async {
            let cached = op.replicas.metric_sum("lockguard_cached_claims");
            let pooled = op.replicas.metric_sum("lockguard_cached_pools");
            (cached == claims as f64 && pooled == pools as f64).then_some((cached, pooled))
        })
        .await;
    eprintln!("sharding: {when}, {claims} claims and {pools} pools cached over the live replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_divided_and_follow_members_that_die_stop_and_join() {
    // The default member Lease (10 s), so that the failover below is measured as shipped.
    let mut op =
        Operator::start_with(3, "shard", &support::lock_etcd(), &["--member-lease-seconds", "10"]).await;
    let base = unique("shard");
    // Three pools per replica, named so that each replica serves three of them.
    let members = live(&mut op);
    let pools: Vec<String> = members
        .iter()
        .enumerate()
        .flat_map(|(k, m)| pools_of(&format!("{base}-{k}"), m, &members, 3))
        .collect();
    for pool in &pools {
        apply(&pool_yaml(pool, "{range: {start: 1, end: 100}}", "Etcd"));
    }
    // Let every replica see every member before the burst (the member watch syncs first).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut names = Vec::new();
    for (p, pool) in pools.iter().enumerate() {
        for c in 0..5 {
            let name = format!("c{p}-{c}");
            create_claim(&op.ns, &name, pool, 2).await;
            names.push(name);
        }
    }
    bound_all(&op, &op.ns, &names, Duration::from_secs(60), "the burst").await;
    // Each pool's ledger was written by the one replica that serves it.
    for (pool, by) in writers(&op, &pools) {
        let owner = pool_owner(&pool, &members).expect("an owner");
        let expected: Vec<usize> = (0..3).filter(|&i| op.replicas.identity(i) == owner).collect();
        assert_eq!(by, expected, "pool {pool} written by {by:?}, served by {owner}");
    }
    // Each replica watches only the pools it serves and their claims: each is cached once.
    cached_once(&op, names.len(), pools.len(), "after the burst").await;

    // A member killed (no goodbye): its pools are served again once its Lease expires.
    let victim = 0;
    let victims: Vec<&String> =
        pools.iter().filter(|p| pool_owner(p, &members) == Some(op.replicas.identity(victim))).collect();
    let killed = op.replicas.identity(victim).to_string();
    op.replicas.kill(victim);
    assert!(!live(&mut op).contains(&killed), "a killed replica is not counted among the members");
    let after_kill: Vec<String> = victims.iter().map(|p| format!("k-{p}")).collect();
    for (name, pool) in after_kill.iter().zip(&victims) {
        create_claim(&op.ns, name, pool, 1).await;
    }
    let failover = bound_all(&op, &op.ns, &after_kill, Duration::from_secs(40), "after the kill").await;
    eprintln!(
        "sharding: a killed member's pools bound again after {:.1} s (member Lease 10 s)",
        failover.as_secs_f64()
    );

    // A member stopped (SIGTERM): it leaves, its pools move at once.
    let leaving = 1;
    let members = live(&mut op);
    let theirs: Vec<&String> =
        pools.iter().filter(|p| pool_owner(p, &members) == Some(op.replicas.identity(leaving))).collect();
    assert!(!theirs.is_empty(), "replica {leaving} serves no pool among {members:?}");
    assert!(
        op.replicas.terminate(leaving, Duration::from_secs(20)).is_some_and(|s| s.success()),
        "clean exit"
    );
    let after_stop: Vec<String> = theirs.iter().map(|p| format!("s-{p}")).collect();
    for (name, pool) in after_stop.iter().zip(&theirs) {
        create_claim(&op.ns, name, pool, 1).await;
    }
    let moved = bound_all(&op, &op.ns, &after_stop, Duration::from_secs(30), "after the stop").await;
    eprintln!("sharding: a stopped member's pools bound again after {:.1} s", moved.as_secs_f64());
    assert!(moved < Duration::from_secs(8), "a replica that left is not waited for ({moved:?})");

    // A member joins: it takes its share. Its share of these pools depends on the identities
    // drawn: a newcomer the hashing gives none of them (about one draw in 750) leaves again and
    // another one joins.
    let (joined, share) = loop {
        let joined = op.replicas.add();
        let members = live(&mut op);
        let share: Vec<&String> =
            pools.iter().filter(|p| pool_owner(p, &members) == Some(op.replicas.identity(joined))).collect();
        if !share.is_empty() {
            break (joined, share);
        }
        assert!(op.replicas.len() < 8, "no newcomer serves any of {} pools", pools.len());
        op.replicas.terminate(joined, Duration::from_secs(20));
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_join: Vec<String> = share.iter().map(|p| format!("j-{p}")).collect();
    for (name, pool) in after_join.iter().zip(&share) {
        create_claim(&op.ns, name, pool, 1).await;
    }
    bound_all(&op, &op.ns, &after_join, Duration::from_secs(30), "after the join").await;
    let by_new = writers(&op, &share.iter().map(|p| p.to_string()).collect::<Vec<_>>());
    assert!(by_new.values().all(|by| by.contains(&joined)), "the new member wrote its pools: {by_new:?}");

    let total = 5 * pools.len() + after_kill.len() + after_stop.len() + after_join.len();
    // The two left gave the new member its pools and their claims and stopped watching them.
    cached_once(&op, total, pools.len(), "after the kill, the stop and the join").await;
    let total = 5 * 2 * pools.len() + after_kill.len() + after_stop.len() + after_join.len();
    let pool_refs: Vec<&str> = pools.iter().map(String::as_str).collect();
    assert_eq!(audit(&pool_refs).await, Ok(total));
}
