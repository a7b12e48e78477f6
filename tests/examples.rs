//! The example controller of examples/ (not lockguard's own) runs against the real API
//! server and lock etcd, two replicas, on each backend.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use support::{eventually, kube_client, lock_etcd, namespace};

/// The example's binary, built now (a no-op when `cargo test` built it already).
fn example(name: &str) -> PathBuf {
    let built = Command::new(env!("CARGO")).args(["build", "-q", "--example", name]).status();
    assert!(built.is_ok_and(|s| s.success()), "build the example {name}");
    let exe = std::env::current_exe().expect("test binary");
    let debug = exe.parent().and_then(|deps| deps.parent()).expect("target/debug");
    debug.join("examples").join(name)
}

/// Replicas of the example, killed when dropped.
struct Running(Vec<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(backend: &str, ns: &str) -> Running {
    let kubeconfig = support::shared().control_plane.kubeconfig().to_path_buf();
    let binary = example("configmap_sync");
    Running(
        (0..2)
            .map(|i| {
                Command::new(&binary)
                    .args(["--backend", backend, "--namespace", ns, "--etcd-endpoints", &lock_etcd()])
                    .args(["--identity", &format!("sync-{i}")])
                    .env("KUBECONFIG", &kubeconfig)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start the example")
            })
            .collect(),
    )
}

fn source(data: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            labels: Some(BTreeMap::from([("example.lockguard.dev/copy".into(), "true".into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("level".into(), data.into())])),
        ..ConfigMap::default()
    }
}

/// The copy's token once it shows `level`, and its holder.
async fn copied(configmaps: &Api<ConfigMap>, level: &str) -> Option<(u64, String)> {
    let copy = configmaps.get_opt("settings-copy").await.ok()??;
    let shown = copy.data.as_ref()?.get("level")?;
    let token = copy.annotations().get("example.lockguard.dev/token")?.parse().ok()?;
    let holder = copy.annotations().get("example.lockguard.dev/holder")?.clone();
    (shown == level).then_some((token, holder))
}

async fn copies_under_the_lock(backend: &str) {
    let ns = namespace(&format!("example-{backend}")).await;
    let _replicas = start(backend, &ns);
    let configmaps: Api<ConfigMap> = Api::namespaced(kube_client().await, &ns);
    configmaps.create(&PostParams::default(), &source("1")).await.expect("create the source");
    let (first, holder) = eventually(Duration::from_secs(30), || copied(&configmaps, "1"))
        .await
        .unwrap_or_else(|| panic!("{backend}: the copy never showed level 1"));
    assert!(holder == "sync-0" || holder == "sync-1", "written by a replica: {holder}");

    let patch = serde_json::json!({ "data": { "level": "2" } });
    configmaps.patch("settings", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("update");
    let (second, _) = eventually(Duration::from_secs(30), || copied(&configmaps, "2"))
        .await
        .unwrap_or_else(|| panic!("{backend}: the copy never followed the source"));
    // Written under a later acquisition of the same lock.
    assert!(second > first, "{backend}: token {second} after {first}");

    if backend == "lease" {
        let leases: Api<Lease> = Api::namespaced(kube_client().await, &ns);
        let lease = leases.get("configmap-sync-settings").await.expect("the example's Lease");
        let transitions = lease.spec.and_then(|s| s.lease_transitions).unwrap_or_default();
        assert!(
            transitions as u64 >= second,
            "the token is the Lease's transitions: {transitions} < {second}"
        );
    }
}

#[tokio::test]
async fn the_example_controller_copies_under_an_etcd_lock() {
    copies_under_the_lock("etcd").await;
}

#[tokio::test]
async fn the_example_controller_copies_under_a_lease_lock() {
    copies_under_the_lock("lease").await;
}
