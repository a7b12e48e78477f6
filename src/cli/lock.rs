//! `lockguard lock` and `lockguard locks`, modelled on `etcdctl lock`.

use std::process::ExitCode;
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use super::EtcdArgs;
use crate::lock::etcd::{EtcdConfig, EtcdLock};
use crate::lock::lease::LeaseLock;
use crate::lock::{Backend, Lock, LockError, LockGuard, LockOptions, host_name, unique_identity};

/// Exit codes besides the command's own.
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_TIMEOUT: u8 = 3;
pub const EXIT_LOST: u8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Etcd,
    Lease,
}

/// How to reach either backend.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Which lock: an etcd lease lock or a Kubernetes Lease.
    #[arg(long, value_enum, default_value = "etcd")]
    pub backend: BackendArg,
    /// The lock etcd (etcd backend; default endpoint http://127.0.0.1:2379).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Namespace of the Lease (Lease backend; cluster access from KUBECONFIG or in-cluster).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    /// Lock name: an etcd key prefix, or the Lease's name.
    pub name: String,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Seconds the lock lives without a keep-alive (2–300).
    #[arg(long, default_value_t = 10)]
    pub ttl: u32,
    /// Seconds to wait for the lock.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Holder identity; default: host name plus a random suffix.
    #[arg(long)]
    pub identity: Option<String>,
    /// Command to run while holding the lock.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct LocksArgs {
    /// Lock name (etcd: required; Lease: optional filter).
    pub name: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub async fn lock(args: LockArgs) -> ExitCode {
    let identity = args.identity.clone().unwrap_or_else(|| unique_identity(&host_name()));
    let options = match LockOptions::new(args.ttl, Duration::from_secs(args.timeout)) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let connect_timeout = options.timeout().min(Duration::from_secs(10));
    match args.backend.backend {
        BackendArg::Etcd => match etcd_config(&args.backend).connect(connect_timeout).await {
            Ok(client) => hold(EtcdLock::new(client, identity), &args, options).await,
            Err(e) => fail(e),
        },
        BackendArg::Lease => match kube::Client::try_default().await {
            Ok(client) => {
                hold(LeaseLock::new(client, &args.backend.namespace, identity), &args, options).await
            }
            Err(e) => fail(LockError::Kube(e)),
        },
    }
}

/// SIGINT and SIGTERM, installed before anything is held so neither can kill the process
/// while it holds a lock.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// The exit code for the signal that arrived: 130 for SIGINT, 143 for SIGTERM.
    async fn recv(&mut self) -> u8 {
        tokio::select! {
            _ = self.interrupt.recv() => 130,
            _ = self.terminate.recv() => 143,
        }
    }
}

async fn hold(lock: impl Lock, args: &LockArgs, options: LockOptions) -> ExitCode {
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lockguard: cannot install signal handlers: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let acquired = tokio::select! {
        acquired = lock.acquire(&args.name, options) => acquired,
        // Dropping the acquisition withdraws from the queue.
        code = signals.recv() => return ExitCode::from(code),
    };
    let guard = match acquired {
        Ok(g) => g,
        Err(e @ LockError::Timeout { .. }) => {
            eprintln!("lockguard: {e}");
            return ExitCode::from(EXIT_TIMEOUT);
        }
        Err(e) => return fail(e),
    };
    tracing::info!(
        lock = %args.name,
        key = guard.key(),
        token = guard.fencing_token(),
        waited_ms = guard.waited().as_millis() as u64,
        backend = %lock.backend(),
        "acquired"
    );
    let code = match args.command.split_first() {
        Some((program, rest)) => run_command(&guard, program, rest, &mut signals).await,
        None => hold_until_signal(&guard, &mut signals).await,
    };
    if let Err(e) = guard.release().await {
        eprintln!("lockguard: release: {e}");
    }
    code
}

async fn run_command(guard: &LockGuard, program: &str, args: &[String], signals: &mut Signals) -> ExitCode {
    let mut child = match Command::new(program)
        .args(args)
        .env("LOCKGUARD_LOCK_KEY", guard.key())
        .env("LOCKGUARD_FENCING_TOKEN", guard.fencing_token().to_string())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockguard: cannot run {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let pid = child.id();
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) => exit_code_of(s),
            Err(e) => {
                eprintln!("lockguard: waiting for {program}: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        },
        _ = guard.lost() => {
            // Unlike `etcdctl lock`, never leave the command running without the lock.
            eprintln!(
                "lockguard: lock {} lost (keep-alive failed past its deadline); stopping {program}",
                guard.name()
            );
            stop(&mut child, pid).await;
            ExitCode::from(EXIT_LOST)
        }
        code = signals.recv() => {
            stop(&mut child, pid).await;
            ExitCode::from(code)
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
async fn stop(child: &mut tokio::process::Child, pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Without a command: print the key and token, hold until SIGINT/SIGTERM (exit 0).
async fn hold_until_signal(guard: &LockGuard, signals: &mut Signals) -> ExitCode {
    println!("{}", guard.key());
    println!("token: {}", guard.fencing_token());
    tokio::select! {
        _ = signals.recv() => ExitCode::SUCCESS,
        _ = guard.lost() => {
            eprintln!("lockguard: lock {} lost (keep-alive failed past its deadline)", guard.name());
            ExitCode::from(EXIT_LOST)
        }
    }
}

pub async fn locks(args: LocksArgs) -> ExitCode {
    let timeout = Duration::from_secs(10);
    match args.backend.backend {
        BackendArg::Etcd => {
            let Some(name) = args.name else {
                eprintln!("lockguard: give the lock name whose queue to list");
                return ExitCode::from(EXIT_ERROR);
            };
            let client = match etcd_config(&args.backend).connect(timeout).await {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            match EtcdLock::new(client, "").queue(&name).await {
                Ok(queue) => {
                    println!(
                        "{:<8} {:<40} {:<32} {:>8} {:>9}",
                        "ROLE", "KEY", "IDENTITY", "TOKEN", "TTL-LEFT"
                    );
                    for (i, entry) in queue.iter().enumerate() {
                        let role = if i == 0 { "holder" } else { "waiter" };
                        let ttl = entry.ttl_left.map(|t| format!("{t}s")).unwrap_or_else(|| "?".into());
                        println!(
                            "{role:<8} {:<40} {:<32} {:>8} {ttl:>9}",
                            entry.key, entry.identity, entry.token
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        BackendArg::Lease => {
            let client = match kube::Client::try_default().await {
                Ok(c) => c,
                Err(e) => return fail(LockError::Kube(e)),
            };
            match LeaseLock::new(client, &args.backend.namespace, "").list().await {
                Ok(leases) => {
                    println!("{:<32} {:<32} {:>8} {:>9}", "LEASE", "HOLDER", "TOKEN", "TIME-LEFT");
                    for l in leases.iter().filter(|l| args.name.as_ref().is_none_or(|n| *n == l.name)) {
                        let left = match (&l.holder, l.seconds_left) {
                            (Some(_), Some(s)) => format!("{}s", s.max(0)),
                            _ => "-".into(),
                        };
                        println!(
                            "{:<32} {:<32} {:>8} {left:>9}",
                            l.name,
                            l.holder.as_deref().unwrap_or("<free>"),
                            l.token
                        );
                    }
                    println!("(waiters of a Lease are not recorded: they only watch it)");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

/// The etcd to lock on; like `etcdctl`, the local default port when none is given.
pub fn etcd_config(args: &BackendArgs) -> EtcdConfig {
    args.etcd.config().unwrap_or_else(|| EtcdConfig::new(["http://127.0.0.1:2379"]))
}

impl From<BackendArg> for Backend {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Etcd => Backend::Etcd,
            BackendArg::Lease => Backend::Lease,
        }
    }
}

fn fail(error: LockError) -> ExitCode {
    eprintln!("lockguard: {error}");
    ExitCode::from(EXIT_ERROR)
}

fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from(128 + signal as u8),
        _ => ExitCode::from(EXIT_ERROR),
    }
}
