//! The command-line front ends of the library.

pub mod audit;
pub mod certs;
pub mod lock;
pub mod run;

use std::path::PathBuf;

use lockguard_lock::etcd::EtcdConfig;

/// How to reach the lock etcd, shared by every subcommand that talks to it.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// Comma-separated etcd endpoints (https:// with TLS).
    #[arg(long = "etcd-endpoints", env = "LOCKGUARD_ETCD_ENDPOINTS")]
    pub endpoints: Option<String>,
    /// CA certificate (PEM) that signed the etcd server certificates.
    #[arg(long = "etcd-ca", env = "LOCKGUARD_ETCD_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long = "etcd-cert", env = "LOCKGUARD_ETCD_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long = "etcd-key", env = "LOCKGUARD_ETCD_KEY")]
    pub key: Option<PathBuf>,
}

impl EtcdArgs {
    /// The configuration, if endpoints were given.
    pub fn config(&self) -> Option<EtcdConfig> {
        self.endpoints.as_deref().map(|list| EtcdConfig {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ..EtcdConfig::from_list(list)
        })
    }
}
