use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lockguard::telemetry::{self, LogFormat};
use lockguard::{cli, failpoint};

#[derive(Parser)]
#[command(
    name = "lockguard",
    version,
    about = "A Kubernetes operator that takes a fenced distributed lock before it mutates shared state"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (Claim and Pool controllers).
    Run(cli::run::RunArgs),
    /// Print the CustomResourceDefinitions (YAML, as in crds/).
    Crd,
    /// Wait for a lock, then run COMMAND while holding it, or hold until Ctrl-C.
    Lock(cli::lock::LockArgs),
    /// List the holder and waiters of a lock.
    Locks(cli::lock::LocksArgs),
    /// Check the allocation invariants of a live cluster (read-only); exit 1 on a violation.
    Audit(cli::audit::AuditArgs),
    /// Make the lock etcd's certificates (Secrets) and, given its endpoints, its users and auth.
    Certs(cli::certs::CertsArgs),
}

/// jemalloc gives back what a burst of thousands of claims freed; glibc's malloc kept it
/// spread over its arenas (docs/benchmarks.md: 20,000 claims, 151-154 MiB → 108 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        // On a worker, not in `block_on`: the controllers would run on the main thread and
        // every response their connections (on the workers) receive would wake it from
        // another thread; a pod of one CPU runs one worker, and the work stays on it.
        Ok(runtime) => runtime.block_on(async {
            tokio::spawn(run()).await.unwrap_or_else(|e| {
                eprintln!("lockguard: {e}");
                ExitCode::from(cli::lock::EXIT_ERROR)
            })
        }),
        Err(e) => {
            eprintln!("lockguard: cannot start the async runtime: {e}");
            ExitCode::from(cli::lock::EXIT_ERROR)
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let failpoints = std::env::var(failpoint::ENV).ok();
    if let Some(refusal) = failpoint::refusal(failpoints.as_deref(), failpoint::COMPILED) {
        eprintln!("lockguard: {refusal}");
        return ExitCode::from(cli::lock::EXIT_ERROR);
    }
    match cli.command {
        Command::Lock(args) => cli::lock::lock(args).await,
        Command::Locks(args) => cli::lock::locks(args).await,
        Command::Crd => match lockguard::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lockguard: cannot render the CRDs: {e}");
                ExitCode::from(cli::lock::EXIT_ERROR)
            }
        },
        Command::Run(args) => cli::run::run(args).await,
        Command::Audit(args) => cli::audit::audit(args).await,
        Command::Certs(args) => cli::certs::certs(args).await,
    }
}
