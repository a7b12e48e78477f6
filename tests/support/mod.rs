//! Shared helpers for the tests against real servers (see hack/devenv).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use lockguard::api::{Claim, ClaimSpec, Pool};
use lockguard::ledger::Ledger;

pub use devenv::shared;

/// The repository root (for crds/ and deploy/).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs bin/kubectl with the admin kubeconfig, `stdin` piped in.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut command = shared().control_plane.kubectl().expect("bin/kubectl");
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run kubectl");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("kubectl output")
}

/// `kubectl` that must succeed.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub const OPERATOR_NAMESPACE: &str = "lockguard-system";

/// Installs what the operator needs the way a user does: the CRDs (waiting until they are
/// Established), then the namespace and RBAC from deploy/. Returns a kubeconfig for the
/// operator's ServiceAccount (TokenRequest), so replicas run under exactly that RBAC.
pub async fn install() -> PathBuf {
    static INSTALLED: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(install_once).await.clone()
}

async fn install_once() -> PathBuf {
    let crds = repo().join("crds");
    kubectl_ok(&["apply", "-k", crds.to_str().expect("utf8 path")], None);
    kubectl_ok(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/pools.lockguard.dev",
            "crd/claims.lockguard.dev",
        ],
        None,
    );
    for file in ["namespace.yaml", "rbac.yaml"] {
        kubectl_ok(&["apply", "-f", repo().join("deploy").join(file).to_str().expect("utf8 path")], None);
    }
    shared()
        .control_plane
        .service_account_kubeconfig(OPERATOR_NAMESPACE, "lockguard")
        .await
        .expect("operator token")
}

/// `lockguard run` replicas as real processes.
pub struct Replicas {
    replicas: Vec<Option<Child>>,
    logs: Vec<PathBuf>,
    kubeconfig: PathBuf,
    etcd: String,
    args: Vec<String>,
}

impl Replicas {
    pub fn start(n: usize, kubeconfig: &Path, etcd_endpoints: &str) -> Self {
        Self::start_with(n, kubeconfig, etcd_endpoints, &[])
    }

    /// Replicas with extra `lockguard run` arguments.
    pub fn start_with(n: usize, kubeconfig: &Path, etcd_endpoints: &str, args: &[&str]) -> Self {
        let mut replicas = Self {
            replicas: Vec::new(),
            logs: Vec::new(),
            kubeconfig: kubeconfig.into(),
            etcd: etcd_endpoints.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        for _ in 0..n {
            replicas.add();
        }
        replicas
    }

    /// Starts one more replica; returns its index.
    pub fn add(&mut self) -> usize {
        let i = self.replicas.len();
        let dir = devenv::run_dir("replica").expect("run dir");
        let log = dir.join(format!("replica-{i}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockguard"));
        command
            .args(["run", "--identity", &unique(&format!("replica-{i}")), "--concurrency", "4"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LOCKGUARD_ETCD_ENDPOINTS", &self.etcd)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        self.replicas.push(Some(devenv::process::spawn_tied(command).expect("start lockguard run")));
        self.logs.push(log);
        i
    }

    /// The `host:port` replica `i` serves /metrics on (from its start-up log line).
    pub fn metrics_addr(&self, i: usize) -> Option<String> {
        let log = self.log(i);
        let line = log.lines().find(|l| l.contains("lockguard starting"))?;
        let at = line.find("metrics=")? + "metrics=".len();
        Some(line[at..].split_whitespace().next()?.trim_matches('"').to_string())
    }

    /// Sends SIGTERM to replica `i` and waits up to `timeout` for its exit status.
    pub fn terminate(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let child = self.replicas[i].as_mut()?;
        // SAFETY: our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.replicas[i] = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.replicas[i].as_ref().map(Child::id)
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.replicas[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every replica that was not killed on purpose is still running.
    pub fn all_alive(&mut self) -> bool {
        self.replicas.iter_mut().flatten().all(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.logs[i]).unwrap_or_default()
    }

    /// The last lines of every replica's log, for failure messages.
    pub fn tails(&self) -> String {
        (0..self.logs.len())
            .map(|i| {
                let log = self.log(i);
                let lines: Vec<&str> = log.lines().collect();
                format!("--- replica {i} ---\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in self.replicas.iter_mut().flatten() {
            // SAFETY: our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in self.replicas.iter_mut().flatten() {
            let _ = child.wait();
        }
    }
}

/// Polls `check` every 250 ms until it returns Some or `timeout` passes.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub fn bound_reason(claim: &Claim) -> Option<(String, String)> {
    let c = claim.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Bound")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// The Bound condition of claim `namespace/name` as (status, reason), if it has one.
pub async fn reason_of(namespace: &str, name: &str) -> Option<(String, String)> {
    let api: Api<Claim> = Api::namespaced(kube_client().await, namespace);
    api.get(name).await.ok().and_then(|c| bound_reason(&c))
}

/// `reason_of` for several claims; a claim without the condition gives an empty pair.
pub async fn reasons(namespace: &str, names: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(reason_of(namespace, name).await.unwrap_or_default());
    }
    out
}

pub async fn claims_in(namespaces: &[String]) -> Vec<Claim> {
    let mut all = Vec::new();
    for ns in namespaces {
        let api: Api<Claim> = Api::namespaced(kube_client().await, ns);
        all.extend(api.list(&ListParams::default()).await.expect("list claims").items);
    }
    all
}

/// Checks the invariants over pools and all claims that reference them: the ledger is
/// well-formed (no item twice), every entry belongs to an existing claim with that UID, each
/// bound claim's status shows exactly its ledger items, and no item is in two statuses.
/// Returns the number of items allocated.
pub async fn audit(pools: &[&str]) -> Result<usize, String> {
    use std::collections::{HashMap, HashSet};
    let client = kube_client().await;
    let all_claims: Vec<Claim> = Api::<Claim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items;
    let mut allocated = 0;
    for name in pools {
        let pool: Pool = Api::<Pool>::all(client.clone()).get(name).await.map_err(|e| e.to_string())?;
        let status = pool.status.clone().unwrap_or_default();
        let ledger = Ledger::from_status(&status.ledger, pool.spec.items.capacity())
            .map_err(|e| format!("{name}: {e}"))?;
        if status.allocated != ledger.allocated() as i32 || status.free != ledger.free() as i32 {
            return Err(format!(
                "{name}: counts {} / {} do not match the ledger",
                status.allocated, status.free
            ));
        }
        let claims: HashMap<String, &Claim> = all_claims
            .iter()
            .filter(|c| c.spec.pool_ref == *name)
            .map(|c| {
                (
                    format!(
                        "{}/{}",
                        c.metadata.namespace.clone().unwrap_or_default(),
                        c.metadata.name.clone().unwrap_or_default()
                    ),
                    c,
                )
            })
            .collect();
        let mut seen: HashSet<String> = HashSet::new();
        for (key, entry) in ledger.claims() {
            let claim = claims
                .get(key)
                .ok_or_else(|| format!("{name}: ledger entry of missing claim {key} (leak)"))?;
            if claim.metadata.uid.as_deref() != Some(entry.uid.as_str()) {
                return Err(format!("{name}: ledger entry {key} has another claim's UID"));
            }
            let (items, _) = pool.spec.items.describe(&entry.indices);
            let shown = claim.status.as_ref().map(|s| s.items.clone()).unwrap_or_default();
            let bound = bound_reason(claim).is_some_and(|(s, _)| s == "True");
            if bound && shown != items {
                return Err(format!("{name}: {key} shows {shown:?} but the ledger says {items:?}"));
            }
            allocated += items.len();
        }
        for (key, claim) in &claims {
            for item in claim.status.as_ref().map(|s| s.items.clone()).unwrap_or_default() {
                if bound_reason(claim).is_some_and(|(s, _)| s == "True") && !seen.insert(item.clone()) {
                    return Err(format!("{name}: item {item} is in two claim statuses ({key})"));
                }
            }
        }
    }
    Ok(allocated)
}

/// A name no other test (or earlier run against the same servers) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub async fn kube_client() -> kube::Client {
    shared().control_plane.client().await.expect("admin client")
}

/// Creates a fresh namespace for one test.
pub async fn namespace(prefix: &str) -> String {
    let name = unique(prefix);
    let ns = Namespace {
        metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() },
        ..Default::default()
    };
    Api::<Namespace>::all(kube_client().await)
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

pub async fn etcd_client(endpoints: &str) -> etcd_client::Client {
    lockguard::lock::etcd::EtcdConfig::from_list(endpoints)
        .connect(Duration::from_secs(5))
        .await
        .expect("connect to etcd")
}

pub fn lock_etcd() -> String {
    shared().lock_etcd.endpoint()
}

/// A `lockguard lock …` process in its own process group, tied to the test process.
pub struct Cli {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
}

impl Cli {
    pub fn lock(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lockguard"));
        command
            .arg("lock")
            .args(args)
            .env("KUBECONFIG", shared().control_plane.kubeconfig())
            .env("LOCKGUARD_ETCD_ENDPOINTS", lock_etcd())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = devenv::process::spawn_tied(command).expect("spawn lockguard lock");
        let lines = forward(child.stdout.take().expect("stdout"));
        let errors = forward(child.stderr.take().expect("stderr"));
        Self { child, lines, errors }
    }

    /// The next line on stdout within `timeout`.
    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits until the process printed its key and token: `(key, token)`.
    pub fn held(&self, timeout: Duration) -> (String, u64) {
        let key =
            self.line(timeout).unwrap_or_else(|| panic!("no lock key printed; stderr: {}", self.stderr()));
        let token = self.line(timeout).expect("token line");
        let token = token.strip_prefix("token: ").and_then(|t| t.parse().ok()).expect("token: N");
        (key, token)
    }

    pub fn stderr(&self) -> String {
        self.errors.try_iter().collect::<Vec<_>>().join("\n")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Signals the whole process group.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own process group.
        unsafe { libc::kill(-self.pid(), signal) };
    }

    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn forward(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn pool_yaml(name: &str, items: &str, backend: &str) -> String {
    format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\n\
         spec: {{items: {items}, lock: {{backend: {backend}, ttlSeconds: 5, acquireTimeoutSeconds: 20}}}}\n"
    )
}

pub async fn create_claim(ns: &str, name: &str, pool: &str, count: i32) {
    let claim = Claim::new(name, ClaimSpec { pool_ref: pool.into(), count });
    Api::<Claim>::namespaced(kube_client().await, ns)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
}
