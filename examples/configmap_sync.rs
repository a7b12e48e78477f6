//! A kube-rs controller that is not lockguard's, guarding its reconcile with lockguard's
//! lock: it keeps a copy of every ConfigMap labelled `example.lockguard.dev/copy=true` in
//! `<name>-copy`, and notes on the copy who wrote it under which fencing token. Run several:
//! the lock lets one replica at a time write a copy, on either backend.
//!
//! ```text
//! cargo run --example configmap_sync -- --backend lease --namespace default
//! cargo run --example configmap_sync -- --backend etcd --etcd-endpoints http://127.0.0.1:2379
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use lockguard_lock::etcd::EtcdConfig;
use lockguard_lock::{AnyLock, Backend, Lock, LockConfig, LockError, LockOptions, unique_identity};

const SELECTOR: &str = "example.lockguard.dev/copy=true";

#[derive(Parser)]
struct Args {
    /// Which lock guards the reconciles.
    #[arg(long, value_enum, default_value = "lease")]
    backend: Backend,
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: String,
    /// The namespace whose ConfigMaps are copied (and where the Leases live).
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long)]
    identity: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("lock: {0}")]
    Lock(#[from] LockError),
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    configmaps: Api<ConfigMap>,
    lock: AnyLock,
    identity: String,
}

async fn reconcile(source: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = source.name_any();
    // The lock, in three lines: take it (waiting at most 10 s; lost if not renewed within
    // its 5 s TTL), write, release.
    let options = LockOptions::new(5, Duration::from_secs(10))?;
    let guard = ctx.lock.acquire(&format!("configmap-sync-{name}"), options).await?;
    let annotations = BTreeMap::from([
        ("example.lockguard.dev/holder".to_string(), ctx.identity.clone()),
        ("example.lockguard.dev/token".to_string(), guard.fencing_token().to_string()),
    ]);
    let copy = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("{name}-copy")),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        data: source.data.clone(),
        ..ConfigMap::default()
    };
    // A holder that was paused past its TTL must not write: by now another may hold the lock.
    if guard.is_lost() {
        return Err(LockError::Fenced { name: guard.name().into(), token: guard.fencing_token() }.into());
    }
    let params = PatchParams::apply("configmap-sync").force();
    ctx.configmaps.patch(&format!("{name}-copy"), &params, &Patch::Apply(&copy)).await?;
    guard.release().await?;
    tracing::info!(configmap = %name, token = copy_token(&copy), "copied");
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn copy_token(copy: &ConfigMap) -> &str {
    copy.annotations().get("example.lockguard.dev/token").map_or("", String::as_str)
}

fn error_policy(source: Arc<ConfigMap>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(configmap = %source.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(1))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info,kube=warn").init();
    let args = Args::parse();
    let client = Client::try_default().await?;
    let identity = args.identity.unwrap_or_else(|| unique_identity("configmap-sync"));
    let config = LockConfig::new(&identity)
        .with_etcd(EtcdConfig::from_list(&args.etcd_endpoints))
        .with_leases(client.clone(), &args.namespace);
    let lock = config.connect(args.backend, Duration::from_secs(5)).await?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client, &args.namespace);
    let context = Arc::new(Context { configmaps: configmaps.clone(), lock, identity });
    tracing::info!(backend = %args.backend, "configmap-sync started");
    Controller::new(configmaps, watcher::Config::default().labels(SELECTOR))
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
    Ok(())
}
