//! `lockguard lock` and `lockguard locks`, modelled on `etcdctl lock`.

use std::process::ExitCode;
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

use super::EtcdArgs;
use lockguard_lock::etcd::{EtcdConfig, EtcdLock};
use lockguard_lock::lease::LeaseLock;
use lockguard_lock::{
    Backend, Lock, LockConfig, LockError, LockGuard, LockOptions, host_name, unique_identity,
};

/// Exit codes besides the command's own.
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_TIMEOUT: u8 = 3;
pub const EXIT_LOST: u8 = 4;

/// How to reach either backend.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Which lock: an etcd lease lock or a Kubernetes Lease.
    #[arg(long, value_enum, default_value = "etcd")]
    pub backend: Backend,
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
    let config = lock_config(&args.backend, identity);
    match config.connect(args.backend.backend, connect_timeout).await {
        Ok(lock) => hold(lock, &args, options).await,
        Err(e) => fail(e),
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
        code = signals.recv() => {
            // Dropping the acquisition withdraws our key in the background; wait for that,
            // or the runtime ends first and the key blocks the queue until its lease expires.
            lockguard_lock::drain(Duration::from_secs(5)).await;
            return ExitCode::from(code);
        }
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
        Some((program, rest)) => {
            let grace = loss_grace(options);
            run_command(&guard, program, rest, grace, &mut signals).await
        }
        None => hold_until_signal(&guard, &mut signals).await,
    };
    if let Err(e) = guard.release().await {
        eprintln!("lockguard: release: {e}");
    }
    code
}

/// How long a command may take to stop after the lock was lost before it is killed: half
/// the margin between the holder's loss deadline and the lease's expiry on the server, so
/// the command is gone before the next holder can get the lock (if this process runs).
pub fn loss_grace(options: LockOptions) -> Duration {
    (options.ttl() - lockguard_lock::lost_deadline(options.ttl())) / 2
}

/// How long a command may take to stop after SIGINT/SIGTERM; the lock is still held then.
const SIGNAL_GRACE: Duration = Duration::from_secs(10);

async fn run_command(
    guard: &LockGuard,
    program: &str,
    args: &[String],
    grace: Duration,
    signals: &mut Signals,
) -> ExitCode {
    // The reaper exists before the command does, and leads the command's process group: no
    // moment in which lockguard could die and leave what the command started running.
    let reaper = Reaper::spawn().ok();
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LOCKGUARD_LOCK_KEY", guard.key())
        .env("LOCKGUARD_FENCING_TOKEN", guard.fencing_token().to_string())
        // A process group of its own (the reaper's), so that stopping it reaches everything
        // it started.
        .process_group(reaper.as_ref().map_or(0, |r| r.0))
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe; it makes the command die with this process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockguard: cannot run {program}: {e}");
            return ExitCode::from(127);
        }
    };
    let group = reaper.as_ref().map(|r| r.0).or(child.id().map(|pid| pid as libc::pid_t));
    let code = tokio::select! {
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
            stop(&mut child, group, grace).await;
            ExitCode::from(EXIT_LOST)
        }
        code = signals.recv() => {
            stop(&mut child, group, SIGNAL_GRACE).await;
            ExitCode::from(code)
        }
    };
    // Whatever the command left behind in its group goes with it.
    if let Some(g) = group {
        signal_group(g, libc::SIGKILL);
    }
    drop(reaper);
    code
}

/// SIGTERM to the command's process group, then SIGKILL to the group after `grace`.
async fn stop(child: &mut tokio::process::Child, group: Option<libc::pid_t>, grace: Duration) {
    let Some(group) = group else { return };
    signal_group(group, libc::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(group, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

fn signal_group(group: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) on the process group our child leads.
    unsafe { libc::kill(-group, signal) };
}

/// A small process that kills the command's group when lockguard dies, even by SIGKILL:
/// the command itself gets a parent-death signal, but what it started does not. It leads
/// that group (its pid is the group id), so the group exists before the command starts.
struct Reaper(libc::pid_t);

impl Reaper {
    fn spawn() -> std::io::Result<Self> {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the child only makes async-signal-safe calls (setpgid, signal, getppid,
        // nanosleep, kill, _exit) and never returns into Rust code.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => unsafe {
                libc::setpgid(0, 0);
                // The command's stop (SIGTERM to the group) must not end the reaper early.
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                let pause = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
                while libc::getppid() == parent {
                    libc::nanosleep(&pause, std::ptr::null_mut());
                }
                libc::kill(0, libc::SIGKILL);
                libc::_exit(0)
            },
            pid => {
                // Also from here, so the group exists whichever process runs first.
                // SAFETY: setpgid on our own child, which has not exec'd.
                unsafe { libc::setpgid(pid, pid) };
                Ok(Self(pid))
            }
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // SAFETY: our own child; reaped right after.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
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
        Backend::Etcd => {
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
        Backend::Lease => {
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

fn lock_config(args: &BackendArgs, identity: String) -> LockConfig {
    LockConfig {
        lease_namespace: args.namespace.clone(),
        ..LockConfig::new(identity).with_etcd(etcd_config(args))
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
