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
use lockguard::audit::history::Recorder;

pub use devenv::shared;
pub use operator::Operator;

pub mod epochs;
mod operator;

/// The `lockguard` binary under test: `$LOCKGUARD_BIN` (e.g. an older build, to show a
/// test failing before a fix), else the one cargo built for this test.
pub fn lockguard_binary() -> PathBuf {
    std::env::var_os("LOCKGUARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_lockguard").into())
}

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

/// `kubectl apply` of `yaml`, which must succeed.
pub fn apply(yaml: &str) {
    kubectl_ok(&["apply", "-f", "-"], Some(yaml));
}

pub const OPERATOR_NAMESPACE: &str = "lockguard-system";

/// Installs what the operator needs the way a user does: the CRDs (waiting until they are
/// Established), then the namespace from deploy/manager and the RBAC of deploy/rbac. Returns
/// a kubeconfig for the operator's ServiceAccount (TokenRequest), so replicas run under
/// exactly that RBAC.
pub async fn install() -> PathBuf {
    static INSTALLED: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    INSTALLED.get_or_init(install_once).await.clone()
}

/// A recorder of every Pool and Claim change (the history the safety checks replay), started
/// after `install` so that its watches find the CRDs.
pub async fn record_history() -> Recorder {
    install().await;
    Recorder::start(kube_client().await)
}

async fn install_once() -> PathBuf {
    install_on(&shared().control_plane).await
}

/// A kubeconfig of ServiceAccount `name` of the operator's namespace (after `install`).
pub async fn service_account_kubeconfig(name: &str) -> PathBuf {
    install().await;
    shared().control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, name).await.expect("a token")
}

/// `install` on a control plane of the test's own.
pub async fn install_on(control_plane: &devenv::ControlPlane) -> PathBuf {
    let kubectl_ok = |args: &[&str], _: Option<&str>| {
        let out = control_plane.kubectl().expect("bin/kubectl").args(args).output().expect("run kubectl");
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
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
    let deploy = repo().join("deploy");
    kubectl_ok(&["apply", "-f", deploy.join("manager/namespace.yaml").to_str().expect("utf8 path")], None);
    kubectl_ok(&["apply", "-k", deploy.join("rbac").to_str().expect("utf8 path")], None);
    control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, "lockguard").await.expect("operator token")
}

/// `lockguard run` replicas as real processes.
pub struct Replicas {
    replicas: Vec<Option<Child>>,
    logs: Vec<PathBuf>,
    specs: Vec<Spec>,
    kubeconfig: PathBuf,
    etcd: String,
    args: Vec<String>,
    /// The replicas' shard group: they divide the pools between them, apart from other tests'.
    group: String,
    /// RLIMIT_AS for every replica, as a container's memory limit would cap it.
    address_space: Option<u64>,
}

/// How replica `i` is started (again, after it died).
#[derive(Clone, Default)]
pub struct Spec {
    pub env: Vec<(String, String)>,
    /// A command line the replica runs under, e.g. `nsenter --net=… --`.
    pub prefix: Vec<String>,
    /// The identity of its current life.
    pub identity: String,
    /// Another `lockguard` binary than the one under test (an older release).
    pub binary: Option<PathBuf>,
}

impl Replicas {
    pub fn start(n: usize, kubeconfig: &Path, etcd_endpoints: &str) -> Self {
        Self::start_with(n, kubeconfig, etcd_endpoints, &[])
    }

    /// Replicas with extra `lockguard run` arguments.
    pub fn start_with(n: usize, kubeconfig: &Path, etcd_endpoints: &str, args: &[&str]) -> Self {
        let mut replicas = Self::none(kubeconfig, etcd_endpoints, args);
        for _ in 0..n {
            replicas.add();
        }
        replicas
    }

    /// No replica yet; `add` and `add_with` start them.
    pub fn none(kubeconfig: &Path, etcd_endpoints: &str, args: &[&str]) -> Self {
        Self {
            replicas: Vec::new(),
            logs: Vec::new(),
            specs: Vec::new(),
            kubeconfig: kubeconfig.into(),
            etcd: etcd_endpoints.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            group: unique("group"),
            address_space: None,
        }
    }

    /// Replicas started from now on cannot map more than `bytes` of memory.
    pub fn limit_memory(&mut self, bytes: u64) {
        self.address_space = Some(bytes);
    }

    /// Starts one more replica; returns its index.
    pub fn add(&mut self) -> usize {
        self.add_with(&[])
    }

    /// Starts one more replica with extra environment variables (e.g. a failpoint).
    pub fn add_with(&mut self, env: &[(&str, &str)]) -> usize {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.add_spec(Spec { env, ..Spec::default() })
    }

    /// Starts one more replica as `spec` says.
    pub fn add_spec(&mut self, spec: Spec) -> usize {
        let i = self.replicas.len();
        let dir = devenv::run_dir("replica").expect("run dir");
        self.logs.push(dir.join(format!("replica-{i}.log")));
        self.specs.push(spec);
        self.replicas.push(None);
        self.restart(i);
        i
    }

    /// Starts replica `i` again (after it died or was killed), with a new identity, as a
    /// Deployment would; its log continues.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let file = std::fs::File::options().create(true).append(true).open(&self.logs[i]).expect("log file");
        let identity = unique(&format!("replica-{i}"));
        let spec = &mut self.specs[i];
        spec.identity = identity.clone();
        let binary = spec.binary.clone().unwrap_or_else(lockguard_binary);
        let mut command = match spec.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        command.args(["run", "--identity", &identity]);
        if !self.args.iter().any(|a| a.starts_with("--concurrency")) {
            command.args(["--concurrency", "4"]);
        }
        // An older release knows no shard flags.
        if spec.binary.is_none() {
            command.args(["--shard-group", &self.group]);
            if !self.args.iter().any(|a| a.starts_with("--member-lease-seconds")) {
                command.args(["--member-lease-seconds", "3"]);
            }
        }
        command
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("LOCKGUARD_ETCD_ENDPOINTS", &self.etcd)
            .env("RUST_LOG", "info,kube=warn")
            .env("NO_COLOR", "1")
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file);
        if let Some(bytes) = self.address_space {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        self.replicas[i] = Some(devenv::process::spawn_tied(command).expect("start lockguard run"));
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// The identity of replica `i`'s current life.
    pub fn identity(&self, i: usize) -> &str {
        &self.specs[i].identity
    }

    /// Replicas that exited by themselves (not killed through `kill`).
    pub fn dead(&mut self) -> Vec<usize> {
        (0..self.replicas.len())
            .filter(|&i| self.replicas[i].as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))))
            .collect()
    }

    /// The `host:port` replica `i` serves /metrics on (from the start-up log line of its
    /// current life: a restarted replica appends to the same log).
    pub fn metrics_addr(&self, i: usize) -> Option<String> {
        let log = self.log(i);
        let line = log.lines().rev().find(|l| l.contains("lockguard starting"))?;
        let at = line.find("metrics=")? + "metrics=".len();
        Some(line[at..].split_whitespace().next()?.trim_matches('"').to_string())
    }

    /// Whether replica `i` answers /readyz with 200 (its caches have their first listing).
    pub fn is_ready(&self, i: usize) -> bool {
        let ready = self.metrics_addr(i).and_then(|addr| devenv::http_get(&addr, "/readyz"));
        ready.is_some_and(|(code, _)| code == 200)
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

    /// Sends `signal` to replica `i`.
    pub fn signal(&self, i: usize, signal: i32) {
        if let Some(pid) = self.pid(i) {
            // SAFETY: our own child.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Replica `i` is stopped (SIGSTOP, or a failpoint that stopped itself).
    pub fn is_stopped(&self, i: usize) -> bool {
        self.pid(i).and_then(|pid| proc_field(pid, "State:")).is_some_and(|s| s.starts_with('T'))
    }

    /// The sum of a metric's samples over every replica's /metrics.
    pub fn metric_sum(&self, metric: &str) -> f64 {
        (0..self.len())
            .filter_map(|i| self.metrics_addr(i))
            .filter_map(|addr| devenv::http_get(&addr, "/metrics"))
            .flat_map(|(_, body)| {
                body.lines()
                    .filter(|l| l.starts_with(metric))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Waits until replica `i` is stopped (a failpoint that stops itself); fails with the logs
    /// if it is not within `timeout`.
    pub async fn until_stopped(&self, i: usize, timeout: Duration) {
        let what = format!("the failpoint stopped replica {i}");
        self.eventually(timeout, &what, || async { self.is_stopped(i).then_some(()) }).await;
    }

    /// Resident memory of replica `i`, in KiB.
    pub fn rss_kib(&self, i: usize) -> Option<u64> {
        self.pid(i)
            .and_then(|pid| proc_field(pid, "VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
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

    /// Fails the test with `what` and the last lines of every replica's log.
    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.tails())
    }

    /// [`eventually`] that must come true: on timeout the test fails with `what` and the last
    /// lines of every replica's log.
    pub async fn eventually<T, F: Future<Output = Option<T>>>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl FnMut() -> F,
    ) -> T {
        match eventually(timeout, check).await {
            Some(value) => value,
            None => self.fail(what),
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in self.replicas.iter_mut().flatten() {
            // SAFETY: our own child. A stopped one must run again to handle SIGTERM.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        for child in self.replicas.iter_mut().flatten() {
            let _ = child.wait();
        }
    }
}

/// A field of /proc/PID/status, e.g. `State:` or `VmRSS:`.
fn proc_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).map(|v| v.trim().to_string())
}

/// Polls `check` every 250 ms until it returns Some or `timeout` passes.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    timeout: Duration,
    check: impl FnMut() -> F,
) -> Option<T> {
    poll(Duration::from_millis(250), timeout, check).await
}

/// Polls `check` every `every` until it returns Some or `timeout` passes.
pub async fn poll<T, F: Future<Output = Option<T>>>(
    every: Duration,
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
        tokio::time::sleep(every).await;
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

/// The message of claim `name`'s Bound condition.
pub async fn bound_message(namespace: &str, name: &str) -> Option<String> {
    let api: Api<Claim> = Api::namespaced(kube_client().await, namespace);
    api.get(name).await.ok()?.bound_condition().map(|c| c.message.clone())
}

/// `reason_of` for several claims; a claim without the condition gives an empty pair.
pub async fn reasons(namespace: &str, names: &[impl AsRef<str>]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(reason_of(namespace, name.as_ref()).await.unwrap_or_default());
    }
    out
}

/// Some once exactly `n` claims in `namespaces` are bound: a check for `eventually`.
pub async fn bound_exactly(namespaces: &[String], n: usize) -> Option<()> {
    let claims = claims_in(namespaces).await;
    let bound = claims.iter().filter(|c| bound_reason(c).is_some_and(|(s, _)| s == "True")).count();
    (bound == n).then_some(())
}

/// The reasons of the Events about object `name` (any namespace), space-separated.
pub fn event_reasons(name: &str) -> String {
    let selector = format!("involvedObject.name={name}");
    kubectl_ok(
        &["get", "events", "-A", "--field-selector", &selector, "-o", "jsonpath={.items[*].reason}"],
        None,
    )
}

pub async fn claims_in(namespaces: &[String]) -> Vec<Claim> {
    let mut all = Vec::new();
    for ns in namespaces {
        let api: Api<Claim> = Api::namespaced(kube_client().await, ns);
        all.extend(api.list(&ListParams::default()).await.expect("list claims").items);
    }
    all
}

/// `lockguard audit` (the full scope) over the named pools and the claims that reference
/// them. Returns the number of items allocated, or the violations.
pub async fn audit(pools: &[&str]) -> Result<usize, String> {
    use lockguard::audit::{Scope, audit};
    let client = kube_client().await;
    let claims: Vec<Claim> = Api::<Claim>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|c| pools.contains(&c.spec.pool_ref.as_str()))
        .collect();
    let mut listed = Vec::new();
    for name in pools {
        listed.push(Api::<Pool>::all(client.clone()).get(name).await.map_err(|e| e.to_string())?);
    }
    let report = audit(&listed, &claims, Scope::Full);
    if report.is_clean() {
        Ok(report.items_allocated as usize)
    } else {
        Err(report.violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }
}

/// The full audit once deleted claims' items are freed. A delete is a single write and the pool's
/// next hold frees the entry, so right after deletes a `Leak` is expected for a moment; any other
/// finding is returned at once.
pub async fn audit_at_rest(pools: &[&str]) -> Result<usize, String> {
    let only_leaks =
        |r: &Result<usize, String>| r.as_ref().is_err_and(|r| r.lines().all(|l| l.starts_with("Leak ")));
    let settled =
        eventually(Duration::from_secs(30), || async { Some(audit(pools).await).filter(|r| !only_leaks(r)) });
    match settled.await {
        Some(report) => report,
        None => audit(pools).await,
    }
}

/// Safety violations a history recorder saw for the named pools, one per line.
pub fn history_violations(replay: &lockguard::audit::history::Replay, pools: &[&str]) -> Vec<String> {
    replay
        .violations
        .iter()
        .filter(|s| pools.contains(&s.violation.pool.as_str()))
        .map(|s| format!("at revision {}: {} [{}]", s.revision, s.violation, s.context))
        .collect()
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
    lockguard_lock::etcd::EtcdConfig::from_list(endpoints)
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
        let mut command = Command::new(lockguard_binary());
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
    let claim = Claim::new(name, ClaimSpec { pool_ref: pool.into(), count, items: None });
    Api::<Claim>::namespaced(kube_client().await, ns)
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
}
