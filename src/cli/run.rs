//! `lockguard run`: the operator.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::controller::{self, Locks, Settings};
use crate::lock::etcd::EtcdConfig;
use crate::lock::{host_name, unique_identity};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Comma-separated endpoints of the lock etcd (pools with backend Etcd).
    #[arg(long, env = "LOCKGUARD_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// CA certificate (PEM) of the lock etcd.
    #[arg(long, env = "LOCKGUARD_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for the lock etcd.
    #[arg(long, env = "LOCKGUARD_ETCD_CERT")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM) for the lock etcd.
    #[arg(long, env = "LOCKGUARD_ETCD_KEY")]
    pub etcd_key: Option<PathBuf>,
    /// This replica's identity in locks and Events; default: pod or host name plus a random
    /// suffix, so a restarted replica never takes its old identity.
    #[arg(long)]
    pub identity: Option<String>,
    /// Namespace of the Leases of pools with backend Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockguard-system")]
    pub lease_namespace: String,
    /// Reconciles running at once per controller.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u16,
}

pub async fn run(args: RunArgs) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lockguard: no cluster access (KUBECONFIG or in-cluster config): {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = args.identity.unwrap_or_else(|| unique_identity(&host_name()));
    let etcd = args.etcd_endpoints.as_deref().map(|list| EtcdConfig {
        ca: args.etcd_ca.clone(),
        cert: args.etcd_cert.clone(),
        key: args.etcd_key.clone(),
        ..EtcdConfig::from_list(list)
    });
    if etcd.is_none() {
        tracing::warn!("no --etcd-endpoints: pools with lock backend Etcd will report LockUnavailable");
    }
    let locks = Locks::new(client.clone(), etcd, &args.lease_namespace, &identity);
    let settings =
        Settings { identity, lease_namespace: args.lease_namespace, concurrency: args.concurrency.max(1) };
    match controller::run(client, locks, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}
