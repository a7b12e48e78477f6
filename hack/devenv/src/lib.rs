//! A local Kubernetes control plane and etcd servers for lockguard's tests and demo.
//!
//! Real processes on loopback, built from the official Go modules by `hack/tools.sh`:
//! `etcd` and `kube-apiserver` from `bin/`. Nothing outlives the harness: children die with
//! it (see [`process`]), run directories are removed on exit, and directories left by a
//! harness that was killed are swept by the next one.

pub mod certs;
pub mod control_plane;
pub mod controllers;
pub mod etcd;
pub mod netns;
pub mod node;
pub mod process;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub use control_plane::{ControlPlane, client_for};
pub use controllers::ControllerManager;
pub use etcd::{EtcdCluster, EtcdServer, http_get};
pub use process::Process;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("missing binary {0}: run `make tools` first")]
    MissingBinary(PathBuf),
    #[error("{what} did not become ready; last log lines:\n{log}")]
    NotReady { what: String, log: String },
    #[error("{0} is not running")]
    NotRunning(String),
    #[error("certificate generation: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    #[error("the TokenRequest for {0} returned no token")]
    Token(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The directory of the Go-built tools: `$LOCKGUARD_BIN_DIR`, else the repository's `bin/`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("LOCKGUARD_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bin"))
}

pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if path.is_file() { Ok(path) } else { Err(Error::MissingBinary(path)) }
}

/// The Kubernetes minor version the control plane runs: `$LOCKGUARD_KUBERNETES` (e.g. `1.32`,
/// the oldest supported, built by hack/kube-1.32), or none for hack/kube's release.
pub fn kubernetes_version() -> Option<String> {
    std::env::var("LOCKGUARD_KUBERNETES").ok().filter(|v| !v.is_empty())
}

/// kube-apiserver or kubectl of that version: `bin/NAME`, or `bin/NAME-<version>`.
pub fn kubernetes_binary(name: &str) -> Result<PathBuf> {
    match kubernetes_version() {
        Some(version) => binary(&format!("{name}-{version}")),
        None => binary(name),
    }
}

/// Root of all run directories: `$LOCKGUARD_DEVENV_DIR`, else `$TMPDIR/lockguard-devenv`.
pub fn runs_root() -> PathBuf {
    std::env::var_os("LOCKGUARD_DEVENV_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("lockguard-devenv"))
}

/// A fresh directory `<root>/<pid>-<label>-<n>`; first removes the directories of
/// harness processes that no longer run.
pub fn run_dir(label: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    sweep();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = runs_root().join(format!("{}-{label}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes run directories whose harness process is gone; returns how many.
pub fn sweep() -> usize {
    let Ok(entries) = std::fs::read_dir(runs_root()) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = owner
            && !alive(pid)
        {
            // A node's pods, shims, cgroups and network outlive its harness: undo them first.
            for done in node::cleanup_dead(&entry.path(), pid as u32) {
                eprintln!("devenv sweep: {}: {done}", entry.path().display());
            }
            if std::fs::remove_dir_all(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

/// Processes started by a harness that is no longer running: `(pid, command line)`.
/// Their command lines name the harness's run directory, `<root>/<harness pid>-…`.
pub fn orphans() -> Vec<(u32, String)> {
    let root = runs_root().display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let command = String::from_utf8_lossy(&raw).replace('\0', " ");
        let Some(at) = command.find(&format!("{root}/")) else { continue };
        let owner = command[at + root.len() + 1..].split('-').next().and_then(|p| p.parse::<i32>().ok());
        if owner.is_some_and(|owner| !alive(owner)) {
            found.push((pid, command.trim().to_string()));
        }
    }
    found
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// What one test binary shares between its tests: a control plane and an etcd for locks.
/// Tests isolate themselves by namespace and lock-name prefix.
#[derive(Debug)]
pub struct Shared {
    pub control_plane: ControlPlane,
    pub lock_etcd: EtcdServer,
    /// Started by the first test that asks ([`Shared::controllers`]).
    controllers: OnceLock<ControllerManager>,
    dir: PathBuf,
}

impl Shared {
    /// kube-controller-manager with the [`controllers::TENANCY`] controllers, started on first
    /// use.
    pub fn controllers(&self) -> &ControllerManager {
        self.controllers.get_or_init(|| {
            ControllerManager::start(&self.control_plane, controllers::TENANCY)
                .unwrap_or_else(|e| panic!("devenv: cannot start kube-controller-manager: {e}"))
        })
    }
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// Starts the shared environment on first use (on its own thread and runtime, so any test
/// runtime may call it) and tears it down when the process exits.
pub fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let dir = run_dir("shared")?;
            let control_plane = runtime.block_on(ControlPlane::start(&dir.join("control-plane")))?;
            let lock_etcd = etcd::start_single(&dir, "lock-etcd")?;
            // SAFETY: registers a plain extern "C" function.
            unsafe { libc::atexit(teardown_shared) };
            Ok::<_, Error>(Shared { control_plane, lock_etcd, controllers: OnceLock::new(), dir })
        })
        .join()
        .expect("devenv start-up thread panicked")
        .unwrap_or_else(|e| panic!("devenv: cannot start the shared environment: {e}"))
    })
}

extern "C" fn teardown_shared() {
    if let Some(shared) = SHARED.get() {
        let pids = [
            Some(shared.control_plane.apiserver_pid()),
            shared.control_plane.etcd().pid(),
            shared.lock_etcd.pid(),
            shared.controllers.get().map(ControllerManager::pid),
        ];
        for pid in pids.into_iter().flatten() {
            // SAFETY: our own children; the statics are never dropped, so kill them here.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&shared.dir);
    }
}
