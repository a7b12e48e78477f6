//! `lockguard run`: the operator, its health and metrics endpoints, and optional leader
//! election built on the lock module.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::EtcdArgs;
use crate::controller::{self, Locks, Settings};

/// Reconciles running at once per controller, unless `--concurrency` says otherwise. Most
/// of a reconcile is waiting for the API server, so this is well above the cores: a backlog
/// of 1,000 claims on one pool bound at 443 claims/s with 16, 535 with 32 and 621 with 64
/// (one status write each; `make bench`, backlog1000).
pub const DEFAULT_CONCURRENCY: u16 = 64;
use crate::health::{self, Health};
use crate::metrics::Metrics;
use lockguard_lock::{
    Backend, Lock, LockConfig, LockError, LockGuard, LockOptions, MAX_TIMEOUT, host_name, unique_identity,
};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The lock etcd (pools with backend Etcd).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This replica's identity in locks and Events; default: pod or host name plus a random
    /// suffix, so a restarted replica never takes its old identity.
    #[arg(long)]
    pub identity: Option<String>,
    /// Namespace of the Leases (pools with backend Lease, and leader election).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockguard-system")]
    pub lease_namespace: String,
    /// Reconciles running at once per controller.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: u16,
    /// Where to serve /metrics, /healthz and /readyz (port 0: any free port, logged).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Only the elected leader reconciles (default: every replica is active).
    #[arg(long)]
    pub leader_elect: bool,
    /// The lock that elects the leader.
    #[arg(long, value_enum, default_value = "lease")]
    pub leader_elect_backend: Backend,
    /// Seconds a dead leader keeps the leadership (the lock's TTL).
    #[arg(long, default_value_t = 15)]
    pub leader_elect_ttl: u32,
    /// Divide the pools between the replicas (each announces itself with a Lease); with
    /// `--shard=false` every replica serves every pool and the pool lock decides who writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub shard: bool,
    /// Replicas of one group divide the pools between them; replicas of another group (a
    /// second install in the same namespace, a test) serve them again on their own.
    #[arg(long, default_value = "default")]
    pub shard_group: String,
    /// Seconds a replica that stopped renewing its member Lease keeps its pools.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub member_lease_seconds: u64,
}

pub async fn run(args: RunArgs) -> ExitCode {
    match serve(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lockguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let client =
        kube::Client::try_default().await.context("no cluster access (KUBECONFIG or in-cluster config)")?;
    let identity = args.identity.clone().unwrap_or_else(|| unique_identity(&host_name()));
    let etcd = args.etcd.config();
    if etcd.is_none() {
        tracing::warn!("no --etcd-endpoints: pools with lock backend Etcd will report LockUnavailable");
    }

    let shutdown = CancellationToken::new();
    spawn_signal_watch(shutdown.clone())?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let bound = health::serve(args.metrics_addr, health, shutdown.clone().cancelled_owned())
        .await
        .with_context(|| format!("serve metrics on {}", args.metrics_addr))?;
    tracing::info!(%identity, metrics = %bound, "lockguard starting");

    let config =
        LockConfig { etcd, ..LockConfig::new(&identity).with_leases(client.clone(), &args.lease_namespace) };
    let locks = Locks::new(config.clone(), metrics.clone());
    let settings = Settings {
        identity: identity.clone(),
        concurrency: args.concurrency.max(1),
        shard: args.shard,
        shard_group: args.shard_group.clone(),
        member_lease: std::time::Duration::from_secs(args.member_lease_seconds),
        namespace: args.lease_namespace.clone(),
    };
    let controllers = controller::run(client.clone(), locks, settings, metrics, ready, shutdown.clone());
    if !args.leader_elect {
        controllers.await?;
        return Ok(ExitCode::SUCCESS);
    }

    let leadership = tokio::select! {
        leadership = campaign(&args, &config) => leadership?,
        _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
    };
    tracing::info!(%identity, token = leadership.fencing_token(), "elected leader; reconciling");
    tokio::select! {
        result = controllers => {
            result?;
            leadership.release().await.ok();
            Ok(ExitCode::SUCCESS)
        }
        _ = leadership.lost() => {
            // As client-go does: a leader that lost its lease stops at once; a fresh
            // process (new identity) campaigns again.
            tracing::error!("leadership lost; exiting");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Waits until this replica holds the leader lock.
async fn campaign(args: &RunArgs, config: &LockConfig) -> anyhow::Result<LockGuard> {
    let options = LockOptions::new(args.leader_elect_ttl, MAX_TIMEOUT)?;
    let backend = args.leader_elect_backend;
    if backend == Backend::Etcd && config.etcd.is_none() {
        anyhow::bail!("--leader-elect-backend etcd needs --etcd-endpoints");
    }
    let name = match backend {
        Backend::Etcd => "lockguard/leader",
        Backend::Lease => "lockguard-leader",
    };
    tracing::info!(%backend, "campaigning for leadership");
    loop {
        let attempt = match config.connect(backend, Duration::from_secs(5)).await {
            Ok(lock) => lock.acquire(name, options).await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok(guard) => return Ok(guard),
            Err(LockError::Timeout { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %e, "leader election: lock unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

fn spawn_signal_watch(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down: finishing reconciles, releasing locks");
        shutdown.cancel();
    });
    Ok(())
}
