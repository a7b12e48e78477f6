//! `make bench`: how fast the operator binds claims, per lock backend and replica count, and
//! how much memory a replica uses. Real servers, the release binary; prints a table.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{
    Replicas, bound_reason, claims_in, create_claim, install, kubectl_ok, lock_etcd, namespace, pool_yaml,
    unique,
};

const CLAIMS: usize = 300;

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn run(backend: &str, replicas_n: usize) -> (f64, f64) {
    let kubeconfig = install().await;
    let replicas = Replicas::start(replicas_n, &kubeconfig, &lock_etcd());
    let pool = unique("bench");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&pool, "{range: {start: 1, end: 10000}}", backend)));
    let ns = vec![namespace("bench").await];
    tokio::time::sleep(Duration::from_secs(1)).await; // caches synced
    let started = Instant::now();
    for i in 0..CLAIMS {
        create_claim(&ns[0], &format!("c{i}"), &pool, 1).await;
    }
    loop {
        let claims = claims_in(&ns).await;
        if claims.iter().filter(|c| bound_reason(c).is_some_and(|(s, _)| s == "True")).count() == CLAIMS {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            panic!("not all claims bound\n{}", replicas.tails());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = CLAIMS as f64 / started.elapsed().as_secs_f64();
    let rss = (0..replicas_n).filter_map(|i| replicas.pid(i).and_then(peak_rss_mib)).fold(0.0, f64::max);
    (rate, rss)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        println!("\nlockguard reconcile benchmark: {CLAIMS} claims of 1 item created one by one, one pool\n");
        println!(
            "| {:<8} | {:>8} | {:>14} | {:>16} |",
            "backend", "replicas", "claims bound/s", "peak RSS MiB/rep"
        );
        println!("|{:-<10}|{:->10}|{:->16}|{:->18}|", "", "", "", "");
        for backend in ["Etcd", "Lease"] {
            for replicas in [1, 3] {
                let (rate, rss) = run(backend, replicas).await;
                println!("| {backend:<8} | {replicas:>8} | {rate:>14.1} | {rss:>16.1} |");
            }
        }
    });
}
