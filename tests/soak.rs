//! The lock etcd over months, compressed into minutes: lock acquisitions from the CLI and
//! from the operator churn against an etcd that compacts its history every few seconds (as
//! deploy/ configures it, only more often). Mutual exclusion holds (a counter the lock
//! protects equals the number of holds), every claim binds, and the database in use stays
//! flat. `LOCKGUARD_SOAK_SECONDS` sets its length (default 180), and
//! `LOCKGUARD_SOAK_COMPACTION=0` turns compaction off, to see the size check fail.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::GetOptions;
use support::{Operator, apply, audit_at_rest, kubectl_ok, lockguard_binary};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_a_compacting_lock_etcd_keeps_mutual_exclusion_and_a_flat_database() {
    let length = Duration::from_secs(env_or("LOCKGUARD_SOAK_SECONDS", "180").parse().expect("seconds"));
    let retention = env_or("LOCKGUARD_SOAK_COMPACTION", "2s");
    let dir = devenv::run_dir("soak").expect("dir");
    let compaction = format!("--auto-compaction-retention={retention}");
    let etcd = devenv::etcd::start_with(
        &dir,
        "soak-etcd",
        &["--auto-compaction-mode=periodic", &compaction, "--quota-backend-bytes=268435456"],
    )
    .expect("etcd");
    let endpoint = etcd.endpoint();
    let op = Operator::start_with(2, "soak", &endpoint, &[]).await;
    apply(&op.pool_yaml("{range: {start: 1, end: 40}}", "Etcd"));
    let stop = Arc::new(AtomicBool::new(false));

    // Three CLI users of one lock: each hold reads the counter, waits, writes it plus one.
    let counter = dir.join("counter");
    std::fs::write(&counter, "0").expect("counter");
    let holds = Arc::new(AtomicU64::new(0));
    let mut cli = Vec::new();
    for _ in 0..3 {
        let (stop, holds, counter, endpoint) =
            (stop.clone(), holds.clone(), counter.clone(), endpoint.clone());
        cli.push(std::thread::spawn(move || {
            let critical = format!("n=$(cat {0}); sleep 0.02; echo $((n + 1)) > {0}", counter.display());
            while !stop.load(Ordering::Acquire) {
                let status = Command::new(lockguard_binary())
                    .args([
                        "lock",
                        "--etcd-endpoints",
                        &endpoint,
                        "soak-counter",
                        "--",
                        "sh",
                        "-c",
                        &critical,
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("lockguard lock");
                if status.success() {
                    holds.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // Claims come and go through the operator: batches of 8, each bound, then deleted.
    let claims = {
        let (stop, ns, pool) = (stop.clone(), op.ns.clone(), op.pool.clone());
        tokio::spawn(async move {
            let (mut bound, mut unbound) = (0u64, Vec::new());
            for round in 0.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let names: Vec<String> = (0..8).map(|i| format!("r{round}-{i}")).collect();
                for (i, name) in names.iter().enumerate() {
                    support::create_claim(&ns, name, &pool, 1 + (i % 3) as i32).await;
                }
                let all = support::eventually(Duration::from_secs(30), || async {
                    support::reasons(&ns, &names).await.iter().all(|(s, _)| s == "True").then_some(())
                })
                .await;
                match all {
                    Some(()) => bound += names.len() as u64,
                    None => unbound.push(format!("round {round}: {:?}", support::reasons(&ns, &names).await)),
                }
                kubectl_ok(&["delete", "claims", "--all", "-n", &ns, "--wait=true", "--timeout=60s"], None);
            }
            (bound, unbound)
        })
    };

    // The database's size in use, every 5 s.
    let mut client = support::etcd_client(&endpoint).await;
    let started = Instant::now();
    let mut samples: Vec<(u64, i64, i64, i64)> = Vec::new();
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let status = client.status().await.expect("etcd status");
        let revision = status.header().map(|h| h.revision()).unwrap_or_default();
        samples.push((started.elapsed().as_secs(), revision, status.raft_used_db_size(), status.db_size()));
    }
    stop.store(true, Ordering::Release);
    for worker in cli {
        worker.join().expect("a CLI worker");
    }
    let (bound, unbound) = claims.await.expect("claims");
    let holds = holds.load(Ordering::Relaxed);
    let counted: u64 = std::fs::read_to_string(&counter).expect("counter").trim().parse().expect("a number");

    println!("soak: {}s, compaction every {retention}", started.elapsed().as_secs());
    println!("soak: {holds} CLI holds, counter {counted}; {bound} claims bound");
    println!("soak: (seconds, revision, db in use, db total) = {samples:?}");
    assert!(holds > 100, "the CLI churned: {holds} holds");
    assert_eq!(counted, holds, "mutual exclusion: every hold incremented the counter exactly once, alone");
    assert!(bound >= 80 && unbound.is_empty(), "{bound} claims bound; not bound: {unbound:?}");
    let mut op = op;
    assert!(op.replicas.all_alive(), "no replica died\n{}", op.replicas.tails());
    assert_eq!(audit_at_rest(&[&op.pool]).await, Ok(0), "the last round's deleted claims are freed");

    // Compacted: the history of the first sample is gone.
    let (_, first_revision, _, _) = samples[1];
    let old =
        client.get("soak-counter", Some(GetOptions::new().with_prefix().with_revision(first_revision))).await;
    assert!(
        old.as_ref().is_err_and(|e| e.to_string().contains("compacted")),
        "revision {first_revision} is not compacted: {:?}",
        old.map(|r| r.kvs().len())
    );
    // Flat: after the first 30 s the size in use stays under 448 KiB. This workload writes
    // about 55 revisions a second and each adds about 100 bytes in use while it is kept: with
    // compaction off it crosses that line after about a minute (1.5 MiB or more by the end).
    let settled: Vec<&(u64, i64, i64, i64)> = samples.iter().filter(|s| s.0 >= 30).collect();
    let (first, last) = (settled.first().expect("a sample"), settled.last().expect("a sample"));
    let most = settled.iter().map(|s| s.2).max().unwrap_or_default();
    assert!(last.1 - first.1 > 1_000, "revisions went on: {first:?} → {last:?}");
    assert!(most < 448 << 10, "the size in use reached {most} bytes: {samples:?}");
}
