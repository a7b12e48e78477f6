//! Shared helpers for the tests against real servers (see hack/devenv).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

pub use devenv::shared;

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
