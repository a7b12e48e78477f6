//! `make bench`: how fast the operator binds claims. Each run gets a control plane and a
//! lock etcd of its own, release-built replicas under the deploy/ RBAC, and claims created
//! the way users create them (or, for the backlog, before the replicas start); it prints a
//! table and writes three SVG plots.
//!
//! `LOCKGUARD_BENCH=burst1000,backlog1000,burst4000,onebyone300,pools20x100,scale20000` picks
//! scenarios,
//! `LOCKGUARD_BENCH_BACKENDS=Etcd,Lease` and `LOCKGUARD_BENCH_REPLICAS=1,3` the rest;
//! `LOCKGUARD_BIN` benchmarks another build; `LOCKGUARD_BENCH_SHARD=false` runs the replicas
//! with `--shard=false` (every replica serves every pool); `LOCKGUARD_BENCH_PLOTS=dir` (default
//! docs/bench) says where the plots go.
//!
//! Each replica runs one async worker thread, as it does in the Deployment's pod: tokio sizes
//! its pool by `available_parallelism`, which a `limits.cpu` of 500m makes 1, while on this
//! machine every process would start two. `LOCKGUARD_BENCH_WORKERS=N` runs N (0: tokio's own
//! choice).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use lockguard::api::{Claim, ClaimSpec, Pool};
use plotters::prelude::*;
use support::{Replicas, Spec, bound_reason, install_on};

/// Claims created at once are sent with this many requests in flight.
const IN_FLIGHT: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Clone, Copy)]
struct Scenario {
    id: &'static str,
    title: &'static str,
    pools: usize,
    claims_per_pool: usize,
    at_once: bool,
    /// Created while no replica runs; the clock starts when the replicas start again.
    backlog: bool,
}

const fn scenario(id: &'static str, title: &'static str, pools: usize, claims_per_pool: usize) -> Scenario {
    Scenario { id, title, pools, claims_per_pool, at_once: true, backlog: false }
}

const SCENARIOS: [Scenario; 6] = [
    scenario("burst1000", "1,000 at once", 1, 1000),
    Scenario { backlog: true, ..scenario("backlog1000", "1,000 waiting", 1, 1000) },
    scenario("burst4000", "4,000 at once", 1, 4000),
    Scenario { at_once: false, ..scenario("onebyone300", "300 one by one", 1, 300) },
    scenario("pools20x100", "20 pools × 100", 20, 100),
    scenario("scale20000", "200 pools × 100", 200, 100),
];

struct Figures {
    scenario: Scenario,
    backend: String,
    replicas: usize,
    claims: usize,
    seconds: f64,
    /// Per claim: seconds from the start to its Bound, and its bind latency.
    bound: Vec<(f64, f64)>,
    ledger_writes: f64,
    api_requests: f64,
    peak_rss_mib: f64,
    /// CPU seconds while the claims were bound: all replicas, and the API server.
    operator_cpu: f64,
    apiserver_cpu: f64,
    /// Seconds a replica started after the claims were bound took to be Ready.
    startup: Option<f64>,
    /// A backlog's: the rate of a plain client's first status writes to as many new claims
    /// on the same API server right after, as lockguard writes them, a claim watch open.
    same_server_ceiling: Option<f64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.claims as f64 / self.seconds
    }

    fn latency_ms(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self.bound.iter().map(|b| b.1).collect();
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default() * 1e3
    }
}

/// A control plane, a lock etcd and the operator's kubeconfig, for one run.
struct Servers {
    control_plane: devenv::ControlPlane,
    lock_etcd: devenv::EtcdServer,
    operator_kubeconfig: PathBuf,
    client: kube::Client,
}

async fn servers() -> Servers {
    let dir = devenv::run_dir("bench").expect("run dir");
    let control_plane = devenv::ControlPlane::start(&dir).await.expect("control plane");
    let lock_etcd = devenv::etcd::start_single(&dir, "lock-etcd").expect("lock etcd");
    let operator_kubeconfig = install_on(&control_plane).await;
    let client = control_plane.client().await.expect("admin client");
    Servers { control_plane, lock_etcd, operator_kubeconfig, client }
}

/// The replicas' `--concurrency`: the operator's default unless `LOCKGUARD_BENCH_CONCURRENCY`.
fn concurrency() -> u16 {
    std::env::var("LOCKGUARD_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(lockguard::cli::run::DEFAULT_CONCURRENCY)
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| v.split(',').map(str::trim).map(String::from).collect())
}

/// From the API server's request counter: requests for lockguard's resources, Events and
/// Leases, and of those the ledger writes (status updates of pools).
fn api_requests(breakdown: &HashMap<String, f64>) -> (f64, f64) {
    // Keys are "VERB resource" or "VERB resource/subresource".
    let resource = |key: &str| key.split([' ', '/']).nth(1).unwrap_or_default().to_string();
    let ours = ["claims", "pools", "events", "leases"];
    let requests =
        breakdown.iter().filter(|(k, _)| ours.contains(&resource(k).as_str())).map(|(_, n)| n).sum();
    let ledger = ["PUT pools/status", "PATCH pools/status"].iter().filter_map(|k| breakdown.get(*k)).sum();
    (requests, ledger)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 12th, 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The API server's requests by resource, subresource and verb.
async fn request_breakdown(client: &kube::Client) -> HashMap<String, f64> {
    let request = axum::http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.unwrap_or_default();
    let label = |line: &str, name: &str| {
        let at = line.find(&format!("{name}=\"")).map(|i| i + name.len() + 2)?;
        Some(line[at..].split('"').next()?.to_string())
    };
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let key = format!(
            "{} {}{}",
            label(line, "verb").unwrap_or_default(),
            label(line, "resource").unwrap_or_default(),
            label(line, "subresource").filter(|s| !s.is_empty()).map(|s| format!("/{s}")).unwrap_or_default()
        );
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_default();
        *out.entry(key).or_default() += value;
    }
    out
}

fn print_breakdown(before: &HashMap<String, f64>, after: &HashMap<String, f64>) {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or_default()))
        .filter(|r| r.1 > 0.0)
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (key, n) in rows.iter().take(12) {
        println!("    {n:>7.0}  {key}");
    }
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn pool_yaml(name: &str, capacity: usize, backend: &str) -> String {
    format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\n\
         spec: {{items: {{range: {{start: 1, end: {capacity}}}}}, lock: {{backend: {backend}, ttlSeconds: 10, acquireTimeoutSeconds: 30}}}}\n"
    )
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
}

async fn run(scenario: Scenario, backend: &str, replicas_n: usize) -> Figures {
    let servers = servers().await;
    let client = servers.client.clone();
    let mut kubectl = servers.control_plane.kubectl().expect("kubectl");
    let pools: Vec<String> = (0..scenario.pools).map(|i| format!("bench-{i}")).collect();
    let yaml: String = pools.iter().map(|p| pool_yaml(p, 65_536, backend) + "---\n").collect();
    let mut child = kubectl
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kubectl");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), yaml.as_bytes()).expect("write pools");
    assert!(child.wait().expect("kubectl").success(), "kubectl apply pools");
    create_namespace(&client, "bench").await;

    let concurrency = format!("--concurrency={}", concurrency());
    let shard = format!("--shard={}", std::env::var("LOCKGUARD_BENCH_SHARD").as_deref().unwrap_or("true"));
    let mut replicas =
        Replicas::none(&servers.operator_kubeconfig, &servers.lock_etcd.endpoint(), &[&concurrency, &shard]);
    for _ in 0..replicas_n {
        replicas.add_spec(replica_spec());
    }
    // Wait until every pool is protected (the replicas are up and their caches synced).
    let pool_api: Api<Pool> = Api::all(client.clone());
    let ready = Instant::now();
    loop {
        let list = pool_api.list(&Default::default()).await.expect("pools");
        if list.items.iter().filter(|p| p.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty())).count()
            == pools.len()
        {
            break;
        }
        assert!(ready.elapsed() < Duration::from_secs(60), "pools not ready\n{}", replicas.tails());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bound times, seen by a watch.
    let claims: Api<Claim> = Api::namespaced(client.clone(), "bench");
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let bound = bound.clone();
        let claims = claims.clone();
        tokio::spawn(async move {
            let stream = watcher(claims, watcher::Config::default()).applied_objects();
            let _ = stream
                .try_for_each(|claim| {
                    let bound = bound.clone();
                    async move {
                        if bound_reason(&claim).is_some_and(|(s, _)| s == "True") {
                            let name = claim.metadata.name.unwrap_or_default();
                            bound.lock().expect("bound").entry(name).or_insert_with(Instant::now);
                        }
                        Ok(())
                    }
                })
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let breakdown_before = request_breakdown(&client).await;
    let requests_before = api_requests(&breakdown_before);
    // CPU seconds of each replica, and of the API server, so far.
    let replica_cpu =
        |r: &Replicas| (0..replicas_n).map(|i| r.pid(i).map_or(0.0, cpu_seconds)).collect::<Vec<_>>();
    let apiserver_pid = servers.control_plane.apiserver_pid();
    let mut cpu_before = (replica_cpu(&replicas), cpu_seconds(apiserver_pid));
    let total = scenario.pools * scenario.claims_per_pool;
    if scenario.backlog {
        for i in 0..replicas_n {
            replicas.terminate(i, Duration::from_secs(30));
        }
    }
    let mut started = Instant::now();
    let create = |i: usize| {
        let (claims, created, pool) = (claims.clone(), created.clone(), pools[i % pools.len()].clone());
        async move {
            let name = format!("c{i}");
            let claim = Claim::new(&name, ClaimSpec { pool_ref: pool, count: 1, items: None });
            created.lock().expect("created").insert(name, Instant::now());
            claims.create(&PostParams::default(), &claim).await.expect("create claim");
        }
    };
    if scenario.at_once {
        stream::iter(0..total).map(create).buffer_unordered(IN_FLIGHT).collect::<Vec<_>>().await;
    } else {
        for i in 0..total {
            create(i).await;
        }
    }
    if scenario.backlog {
        // Every claim waits from now on; their creates are outside the clock.
        started = Instant::now();
        created.lock().expect("created").values_mut().for_each(|at| *at = started);
        for i in 0..replicas_n {
            replicas.restart(i);
        }
        cpu_before = (vec![0.0; replicas_n], cpu_seconds(apiserver_pid));
    }
    // A backlog's time splits into the start-up (to the first replica's Ready) and the binding.
    let mut ready_after = None;
    loop {
        if scenario.backlog && ready_after.is_none() && replicas.is_ready(0) {
            ready_after = Some(started.elapsed().as_secs_f64());
        }
        if bound.lock().expect("bound").len() >= total {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "not all claims bound\n{}", replicas.tails());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bound = bound.lock().expect("bound").clone();
    let created = created.lock().expect("created").clone();
    let last = bound.values().max().copied().unwrap_or(started);
    if let Some(ready) = ready_after {
        let first = bound.values().min().map_or(0.0, |at| at.duration_since(started).as_secs_f64());
        println!(
            "|   backlog: the first replica Ready after {ready:.2} s, the first claim bound after {first:.2} s, the last after {:.2} s",
            last.duration_since(started).as_secs_f64()
        );
    }
    let each_cpu: Vec<f64> = replica_cpu(&replicas).iter().zip(&cpu_before.0).map(|(a, b)| a - b).collect();
    let (operator_cpu, apiserver_cpu) =
        (each_cpu.iter().sum::<f64>(), cpu_seconds(apiserver_pid) - cpu_before.1);
    let breakdown_after = request_breakdown(&client).await;
    let after = api_requests(&breakdown_after);
    if std::env::var_os("LOCKGUARD_BENCH_VERBOSE").is_some() {
        print_breakdown(&breakdown_before, &breakdown_after);
        let each: Vec<String> = each_cpu.iter().map(|cpu| format!("{cpu:.2}")).collect();
        println!("    CPU s per replica: {}", each.join(", "));
    }
    let (requests, ledger_writes) = (after.0 - requests_before.0 - total as f64, after.1 - requests_before.1);
    watch.abort();
    let peak_rss_mib =
        (0..replicas_n).filter_map(|i| replicas.pid(i).and_then(peak_rss_mib)).fold(0.0, f64::max);
    let mut points: Vec<(f64, f64)> = bound
        .iter()
        .filter_map(|(name, at)| {
            let from = created.get(name)?;
            Some((at.duration_since(started).as_secs_f64(), at.duration_since(*from).as_secs_f64()))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let startup = start_up(&mut replicas).await;
    let same_server_ceiling = if scenario.backlog {
        for i in 0..replicas.len() {
            replicas.terminate(i, Duration::from_secs(30));
        }
        Some(first_status_writes(&client, total).await)
    } else {
        None
    };
    drop(replicas);
    Figures {
        scenario,
        backend: backend.to_string(),
        replicas: replicas_n,
        claims: total,
        seconds: last.duration_since(started).as_secs_f64(),
        bound: points,
        ledger_writes: ledger_writes / total as f64,
        api_requests: requests / total as f64,
        peak_rss_mib,
        operator_cpu,
        apiserver_cpu,
        startup,
        same_server_ceiling,
    }
}

/// A replica as the Deployment runs it: one async worker thread (see the top of this file).
fn replica_spec() -> Spec {
    let workers = std::env::var("LOCKGUARD_BENCH_WORKERS").unwrap_or_else(|_| "1".into());
    let env = if workers == "0" { Vec::new() } else { vec![("TOKIO_WORKER_THREADS".into(), workers)] };
    Spec { env, ..Spec::default() }
}

/// Starts one more replica with every claim present and times it to Ready (/readyz 200).
async fn start_up(replicas: &mut Replicas) -> Option<f64> {
    let started = Instant::now();
    let i = replicas.add_spec(replica_spec());
    while started.elapsed() < Duration::from_secs(120) {
        if replicas.is_ready(i) {
            return Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The API server's own rates on this machine, no operator running.
struct Ceiling {
    creates: f64,
    /// A small status (items and summary) from a tight loop.
    statuses: f64,
    /// The status lockguard writes when it binds a claim (the Bound condition, items,
    /// summary, token, pool uid) with its uid and resourceVersion preconditions.
    bound_statuses: f64,
    /// The same while a watch of the claims is open and read, as the operator's is.
    watched_bound_statuses: f64,
}

/// The API server's own rate on this machine for the writes a claim needs: creates, then
/// status writes from a tight loop, then the same writes as lockguard's, without and with a
/// watch of the claims. Status writes go as many at once as the replicas' reconciles.
async fn ceiling() -> Ceiling {
    let servers = servers().await;
    let client = servers.client.clone();
    create_namespace(&client, "ceiling").await;
    let claims: Api<Claim> = Api::namespaced(client, "ceiling");
    let n = 2000;
    let started = Instant::now();
    create_claims(&claims, n).await;
    let creates = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let written: Vec<Claim> = stream::iter(0..n)
        .map(|i| {
            let claims = claims.clone();
            async move {
                let status =
                    serde_json::json!({ "status": { "items": [i.to_string()], "summary": i.to_string() } });
                claims
                    .patch_status(&format!("c{i}"), &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .expect("status")
            }
        })
        .buffer_unordered(usize::from(concurrency()))
        .collect()
        .await;
    let statuses = n as f64 / started.elapsed().as_secs_f64();
    let (bound_statuses, written) = bound_status_writes(&claims, written, "x").await;
    let watch = tokio::spawn(watcher(claims.clone(), watcher::Config::default()).for_each(|_| async {}));
    let (watched_bound_statuses, _) = bound_status_writes(&claims, written, "y").await;
    watch.abort();
    Ceiling { creates, statuses, bound_statuses, watched_bound_statuses }
}

/// Claims `c0`…`c<n-1>` of pool `p` (which need not exist), `IN_FLIGHT` creates at once.
async fn create_claims(claims: &Api<Claim>, n: usize) -> Vec<Claim> {
    stream::iter(0..n)
        .map(|i| {
            let claims = claims.clone();
            async move {
                let claim =
                    Claim::new(&format!("c{i}"), ClaimSpec { pool_ref: "p".into(), count: 1, items: None });
                claims.create(&PostParams::default(), &claim).await.expect("create")
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await
}

/// On a run's own API server, its replicas stopped: the rate of `n` first status writes to
/// new claims, as lockguard writes them, a watch of the claims open (as the bench's is in
/// the run). The claims are created first, outside the clock.
async fn first_status_writes(client: &kube::Client, n: usize) -> f64 {
    create_namespace(client, "same-server").await;
    let claims: Api<Claim> = Api::namespaced(client.clone(), "same-server");
    let created = create_claims(&claims, n).await;
    let watch = tokio::spawn(watcher(claims.clone(), watcher::Config::default()).for_each(|_| async {}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rate, _) = bound_status_writes(&claims, created, "x").await;
    watch.abort();
    rate
}

/// Writes to each of `written` the Bound status lockguard would, showing item
/// `<prefix><name>`, under its uid and resourceVersion; the rate and the claims as written.
async fn bound_status_writes(claims: &Api<Claim>, written: Vec<Claim>, prefix: &str) -> (f64, Vec<Claim>) {
    use kube::ResourceExt;
    use lockguard::api::{BOUND, ClaimStatus, Reason, condition};
    let n = written.len();
    let started = Instant::now();
    let written: Vec<Claim> = stream::iter(written)
        .map(|claim| {
            let claims = claims.clone();
            async move {
                let item = format!("{prefix}{}", claim.name_any());
                let generation = claim.metadata.generation;
                let status = ClaimStatus {
                    observed_generation: generation,
                    items: vec![item.clone()],
                    summary: Some(item.clone()),
                    fencing_token: Some(7),
                    pool_uid: Some("0b6f4c3e-5a1d-4c2b-9e8f-7a6d5c4b3a21".into()),
                    conditions: vec![condition(
                        BOUND,
                        true,
                        Reason::Allocated,
                        format!("1 items from pool p: {item}"),
                        generation,
                    )],
                };
                let patch = serde_json::json!({
                    "metadata": { "uid": claim.uid(), "resourceVersion": claim.resource_version() },
                    "status": status,
                });
                claims
                    .patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("bound status")
            }
        })
        .buffer_unordered(usize::from(concurrency()))
        .collect()
        .await;
    (n as f64 / started.elapsed().as_secs_f64(), written)
}

/// For each scenario run with one and with three replicas: three against one, as the median
/// rate and the median operator CPU of the runs of each (`LOCKGUARD_BENCH_REPLICAS=1,3,1,3`
/// gives two runs of each), and whether three replicas were slower beyond run-to-run noise.
/// Runs alternate, and the machine's speed drifts between them, so each run of three is set
/// against the run of one in the same position: a pair shares the machine's state of the time.
fn print_replica_ratios(all: &[Figures]) {
    fn median(mut values: Vec<f64>) -> Option<f64> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        (n > 0).then(|| if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
    }
    for scenario in SCENARIOS {
        for backend in ["Etcd", "Lease"] {
            let runs = |replicas: usize| -> Vec<&Figures> {
                all.iter()
                    .filter(|f| {
                        f.scenario.id == scenario.id && f.backend == backend && f.replicas == replicas
                    })
                    .collect()
            };
            let (one, three) = (runs(1), runs(3));
            let rates = |runs: &[&Figures]| median(runs.iter().map(|f| f.rate()).collect());
            let cpus = |runs: &[&Figures]| median(runs.iter().map(|f| f.operator_cpu).collect());
            let (Some(r1), Some(r3), Some(c1), Some(c3)) =
                (rates(&one), rates(&three), cpus(&one), cpus(&three))
            else {
                continue;
            };
            let pairs: Vec<f64> = three.iter().zip(&one).map(|(t, o)| t.rate() / o.rate()).collect();
            let each: Vec<String> = pairs.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "{} ({backend}), 3 replicas against 1 (medians of {} and {} runs): rate {:.2}×, operator CPU {:.2}×; pair by pair {}×, chance of pairs this slow by noise alone: {:.0} %",
                scenario.title,
                three.len(),
                one.len(),
                r3 / r1,
                c3 / c1,
                each.join(", "),
                100.0 * chance_as_slow(&pairs)
            );
        }
    }
}

/// The one-sided exact Wilcoxon signed-rank test over ratios of paired runs: if the ratios were
/// as likely above 1 as below, the chance of a rank sum above 1 as small as theirs.
fn chance_as_slow(ratios: &[f64]) -> f64 {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).filter(|d| *d != 0.0).collect();
    let mut order: Vec<usize> = (0..logs.len()).collect();
    order.sort_by(|a, b| logs[*a].abs().total_cmp(&logs[*b].abs()));
    let mut rank = vec![0.0; logs.len()];
    for (r, i) in order.iter().enumerate() {
        rank[*i] = r as f64 + 1.0;
    }
    let above =
        |signs: u32| -> f64 { (0..logs.len()).filter(|i| signs >> i & 1 == 1).map(|i| rank[i]).sum() };
    let observed = (0..logs.len()).filter(|i| logs[*i] > 0.0).map(|i| rank[i]).sum::<f64>();
    // Every way of giving the ranks signs is equally likely under the null.
    let all = 1_u32 << logs.len();
    (0..all).filter(|signs| above(*signs) <= observed).count() as f64 / all as f64
}

fn plot_rates(figures: &[Figures], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let groups: Vec<&'static str> =
        SCENARIOS.iter().filter(|s| figures.iter().any(|f| f.scenario.id == s.id)).map(|s| s.title).collect();
    let series: Vec<(String, usize)> = {
        let mut v: Vec<(String, usize)> = figures.iter().map(|f| (f.backend.clone(), f.replicas)).collect();
        v.sort();
        v.dedup();
        v
    };
    let top = figures.iter().map(Figures::rate).fold(0.0, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption("claims bound per second (one pool unless said)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..top.max(1.0))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (x - 0.5).round();
            if (x - 0.5 - i).abs() < 0.01 && i >= 0.0 {
                groups.get(i as usize).map(|g| g.to_string()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("claims/s")
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, (backend, replicas)) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        let bars =
            figures.iter().filter(|f| &f.backend == backend && f.replicas == *replicas).filter_map(|f| {
                let g = groups.iter().position(|t| *t == f.scenario.title)? as f64;
                let x0 = g + 0.1 + width * k as f64;
                Some(Rectangle::new([(x0, 0.0), (x0 + width * 0.9, f.rate())], color.filled()))
            });
        chart
            .draw_series(bars)?
            .label(format!("{backend}, {replicas} replica{}", if *replicas == 1 { "" } else { "s" }))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

/// Per scenario, against the number of replicas: claims bound per second (left) and the
/// operator's CPU seconds per 1,000 claims, all replicas together (right).
fn plot_scaling(figures: &[Figures], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let counts: Vec<usize> = {
        let mut v: Vec<usize> = figures.iter().map(|f| f.replicas).collect();
        v.sort();
        v.dedup();
        v
    };
    if counts.len() < 2 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (1080, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(540);
    let cpu_per_1000 = |f: &Figures| f.operator_cpu * 1000.0 / f.claims as f64;
    type Value<'a> = &'a dyn Fn(&Figures) -> f64;
    let panels: [(_, &str, &str, Value); 2] = [
        (left, "claims bound per second", "claims/s", &Figures::rate),
        (right, "operator CPU per 1,000 claims", "CPU s (all replicas)", &cpu_per_1000),
    ];
    let (lowest, highest) = (counts[0] as f64 - 0.25, counts[counts.len() - 1] as f64 + 0.25);
    for (area, caption, unit, value) in panels {
        let top = figures.iter().map(value).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&area)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(lowest..highest, 0f64..top.max(0.1))?;
        chart
            .configure_mesh()
            .x_labels(counts.len())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("replicas")
            .y_desc(unit)
            .draw()?;
        for (k, scenario) in SCENARIOS.iter().enumerate() {
            let mut points: Vec<(f64, f64)> = figures
                .iter()
                .filter(|f| f.scenario.id == scenario.id)
                .map(|f| (f.replicas as f64, value(f)))
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = Palette99::pick(k).to_rgba();
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(scenario.title)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    }
    root.present()?;
    Ok(())
}

fn plot_latency(figures: &[Figures], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let runs: Vec<&Figures> = figures.iter().filter(|f| f.scenario.id == "burst1000").collect();
    if runs.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let x_max = runs.iter().flat_map(|f| f.bound.iter().map(|b| b.0)).fold(0.0, f64::max) * 1.05;
    let y_max = runs.iter().flat_map(|f| f.bound.iter().map(|b| b.1)).fold(0.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("1,000 claims at once: bind latency of each claim, by when it was bound", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max.max(0.1), 0f64..y_max.max(0.1))?;
    chart.configure_mesh().x_desc("seconds since the first create").y_desc("creation → Bound, s").draw()?;
    for (k, f) in runs.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(f.bound.iter().map(|&(x, y)| Circle::new((x, y), 2, color.filled())))?
            .label(format!("{}, {} replica{}", f.backend, f.replicas, if f.replicas == 1 { "" } else { "s" }))
            .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let scenarios = env_list("LOCKGUARD_BENCH");
    let backends = env_list("LOCKGUARD_BENCH_BACKENDS").unwrap_or(vec!["Etcd".into(), "Lease".into()]);
    let replica_counts: Vec<usize> = env_list("LOCKGUARD_BENCH_REPLICAS")
        .map(|v| v.iter().filter_map(|r| r.parse().ok()).collect())
        .unwrap_or(vec![1, 3]);
    let plots = std::env::var_os("LOCKGUARD_BENCH_PLOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo().join("docs/bench"));
    runtime.block_on(async {
        println!(
            "\nlockguard throughput: claims of 1 item, {} binary, --concurrency={}\n",
            support::lockguard_binary().display(),
            concurrency()
        );
        println!(
            "| {:<16} | {:<5} | {:>3} | {:>8} | {:>7} | {:>7} | {:>7} | {:>12} | {:>11} | {:>7} | {:>13} |",
            "scenario", "lock", "rep", "claims/s", "seconds", "p50 ms", "p99 ms", "ledger w/claim", "API req/claim", "RSS MiB", "CPU s op/api"
        );
        println!(
            "|{:-<18}|{:-<7}|{:->5}|{:->10}|{:->9}|{:->9}|{:->9}|{:->14}|{:->13}|{:->9}|{:->15}|",
            "", "", "", "", "", "", "", "", "", "", ""
        );
        let mut all = Vec::new();
        for scenario in SCENARIOS.iter().filter(|s| scenarios.as_ref().is_none_or(|l| l.iter().any(|x| x == s.id))) {
            for backend in &backends {
                for &replicas in &replica_counts {
                    let f = run(*scenario, backend, replicas).await;
                    println!(
                        "| {:<16} | {:<5} | {:>3} | {:>8.1} | {:>7.1} | {:>7.0} | {:>7.0} | {:>14.3} | {:>13.1} | {:>7.1} | {:>6.2} / {:>5.1} |",
                        scenario.title,
                        backend,
                        replicas,
                        f.rate(),
                        f.seconds,
                        f.latency_ms(0.5),
                        f.latency_ms(0.99),
                        f.ledger_writes,
                        f.api_requests,
                        f.peak_rss_mib,
                        f.operator_cpu,
                        f.apiserver_cpu
                    );
                    if let Some(seconds) = f.startup {
                        println!("|   a replica started with {} claims present: Ready in {seconds:.2} s", f.claims);
                    }
                    all.push(f);
                }
            }
        }
        let Ceiling { creates, statuses, bound_statuses, watched_bound_statuses } = ceiling().await;
        println!(
            "\nAPI server ceiling on this machine (no operator; {IN_FLIGHT} creates, {} status writes in flight): {creates:.0} claim creates/s; status writes/s: {statuses:.0} small, {bound_statuses:.0} as lockguard writes them (Bound condition, preconditions), {watched_bound_statuses:.0} the same with a claim watch open",
            concurrency()
        );
        for f in all.iter().filter(|f| f.scenario.backlog) {
            let share = |ceiling: f64| 100.0 * f.rate() / ceiling;
            let here = f.same_server_ceiling.unwrap_or(f64::NAN);
            println!(
                "{} with {} replica{} ({}): {:.1} claims/s; of the status-write ceilings: {:.0} % small, {:.0} % lockguard's, {:.0} % lockguard's watched; {:.0} % of the same writes to as many new claims on its own API server right after ({here:.0}/s)",
                f.scenario.title,
                f.replicas,
                if f.replicas == 1 { "" } else { "s" },
                f.backend,
                f.rate(),
                share(statuses),
                share(bound_statuses),
                share(watched_bound_statuses),
                share(here)
            );
        }
        print_replica_ratios(&all);
        // Repeats (`LOCKGUARD_BENCH_REPLICAS=1,2,3,1,3`) count in the ratios above; the plots
        // show one run of each configuration, the first.
        let mut seen = std::collections::HashSet::new();
        let first_runs: Vec<Figures> = all
            .into_iter()
            .filter(|f| seen.insert((f.scenario.id, f.backend.clone(), f.replicas)))
            .collect();
        if std::fs::create_dir_all(&plots).is_ok() {
            for (name, result) in [
                ("throughput-replicas.svg", plot_scaling(&first_runs, &plots.join("throughput-replicas.svg"))),
                ("throughput.svg", plot_rates(&first_runs, &plots.join("throughput.svg"))),
                ("latency-burst1000.svg", plot_latency(&first_runs, &plots.join("latency-burst1000.svg"))),
            ] {
                match result {
                    Ok(()) => println!("plot: {}", plots.join(name).display()),
                    Err(e) => println!("plot {name} failed: {e}"),
                }
            }
        }
    });
}
