//! A rolling upgrade from the newest release the CHANGELOG records: its replicas and this version's run side by side
//! on pools with bound claims while claims keep coming, then the old ones are stopped as a
//! Deployment's rolling update stops them. No item may be held twice, and no bound claim may
//! lose or change an item, at any revision.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use lockguard::api::{Claim, ClaimSpec, Pool};
use lockguard::audit::history::Recorder;
use support::{OPERATOR_NAMESPACE, Replicas, Spec, repo};

/// The binary and CRDs of the newest release CHANGELOG.md records, built once per commit
/// (hack/release.sh). Each release is tested as an upgrade from the one before it.
fn newest_release() -> PathBuf {
    let out =
        std::process::Command::new(repo().join("hack/release.sh")).output().expect("run hack/release.sh");
    assert!(out.status.success(), "hack/release.sh: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn kubectl(cp: &devenv::ControlPlane, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cp
        .kubectl()
        .expect("bin/kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl output");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A control plane and a lock etcd of their own, with the operator's namespace and RBAC
/// installed but no CRDs (each test installs the ones it is about).
struct Cluster {
    dir: PathBuf,
    cp: devenv::ControlPlane,
    lock_etcd: devenv::etcd::EtcdServer,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start(label: &str) -> Self {
        let dir = devenv::run_dir(label).expect("run dir");
        let cp = devenv::ControlPlane::start(&dir.join("control-plane")).await.expect("control plane");
        let lock_etcd = devenv::etcd::start_single(&dir, "lock-etcd").expect("lock etcd");
        let deploy = repo().join("deploy");
        kubectl(&cp, &["apply", "-f", deploy.join("manager/namespace.yaml").to_str().expect("utf8")], None);
        kubectl(&cp, &["apply", "-k", deploy.join("rbac").to_str().expect("utf8")], None);
        let kubeconfig = cp.service_account_kubeconfig(OPERATOR_NAMESPACE, "lockguard").await.expect("token");
        Self { dir, cp, lock_etcd, kubeconfig }
    }

    /// No replica yet, under the operator's service account.
    fn replicas(&self) -> Replicas {
        Replicas::none(&self.kubeconfig, &self.lock_etcd.endpoint(), &[])
    }
}

/// The CRDs of `crds` (a file or a kustomization directory), Established.
fn apply_crds(cp: &devenv::ControlPlane, crds: &Path) {
    let path = crds.to_str().expect("utf8 path");
    kubectl(cp, &if crds.is_dir() { ["apply", "-k", path] } else { ["apply", "-f", path] }, None);
    let crds = ["crd/pools.lockguard.dev", "crd/claims.lockguard.dev"];
    kubectl(cp, &["wait", "--for=condition=Established", "--timeout=60s", crds[0], crds[1]], None);
}

async fn create_claims(client: &Client, ns: &str, pool: &str, names: impl Iterator<Item = String>) {
    let api: Api<Claim> = Api::namespaced(client.clone(), ns);
    for name in names {
        let claim = Claim::new(&name, ClaimSpec { pool_ref: pool.into(), count: 1, items: None });
        api.create(&PostParams::default(), &claim).await.expect("create claim");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each claim's items as its status shows them.
async fn items(client: &Client, ns: &str) -> BTreeMap<String, Vec<String>> {
    let claims =
        Api::<Claim>::namespaced(client.clone(), ns).list(&ListParams::default()).await.expect("list");
    claims.items.into_iter().map(|c| (c.name_any(), c.shown_items().to_vec())).collect()
}

/// Waits until `n` claims of `ns` show an item each; fails with the replicas' logs.
async fn all_bound(client: &Client, ns: &str, n: usize, replicas: &Replicas, what: &str) {
    replicas
        .eventually(Duration::from_secs(90), what, || async {
            let shown = items(client, ns).await;
            (shown.len() == n && shown.values().all(|i| i.len() == 1)).then_some(())
        })
        .await;
}

/// Waits until a watch opened now decodes pools with this version's schema: a probe pool's
/// `status.ledgerFormat` comes through instead of being pruned.
async fn new_schema_served(client: &Client) {
    let pools: Api<Pool> = Api::all(client.clone());
    let probe: Pool = serde_json::from_value(serde_json::json!({
        "apiVersion": "lockguard.dev/v1alpha1", "kind": "Pool", "metadata": { "name": "schema-probe" },
        "spec": { "items": { "list": ["x"] } }
    }))
    .expect("probe pool");
    pools.create(&PostParams::default(), &probe).await.expect("create the probe pool");
    let status = serde_json::json!({ "status": { "ledgerFormat": 2 } });
    let patch = kube::api::Patch::Merge(&status);
    pools
        .patch_status("schema-probe", &kube::api::PatchParams::default(), &patch)
        .await
        .expect("probe status");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let config = watcher::Config::default().fields("metadata.name=schema-probe");
        let mut events = watcher(pools.clone(), config).default_backoff().applied_objects().boxed();
        let first = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
        if let Ok(Some(Ok(pool))) = first
            && pool.status.and_then(|s| s.ledger_format) == Some(2)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new Pool schema was not served within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    pools.delete("schema-probe", &Default::default()).await.expect("delete the probe pool");
}

/// Every status a claim showed, in order, from a watch of the claims: once bound, a claim
/// must show the same items until it is deleted.
fn watch_statuses(client: Client, ns: &str) -> Arc<Mutex<BTreeMap<String, Vec<Vec<String>>>>> {
    let seen: Arc<Mutex<BTreeMap<String, Vec<Vec<String>>>>> = Arc::default();
    let record = seen.clone();
    let claims: Api<Claim> = Api::namespaced(client, ns);
    // With a backoff: once the test's control plane is gone, a watch retrying at once would
    // spin and hold up the runtime's shutdown (a make test run hung there).
    let watch = watcher(claims, watcher::Config::default()).default_backoff();
    tokio::spawn(watch.applied_objects().for_each(move |claim| {
        if let Ok(claim) = claim {
            let mut seen = record.lock().unwrap_or_else(|e| e.into_inner());
            let history = seen.entry(claim.uid().unwrap_or_default()).or_default();
            let items = claim.shown_items().to_vec();
            if history.last() != Some(&items) {
                history.push(items);
            }
        }
        async {}
    }));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_from_the_newest_release_moves_no_item() {
    let old = newest_release();
    eprintln!(
        "upgrading from {} on Kubernetes {}",
        old.display(),
        devenv::kubernetes_version().as_deref().unwrap_or("of hack/kube")
    );
    // The release as it was installed: the namespace and RBAC, its CRDs, two replicas.
    let cluster = Cluster::start("upgrade").await;
    let cp = &cluster.cp;
    let client = cp.client().await.expect("admin client");
    apply_crds(cp, &old.join("crds.yaml"));
    let mut replicas = cluster.replicas();
    for _ in 0..2 {
        replicas.add_spec(Spec { binary: Some(old.join("lockguard")), ..Spec::default() });
    }
    kubectl(cp, &["create", "namespace", "up"], None);
    let (ports, vlans) = ("ports", "vlans");
    let pools = format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {ports}}}\n\
         spec: {{items: {{range: {{start: 100, end: 139}}}}, lock: {{backend: Etcd, ttlSeconds: 5}}}}\n---\n\
         apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {vlans}}}\n\
         spec: {{items: {{list: [{}]}}, lock: {{backend: Lease, ttlSeconds: 5}}}}\n",
        (0..20).map(|i| format!("v{i}")).collect::<Vec<_>>().join(", ")
    );
    kubectl(cp, &["apply", "-f", "-"], Some(&pools));
    let statuses = watch_statuses(client.clone(), "up");

    create_claims(&client, "up", ports, (0..10).map(|i| format!("p{i}"))).await;
    create_claims(&client, "up", vlans, (0..10).map(|i| format!("v{i}"))).await;
    all_bound(&client, "up", 20, &replicas, "bound by the release").await;
    let before = items(&client, "up").await;

    // The upgrade: the new CRDs, two new replicas beside the old ones, claims still coming,
    // then the old replicas stopped one after the other. A watch opened before a CRD changes
    // is served objects pruned to the old schema for a while (a new ledger looks empty to it),
    // so the history is recorded from the moment a new watch sees the new schema: all the time
    // old and new replicas run side by side.
    apply_crds(cp, &repo().join("crds"));
    new_schema_served(&client).await;
    // The recorder lists what exists first; a claim listed before its pool would look like one
    // of a missing pool, so only revisions after that listing are judged.
    let listed =
        Api::<Pool>::all(client.clone()).list(&ListParams::default().limit(1)).await.expect("list pools");
    let since: u64 = listed.metadata.resource_version.and_then(|v| v.parse().ok()).expect("a list revision");
    let recorder = Recorder::start(client.clone());
    replicas.add();
    replicas.add();
    let burst = {
        let client = client.clone();
        tokio::spawn(async move {
            create_claims(&client, "up", ports, (10..20).map(|i| format!("p{i}"))).await;
            create_claims(&client, "up", vlans, (10..20).map(|i| format!("v{i}"))).await;
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas.terminate(0, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(3)).await;
    replicas.terminate(1, Duration::from_secs(10));
    burst.await.expect("claim burst");
    all_bound(&client, "up", 40, &replicas, "bound after the upgrade").await;

    let after = items(&client, "up").await;
    for (claim, held) in &before {
        assert_eq!(after.get(claim), Some(held), "{claim} changed its items in the upgrade");
    }
    let moved: Vec<String> = statuses
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, history)| {
            history.iter().filter(|items| !items.is_empty()).collect::<std::collections::BTreeSet<_>>().len()
                > 1
        })
        .map(|(uid, history)| format!("{uid}: {history:?}"))
        .collect();
    assert!(moved.is_empty(), "claims that showed other items once bound:\n{}", moved.join("\n"));
    for pool in [ports, vlans] {
        let status =
            Api::<Pool>::all(client.clone()).get(pool).await.expect("pool").status.unwrap_or_default();
        assert_eq!(status.ledger_format, Some(2), "{pool} moved to the value ledger");
    }
    let replay = recorder.finish();
    let seen: Vec<String> = replay
        .violations
        .iter()
        .filter(|s| s.revision > since && [ports, vlans].contains(&s.violation.pool.as_str()))
        .map(|s| format!("at revision {}: {} [{}]", s.revision, s.violation, s.context))
        .collect();
    assert!(seen.is_empty(), "violations at some revision:\n{}\n{}", seen.join("\n"), replicas.tails());
    drop(replicas);
}

/// Replicas upgraded before the CRDs (the Claim CRD declaring no selectable field): a replica
/// whose claim watch leaves out another's pools is refused the field selector, watches every
/// claim instead, and becomes Ready; the claims are bound.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_newer_than_the_claim_crd_watch_every_claim() {
    let cluster = Cluster::start("crd-behind").await;
    let cp = &cluster.cp;
    let client = cp.client().await.expect("admin client");
    let crds = std::fs::read_to_string(repo().join("crds/lockguard.dev.yaml")).expect("crds");
    let selectable = "    selectableFields:\n    - jsonPath: .spec.poolRef\n";
    assert!(crds.contains(selectable), "the Claim CRD declares spec.poolRef selectable");
    let behind = cluster.dir.join("crds-behind.yaml");
    std::fs::write(&behind, crds.replace(selectable, "")).expect("write the older CRDs");
    apply_crds(cp, &behind);
    let mut replicas = cluster.replicas();
    replicas.add();
    replicas.add();
    kubectl(cp, &["create", "namespace", "behind"], None);
    let pool = "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {name: behind}\n\
                spec: {items: {range: {start: 1, end: 50}}, lock: {backend: Etcd, ttlSeconds: 5}}\n";
    kubectl(cp, &["apply", "-f", "-"], Some(pool));
    create_claims(&client, "behind", "behind", (0..5).map(|i| format!("c{i}"))).await;
    all_bound(&client, "behind", 5, &replicas, "bound with the older CRD").await;
    // One of the two serves the pool; the other leaves it out, is refused, and watches all.
    let warning = "cannot select claims by pool";
    replicas
        .eventually(Duration::from_secs(30), "a replica fell back to watching every claim", || async {
            (0..2).any(|i| replicas.log(i).contains(warning)).then_some(())
        })
        .await;
    replicas
        .eventually(Duration::from_secs(30), "both replicas Ready, each caching every claim", || async {
            let cached = replicas.metric_sum("lockguard_cached_claims");
            ((0..2).all(|i| replicas.is_ready(i)) && cached == 10.0).then_some(())
        })
        .await;
    drop(replicas);
}

/// A replica stopped before its caches had their first listing (here: the CRDs are not
/// installed yet, so it never has) exits at once, as it does once running: a Deployment
/// waits out its grace period otherwise, and its member Lease outlives it.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_stopped_before_its_caches_listed_exits_at_once() {
    let cluster = Cluster::start("no-crds").await;
    let mut replicas = cluster.replicas();
    replicas.add();
    replicas
        .eventually(Duration::from_secs(20), "the replica listed the members", || async {
            replicas.log(0).contains("member Leases listed").then_some(())
        })
        .await;
    assert!(!replicas.is_ready(0), "Ready without the CRDs");
    let exit = replicas.terminate(0, Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "no clean exit within 10 s of SIGTERM ({exit:?}):\n{}",
        replicas.tails()
    );
}
