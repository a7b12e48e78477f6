//! The chaos suite (`make chaos`): a real kube-apiserver, a 3-member lock etcd and three
//! supervised replicas of the real binary under the RBAC of deploy/rbac — one of them in its
//! own network namespace — while claims are created, resized, deleted and re-created under the
//! same names and pools are deleted and re-created. Faults are injected at random with a
//! printed seed (`LOCKGUARD_CHAOS_SEED` repeats a run): SIGKILL and SIGSTOP (past the TTL)
//! of a replica, a replica that leaves the members (SIGTERM) and joins again when restarted,
//! SIGKILL and SIGSTOP of the lock etcd's leader, a kube-apiserver restart,
//! and a partition of the namespaced replica from the lock etcd only. A recorder checks the
//! safety invariants at every revision; after the faults the cluster must converge and
//! `lockguard audit` must be clean.
//!
//! The negative control runs the same with the fence switched off (failpoint `fence-off`:
//! ledger writes without the token and the resourceVersion precondition) and must find a
//! violation: that proves the faults bite and the audit sees.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devenv::netns::Netns;
use devenv::{ControlPlane, EtcdCluster};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use lockguard::api::{Claim, ClaimSpec, Pool};
use lockguard::audit::history::Recorder;
use lockguard::audit::{Scope, audit};
use serde_json::json;
use support::{Replicas, Spec, install_on};

const TTL_SECONDS: u64 = 3;
const POOL_ITEMS: i64 = 20;
const CLAIM_NAMES: usize = 30;

/// xorshift64*: small, seedable, the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("LOCKGUARD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }) | 1
}

fn seconds(var: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or(default))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillReplica,
    /// SIGTERM: the replica leaves the members (its pools move at once); restarted, it joins
    /// again under a new identity.
    ReplicaLeaves,
    PauseReplica,
    KillEtcdLeader,
    PauseEtcdLeader,
    RestartApiserver,
    PartitionFromEtcd,
}

const FAULTS: [Fault; 7] = [
    Fault::KillReplica,
    Fault::ReplicaLeaves,
    Fault::PauseReplica,
    Fault::KillEtcdLeader,
    Fault::PauseEtcdLeader,
    Fault::RestartApiserver,
    Fault::PartitionFromEtcd,
];

struct Cluster {
    netns: Netns,
    control_plane: ControlPlane,
    etcd: EtcdCluster,
    kubeconfig: std::path::PathBuf,
}

impl Cluster {
    async fn client(&self) -> Client {
        self.control_plane.client().await.expect("admin client")
    }

    /// The index of the lock etcd's leader: the member that says it leads.
    async fn etcd_leader(&self) -> Option<usize> {
        for (i, member) in self.etcd.members.iter().enumerate() {
            let config = lockguard_lock::etcd::EtcdConfig::from_list(&member.endpoint());
            let Ok(mut client) = config.connect(Duration::from_secs(1)).await else { continue };
            let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(1), client.status()).await else {
                continue;
            };
            if status.header().map(|h| h.member_id()) == Some(status.leader()) {
                return Some(i);
            }
        }
        None
    }
}

#[derive(Default, Debug)]
struct Figures {
    faults: BTreeMap<String, usize>,
    fault_seconds: u64,
    self_stops: usize,
    claims_created: u64,
    claims_resized: u64,
    claims_deleted: u64,
    pools_recreated: u64,
    pools_resized: u64,
    pools_resorted: u64,
    /// Re-created from the manifest without status, protection stripped, claims kept.
    pools_restored: u64,
    items_allocated: u64,
    claims_at_end: usize,
    locks_lost: usize,
    fenced_rejections: usize,
    /// Reconciles of the namespaced replica that failed on the lock (the partition bit).
    partitioned_lock_errors: usize,
    converged_after: Option<Duration>,
    revisions_checked: usize,
    unobserved_windows: Vec<(u64, u64)>,
    history_violations: Vec<String>,
    audit_violations: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_leaves_the_invariants_intact_and_the_fence_is_what_keeps_them() {
    let seed = seed();
    println!("chaos: seed {seed} (LOCKGUARD_CHAOS_SEED={seed} repeats this run)");
    let dir = devenv::run_dir("chaos").expect("run dir");
    let netns = Netns::create(&dir).expect("a network namespace and a veth pair (needs root)");
    let control_plane =
        ControlPlane::start_on(&dir.join("control-plane"), &netns.host()).await.expect("control plane");
    let etcd = EtcdCluster::start_on(&dir, "lock-etcd", 3, &netns.etcd()).expect("3-member lock etcd");
    let kubeconfig = install_on(&control_plane).await;
    let mut cluster = Cluster { netns, control_plane, etcd, kubeconfig };

    let fenced = round(&mut cluster, "fenced", seed, false, seconds("LOCKGUARD_CHAOS_SECONDS", 90)).await;
    let unfenced = round(
        &mut cluster,
        "unfenced",
        seed.rotate_left(17) | 1,
        true,
        seconds("LOCKGUARD_CHAOS_CONTROL_SECONDS", 60),
    )
    .await;
    for (name, f) in [("fenced", &fenced), ("fence off (negative control)", &unfenced)] {
        println!("chaos [{name}]: {f:#?}");
    }

    assert!(
        fenced.history_violations.is_empty(),
        "seed {seed}: safety violations with the fence on:\n{}",
        fenced.history_violations.join("\n")
    );
    assert!(
        fenced.converged_after.is_some(),
        "seed {seed}: did not converge; audit:\n{}",
        fenced.audit_violations.join("\n")
    );
    assert!(
        fenced.audit_violations.is_empty(),
        "seed {seed}: audit:\n{}",
        fenced.audit_violations.join("\n")
    );
    for fault in FAULTS {
        assert!(
            fenced.faults.get(&format!("{fault:?}")).is_some_and(|&n| n > 0),
            "seed {seed}: {fault:?} never injected"
        );
    }
    assert!(
        fenced.claims_created > 50 && fenced.items_allocated > 0,
        "seed {seed}: the workload ran: {fenced:?}"
    );
    assert!(
        fenced.pools_resized > 0 && fenced.pools_resorted > 0 && fenced.pools_restored > 0,
        "seed {seed}: the admin actions ran: {fenced:?}"
    );
    assert!(
        !unfenced.history_violations.is_empty() || !unfenced.audit_violations.is_empty(),
        "seed {seed}: the negative control found no violation: the faults do not bite or the audit does not see"
    );
}

/// One run of workload and faults; returns what it saw.
async fn round(cluster: &mut Cluster, name: &str, seed: u64, fence_off: bool, length: Duration) -> Figures {
    let client = cluster.client().await;
    let mut rng = Rng(seed);
    let mut figures = Figures::default();
    let ns = format!("chaos-{name}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({ "metadata": { "name": ns } })).expect("namespace");
    namespaces.create(&PostParams::default(), &namespace).await.expect("namespace");
    // The Lease pool is a list pool, so that the admin can re-sort it.
    let pools: Vec<(String, &str)> =
        vec![(format!("{name}-e0"), "Etcd"), (format!("{name}-e1"), "Etcd"), (format!("{name}-l0"), "Lease")];
    for (pool, backend) in &pools {
        create_pool(&client, pool, backend).await.expect("create pool");
    }
    let recorder = Recorder::start(client.clone());

    let failpoints = |extra: &str| {
        let list = if fence_off { format!("fence-off,{extra}") } else { extra.to_string() };
        vec![("LOCKGUARD_FAILPOINT".to_string(), list)]
    };
    let endpoints = cluster.etcd.endpoints();
    // The negative control lets every replica serve (and watch) every pool, so that without
    // the fence they contend for each one; divided, one replica would mostly serve a pool
    // alone, and a run could end before a violation.
    let args: &[&str] = if fence_off { &["--shard=false"] } else { &[] };
    let mut replicas = Replicas::none(&cluster.kubeconfig, &endpoints, args);
    replicas.add_spec(Spec { env: failpoints(""), ..Spec::default() });
    replicas.add_spec(Spec { env: failpoints(""), prefix: cluster.netns.prefix(), ..Spec::default() });
    // Stops itself (SIGSTOP) before every 8th ledger write: a pause at the worst moment,
    // thawed by the supervisor once the others had time to move on.
    replicas.add_spec(Spec { env: failpoints("stop-before-ledger-write:8"), ..Spec::default() });
    let replicas = Arc::new(Mutex::new(replicas));

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let paused: Arc<Mutex<Vec<usize>>> = Arc::default();
    let supervisor = tokio::spawn(supervise(replicas.clone(), paused.clone(), stop.clone()));
    let work = Workload {
        client: client.clone(),
        ns: ns.clone(),
        pools: pools.clone(),
        counters: counters.clone(),
        stop: stop.clone(),
    };
    let workload = tokio::spawn(claims_workload(work.clone(), Rng(seed ^ 0x9e37)));
    let churn = tokio::spawn(pool_churn(work, Rng(seed ^ 0x51ed)));

    let started = Instant::now();
    let mut schedule: Vec<Fault> = FAULTS.to_vec();
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.below(i + 1));
    }
    let pool_names: Vec<&str> = pools.iter().map(|(p, _)| p.as_str()).collect();
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(1500 + rng.below(2000) as u64)).await;
        let fault = if schedule.is_empty() { FAULTS[rng.below(FAULTS.len())] } else { schedule.remove(0) };
        inject(cluster, &replicas, &paused, fault, &mut rng).await;
        *figures.faults.entry(format!("{fault:?}")).or_default() += 1;
        // The negative control has made its point once a violation is on record.
        if fence_off
            && schedule.is_empty()
            && !support::history_violations(&recorder.replay_now(), &pool_names).is_empty()
        {
            break;
        }
    }
    figures.fault_seconds = started.elapsed().as_secs();
    stop.store(true, Ordering::Release);
    let _ = tokio::join!(workload, churn);
    let _ = supervisor.await;
    heal(cluster, &replicas).await;

    // Converge: no violation and every claim bound or waiting for items.
    let converging = Instant::now();
    let client = cluster.client().await;
    let deadline = Duration::from_secs(if fence_off { 30 } else { 120 });
    loop {
        let (violations, settled, items, claims) = check(&client, &ns, &pool_names).await;
        figures.audit_violations = violations;
        figures.items_allocated = items;
        figures.claims_at_end = claims;
        if figures.audit_violations.is_empty() && settled {
            figures.converged_after = Some(converging.elapsed());
            break;
        }
        if converging.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let replay = recorder.finish();
    figures.revisions_checked = replay.changes;
    figures.unobserved_windows = replay.windows.clone();
    figures.history_violations = support::history_violations(&replay, &pool_names);
    figures.claims_created = counters[0].load(Ordering::Relaxed);
    figures.claims_resized = counters[1].load(Ordering::Relaxed);
    figures.claims_deleted = counters[2].load(Ordering::Relaxed);
    figures.pools_recreated = counters[3].load(Ordering::Relaxed);
    figures.pools_resized = counters[4].load(Ordering::Relaxed);
    figures.pools_resorted = counters[5].load(Ordering::Relaxed);
    figures.pools_restored = counters[6].load(Ordering::Relaxed);
    let replicas = Arc::try_unwrap(replicas)
        .ok()
        .expect("no other owner")
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    for i in 0..replicas.len() {
        let log = replicas.log(i);
        figures.locks_lost += log.matches("lock lost").count();
        figures.fenced_rejections += log.matches("fenced ledger write rejected").count();
        figures.self_stops += log.matches("failpoint stop-before-ledger-write").count();
    }
    figures.partitioned_lock_errors = replicas.log(1).matches("kind=\"lock\"").count();
    // `lockguard audit`, the command, has the last word on the converged cluster.
    if !fence_off {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lockguard"))
            .arg("audit")
            .env("KUBECONFIG", cluster.control_plane.kubeconfig())
            .output()
            .expect("run lockguard audit");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("chaos [{name}]: lockguard audit: {}", text.trim());
        if !out.status.success() {
            figures.audit_violations.push(text);
        }
    }
    drop(replicas);
    figures
}

async fn create_pool(client: &Client, name: &str, backend: &str) -> Result<Pool, kube::Error> {
    let pool: Pool = serde_json::from_value(json!({
        "apiVersion": "lockguard.dev/v1alpha1", "kind": "Pool", "metadata": { "name": name },
        "spec": { "items": items(backend, 100, 100 + POOL_ITEMS - 1, false),
                  "lock": { "backend": backend, "ttlSeconds": TTL_SECONDS, "acquireTimeoutSeconds": 10 } }
    }))
    .expect("pool");
    Api::<Pool>::all(client.clone()).create(&PostParams::default(), &pool).await
}

/// A pool's items: the numbers `start..=end`, as a range for an etcd pool, as a list of names
/// (in reverse when `reversed`) for the Lease pool.
fn items(backend: &str, start: i64, end: i64, reversed: bool) -> serde_json::Value {
    if backend == "Etcd" {
        return json!({ "range": { "start": start, "end": end } });
    }
    let mut names: Vec<String> = (start..=end).map(|i| format!("i{i}")).collect();
    if reversed {
        names.reverse();
    }
    json!({ "list": names })
}

/// What the workload tasks share: where they act, what they count, when they stop.
#[derive(Clone)]
struct Workload {
    client: Client,
    ns: String,
    pools: Vec<(String, &'static str)>,
    /// Claims created, resized, deleted; pools re-created, resized, re-sorted.
    counters: Arc<[AtomicU64; 7]>,
    stop: Arc<AtomicBool>,
}

/// Claims created, resized and deleted at random, re-created under the same names.
async fn claims_workload(Workload { client, ns, pools, counters, stop }: Workload, mut rng: Rng) {
    let claims: Api<Claim> = Api::namespaced(client, &ns);
    while !stop.load(Ordering::Acquire) {
        let name = format!("c{}", rng.below(CLAIM_NAMES));
        let count = 1 + rng.below(3) as i32;
        let done = match rng.below(4) {
            0 | 1 => {
                let pool = pools[rng.below(pools.len())].0.clone();
                let claim = Claim::new(&name, ClaimSpec { pool_ref: pool, count, items: None });
                claims.create(&PostParams::default(), &claim).await.is_ok().then_some(0)
            }
            2 => {
                let patch = json!({ "spec": { "count": count } });
                claims.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok().then_some(1)
            }
            _ => claims.delete(&name, &DeleteParams::default()).await.is_ok().then_some(2),
        };
        if let Some(i) = done {
            counters[i].fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(40 + rng.below(120) as u64)).await;
    }
}

/// An administrator at work: now and then a pool's items are edited while claims hold them
/// (a range grown or shrunk, a list re-sorted), a pool is deleted (its claims too, as a
/// namespace clean-up would) and created again once it is gone, or a pool is re-created from
/// its manifest without status while its claims stay (its protection stripped by hand).
async fn pool_churn(Workload { client, ns, pools, counters, stop }: Workload, mut rng: Rng) {
    let api: Api<Pool> = Api::all(client.clone());
    let claims: Api<Claim> = Api::namespaced(client.clone(), &ns);
    let mut reversed = false;
    // Each action once first, in this order, then at random.
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(4 + rng.below(4) as u64)).await;
        let action = if n < 4 { n } else { rng.below(4) };
        // A re-sort needs the list pool (the Lease one).
        let (pool, backend) = match action {
            1 => pools.iter().find(|(_, b)| *b == "Lease").unwrap_or(&pools[0]),
            _ => &pools[rng.below(pools.len())],
        };
        if action < 2 {
            // Grow or shrink (the range moves within 95..=124, never under 16 items); the
            // list pool's order flips on a re-sort.
            let (start, len) = (95 + rng.below(6) as i64, 16 + rng.below(10) as i64);
            let resort = *backend == "Lease" && action == 1;
            reversed ^= resort;
            let spec = json!({ "spec": { "items": items(backend, start, start + len - 1, reversed) } });
            match api.patch(pool, &PatchParams::default(), &Patch::Merge(&spec)).await {
                Ok(_) => {
                    counters[if resort { 5 } else { 4 }].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => println!("chaos: the admin's edit of {pool} was refused: {e}"),
            }
            continue;
        }
        if api.delete(pool, &DeleteParams::default()).await.is_err() {
            continue;
        }
        if action == 3 {
            let strip = json!([{ "op": "remove", "path": "/metadata/finalizers" }]);
            let strip: json_patch::Patch = serde_json::from_value(strip).expect("a JSON patch");
            let _ = api.patch(pool, &PatchParams::default(), &Patch::Json::<()>(strip)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if action == 2
                && let Ok(list) = claims.list(&ListParams::default()).await
            {
                for c in list.items.iter().filter(|c| &c.spec.pool_ref == pool) {
                    let _ = claims.delete(&c.name_any(), &DeleteParams::default()).await;
                }
            }
            if matches!(api.get_opt(pool).await, Ok(None)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Re-created whatever happened, so the pool is back for the end of the run.
        let until = Instant::now() + Duration::from_secs(60);
        while create_pool(&client, pool, backend).await.is_err() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        counters[if action == 3 { 6 } else { 3 }].fetch_add(1, Ordering::Relaxed);
    }
}

/// Restarts replicas that died (as a Deployment would) and thaws those that stopped
/// themselves at the failpoint once the TTL has passed.
async fn supervise(replicas: Arc<Mutex<Replicas>>, paused: Arc<Mutex<Vec<usize>>>, stop: Arc<AtomicBool>) {
    let mut stopped_since: BTreeMap<usize, Instant> = BTreeMap::new();
    loop {
        {
            let mut r = replicas.lock().unwrap_or_else(|e| e.into_inner());
            for i in r.dead() {
                r.restart(i);
            }
            let by_fault = paused.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for i in 0..r.len() {
                if by_fault.contains(&i) || !r.is_stopped(i) {
                    stopped_since.remove(&i);
                    continue;
                }
                let since = *stopped_since.entry(i).or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(TTL_SECONDS + 2) {
                    r.signal(i, libc::SIGCONT);
                    stopped_since.remove(&i);
                }
            }
        }
        if stop.load(Ordering::Acquire) && stopped_since.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn inject(
    cluster: &mut Cluster,
    replicas: &Arc<Mutex<Replicas>>,
    paused: &Arc<Mutex<Vec<usize>>>,
    fault: Fault,
    rng: &mut Rng,
) {
    let ttl_past = Duration::from_secs(TTL_SECONDS + 1);
    println!("chaos: {fault:?}");
    match fault {
        Fault::KillReplica => {
            let i = rng.below(3);
            replicas.lock().unwrap_or_else(|e| e.into_inner()).signal(i, libc::SIGKILL);
        }
        Fault::ReplicaLeaves => {
            let i = rng.below(3);
            replicas.lock().unwrap_or_else(|e| e.into_inner()).signal(i, libc::SIGTERM);
        }
        Fault::PauseReplica => {
            let i = holder(cluster, replicas).await.unwrap_or_else(|| rng.below(3));
            paused.lock().unwrap_or_else(|e| e.into_inner()).push(i);
            replicas.lock().unwrap_or_else(|e| e.into_inner()).signal(i, libc::SIGSTOP);
            tokio::time::sleep(ttl_past).await;
            replicas.lock().unwrap_or_else(|e| e.into_inner()).signal(i, libc::SIGCONT);
            paused.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != i);
        }
        Fault::KillEtcdLeader => {
            let i = cluster.etcd_leader().await.unwrap_or_else(|| rng.below(3));
            cluster.etcd.members[i].kill();
            tokio::time::sleep(Duration::from_secs(2)).await;
            cluster.etcd.members[i].start().expect("restart the etcd member");
        }
        Fault::PauseEtcdLeader => {
            let i = cluster.etcd_leader().await.unwrap_or_else(|| rng.below(3));
            let _ = cluster.etcd.members[i].pause();
            tokio::time::sleep(ttl_past).await;
            let _ = cluster.etcd.members[i].resume();
        }
        Fault::RestartApiserver => {
            cluster.control_plane.restart_apiserver().await.expect("restart kube-apiserver");
        }
        Fault::PartitionFromEtcd => {
            cluster.netns.cut_etcd().expect("cut");
            tokio::time::sleep(Duration::from_secs(2 * TTL_SECONDS)).await;
            cluster.netns.heal_etcd().expect("heal");
        }
    }
}

/// A replica that holds some pool's etcd lock right now, if one does.
async fn holder(cluster: &Cluster, replicas: &Arc<Mutex<Replicas>>) -> Option<usize> {
    let client = lockguard_lock::etcd::EtcdConfig::from_list(&cluster.etcd.endpoints())
        .connect(Duration::from_secs(1))
        .await
        .ok()?;
    let lock = lockguard_lock::etcd::EtcdLock::new(client, "chaos");
    let identities: Vec<String> = {
        let r = replicas.lock().unwrap_or_else(|e| e.into_inner());
        (0..r.len()).map(|i| r.identity(i).to_string()).collect()
    };
    for suffix in ["e0", "e1"] {
        for round in ["fenced", "unfenced"] {
            let name = format!("lockguard/pools/{round}-{suffix}");
            let queue = tokio::time::timeout(Duration::from_secs(1), lock.queue(&name)).await.ok()?.ok()?;
            if let Some(first) = queue.first()
                && let Some(i) = identities.iter().position(|id| *id == first.identity)
            {
                return Some(i);
            }
        }
    }
    None
}

/// Everything back up and connected.
async fn heal(cluster: &mut Cluster, replicas: &Arc<Mutex<Replicas>>) {
    let _ = cluster.netns.heal_etcd();
    for m in &mut cluster.etcd.members {
        let _ = m.resume();
        if m.pid().is_none() {
            m.start().expect("restart an etcd member");
        }
    }
    let mut r = replicas.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..r.len() {
        r.signal(i, libc::SIGCONT);
    }
    for i in r.dead() {
        r.restart(i);
    }
}

/// The full audit of the round's pools and claims: violations, whether every claim is
/// bound or waits for items, items allocated, claims.
async fn check(client: &Client, ns: &str, pools: &[&str]) -> (Vec<String>, bool, u64, usize) {
    let Ok(claims) = Api::<Claim>::namespaced(client.clone(), ns).list(&ListParams::default()).await else {
        return (vec!["cannot list claims".into()], false, 0, 0);
    };
    let mut listed = Vec::new();
    for p in pools {
        if let Ok(Some(pool)) = Api::<Pool>::all(client.clone()).get_opt(p).await {
            listed.push(pool);
        }
    }
    let report = audit(&listed, &claims.items, Scope::Full);
    let settled = listed.len() == pools.len()
        && claims.items.iter().all(|c| {
            support::bound_reason(c)
                .is_some_and(|(s, r)| s == "True" || r == "PoolExhausted" || r == "PoolTooSmall")
        });
    (
        report.violations.iter().map(ToString::to_string).collect(),
        settled,
        report.items_allocated,
        claims.items.len(),
    )
}
