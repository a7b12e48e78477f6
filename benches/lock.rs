//! `make bench-lock`: lock latencies per backend against real servers, next to a raw etcd
//! put+delete measured in the same run. Prints a table; asserts nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lockguard_lock::etcd::{EtcdConfig, EtcdLock};
use lockguard_lock::lease::LeaseLock;
use lockguard_lock::{Lock, LockOptions, unique_identity};

const ROUNDS: usize = 300;
const CONTENDERS: usize = 8;
const HANDOFFS: usize = 240;

fn options() -> LockOptions {
    LockOptions::new(10, Duration::from_secs(60)).expect("options")
}

struct Row {
    what: String,
    samples: Vec<Duration>,
}

impl Row {
    fn new(what: impl Into<String>, mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { what: what.into(), samples }
    }

    fn pct(&self, p: f64) -> f64 {
        let i = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[i].as_secs_f64() * 1e3
    }
}

async fn raw_put_delete(client: &etcd_client::Client) -> Vec<Duration> {
    let mut client = client.clone();
    let mut samples = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let key = format!("bench/raw/{i}");
        let started = Instant::now();
        client.put(key.as_str(), "x", None).await.expect("put");
        client.delete(key.as_str(), None).await.expect("delete");
        samples.push(started.elapsed());
    }
    samples
}

async fn acquire_release(lock: &impl Lock, name: &str) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let guard = lock.acquire(name, options()).await.expect("acquire");
        guard.release().await.expect("release");
        samples.push(started.elapsed());
    }
    samples
}

/// CONTENDERS tasks take turns; each sample is the time from a holder's release call to the
/// moment the next holder's acquire returned.
async fn handoffs<L: Lock + 'static>(locks: Vec<L>, name: &str) -> Vec<Duration> {
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let mut tasks = Vec::new();
    for lock in locks {
        let (released_at, samples, name) = (released_at.clone(), samples.clone(), name.to_string());
        tasks.push(tokio::spawn(async move {
            for _ in 0..HANDOFFS / CONTENDERS {
                let guard = lock.acquire(&name, options()).await.expect("acquire");
                if let Some(at) = released_at.lock().expect("mutex").take() {
                    samples.lock().expect("mutex").push(at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                *released_at.lock().expect("mutex") = Some(Instant::now());
                guard.release().await.expect("release");
            }
        }));
    }
    for t in tasks {
        t.await.expect("contender");
    }
    samples.lock().expect("mutex").clone()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let dir = devenv::run_dir("bench-lock")?;
        let etcd = devenv::etcd::start_durable(&dir, "bench-etcd")?;
        let control_plane = devenv::ControlPlane::start(&dir.join("control-plane")).await?;
        let config = EtcdConfig::new([etcd.endpoint()]);
        let connect = || config.connect(Duration::from_secs(5));
        let raw_client = connect().await?;
        let kube = control_plane.client().await?;

        // Warm up connections and caches once.
        raw_put_delete(&raw_client).await;
        let etcd_lock = EtcdLock::new(connect().await?, unique_identity("bench"));
        let lease_lock = LeaseLock::new(kube.clone(), "default", unique_identity("bench"));

        let mut rows = vec![
            Row::new("etcd raw put+delete", raw_put_delete(&raw_client).await),
            Row::new(
                "etcd lock acquire+release (uncontended)",
                acquire_release(&etcd_lock, "bench/uncontended").await,
            ),
            Row::new(
                "Lease acquire+release (uncontended)",
                acquire_release(&lease_lock, "bench-uncontended").await,
            ),
        ];
        let mut etcd_contenders = Vec::new();
        let mut lease_contenders = Vec::new();
        for _ in 0..CONTENDERS {
            etcd_contenders.push(EtcdLock::new(connect().await?, unique_identity("bench")));
            lease_contenders.push(LeaseLock::new(
                control_plane.client().await?,
                "default",
                unique_identity("bench"),
            ));
        }
        rows.push(Row::new(
            format!("etcd handoff, {CONTENDERS} contenders"),
            handoffs(etcd_contenders, "bench/handoff").await,
        ));
        rows.push(Row::new(
            format!("Lease handoff, {CONTENDERS} contenders"),
            handoffs(lease_contenders, "bench-handoff").await,
        ));

        println!("\nlockguard lock benchmark (etcd with fsync, kube-apiserver on its own etcd; loopback)\n");
        println!("| {:<42} | {:>7} | {:>8} | {:>8} |", "operation", "samples", "p50 ms", "p99 ms");
        println!("|{:-<44}|{:->9}|{:->10}|{:->10}|", "", "", "", "");
        for row in &rows {
            println!(
                "| {:<42} | {:>7} | {:>8.2} | {:>8.2} |",
                row.what,
                row.samples.len(),
                row.pct(0.5),
                row.pct(0.99)
            );
        }
        let ratio = rows[1].pct(0.5) / rows[0].pct(0.5);
        println!("\netcd acquire+release / raw put+delete at p50: {ratio:.2}x");
        drop(control_plane);
        drop(etcd);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    })
}
