//! The local control plane and etcd are real: what the other tests rely on.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, PostParams};
use support::{etcd_client, install, kube_client, kubectl, kubectl_ok, lock_etcd, namespace, shared, unique};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.lockguard.dev
spec:
  group: smoke.lockguard.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
"#;

#[tokio::test]
async fn crd_applied_with_kubectl_is_served_and_read_back_with_kube() {
    let applied = kubectl(&["apply", "-f", "-"], Some(WIDGET_CRD));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let established = kubectl(
        &["wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.smoke.lockguard.dev"],
        None,
    );
    assert!(established.status.success(), "{}", String::from_utf8_lossy(&established.stderr));

    let ns = namespace("smoke").await;
    let widget = "apiVersion: smoke.lockguard.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n";
    let created = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(widget));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let invalid = kubectl(&["apply", "-n", &ns, "-f", "-"], Some(&widget.replace("size: 3", "size: 0")));
    assert!(!invalid.status.success(), "the schema's minimum must be enforced by the server");

    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.lockguard.dev", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(kube_client().await, &ns, &resource);
    let read = widgets.get("w1").await.expect("read the widget back");
    assert_eq!(read.data["spec"]["size"], 3);
}

#[tokio::test]
async fn a_lease_written_twice_from_one_resource_version_conflicts() {
    let ns = namespace("smoke").await;
    let leases: Api<Lease> = Api::namespaced(kube_client().await, &ns);
    let lease = Lease {
        metadata: ObjectMeta { name: Some("l".into()), ..Default::default() },
        spec: Some(LeaseSpec { holder_identity: Some("a".into()), ..Default::default() }),
    };
    let created = leases.create(&PostParams::default(), &lease).await.expect("create lease");
    let mut first = created.clone();
    first.spec.as_mut().expect("spec").holder_identity = Some("b".into());
    leases.replace("l", &PostParams::default(), &first).await.expect("first update");
    let mut second = created;
    second.spec.as_mut().expect("spec").holder_identity = Some("c".into());
    match leases.replace("l", &PostParams::default(), &second).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{e:?}"),
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn standalone_etcd_serves_put_get_and_leases() {
    let mut etcd = etcd_client(&lock_etcd()).await;
    let key = support::unique("smoke/key");
    etcd.put(key.as_str(), "value", None).await.expect("put");
    let got = etcd.get(key.as_str(), None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"value");
    let lease = etcd.lease_grant(5, None).await.expect("grant");
    assert_eq!(lease.ttl(), 5);
    let ttl = etcd.lease_time_to_live(lease.id(), None).await.expect("ttl");
    assert!(ttl.ttl() > 0 && ttl.ttl() <= 5);
}

#[tokio::test]
async fn a_service_account_kubeconfig_has_exactly_its_rbac() {
    let ns = namespace("smoke-sa").await;
    let setup = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: reader, namespace: {ns}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: lease-reader, namespace: {ns}}}\n\
         rules: [{{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, list]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: reader, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease-reader}}\n\
         subjects: [{{kind: ServiceAccount, name: reader, namespace: {ns}}}]\n"
    );
    let applied = kubectl(&["apply", "-f", "-"], Some(&setup));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let path =
        shared().control_plane.service_account_kubeconfig(&ns, "reader").await.expect("token kubeconfig");
    let client = devenv::client_for(&path).await.expect("client");
    let leases: Api<Lease> = Api::namespaced(client, &ns);
    leases.list(&Default::default()).await.expect("list is granted");
    let lease =
        Lease { metadata: ObjectMeta { name: Some("x".into()), ..Default::default() }, ..Default::default() };
    match leases.create(&PostParams::default(), &lease).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("create must be forbidden, got {other:?}"),
    }
}

#[test]
fn harness_processes_die_with_their_owner() {
    // A child of a short-lived helper thread must survive that thread (the spawner thread
    // owns PDEATHSIG), and die when killed through the harness.
    let dir = devenv::run_dir("smoke").expect("run dir");
    let mut etcd = std::thread::spawn(move || devenv::etcd::start_single(&dir, "smoke-etcd").expect("etcd"))
        .join()
        .expect("thread");
    std::thread::sleep(Duration::from_millis(300));
    etcd.wait_healthy(Duration::from_secs(5)).expect("still healthy after its starter thread ended");
    let pid = etcd.pid().expect("pid") as i32;
    drop(etcd);
    // SAFETY: signal 0 only checks existence.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "etcd must be gone after drop");
}

/// An etcd lock whose client knows every member of `cluster`.
async fn lock_on(cluster: &devenv::EtcdCluster) -> lockguard_lock::etcd::EtcdLock {
    use lockguard_lock::etcd::{EtcdConfig, EtcdLock};
    let client =
        EtcdConfig::from_list(&cluster.endpoints()).connect(Duration::from_secs(5)).await.expect("connect");
    EtcdLock::new(client, "smoke")
}

/// The index of the member that leads `cluster`, as the members report it.
async fn leader_of(cluster: &devenv::EtcdCluster) -> usize {
    for (i, member) in cluster.members.iter().enumerate() {
        let status = etcd_client(&member.endpoint()).await.status().await.expect("member status");
        if status.header().map(|h| h.member_id()) == Some(status.leader()) {
            return i;
        }
    }
    panic!("the cluster has no leader")
}

#[tokio::test]
async fn a_three_member_etcd_cluster_serves_locks_and_survives_losing_its_leader() {
    use lockguard_lock::{Lock, LockOptions};
    lockguard::telemetry::init(lockguard::telemetry::LogFormat::Text);
    let dir = devenv::run_dir("smoke-cluster").expect("dir");
    let mut cluster = devenv::EtcdCluster::start(&dir, "member", 3).expect("3-member cluster");
    let lock = lock_on(&cluster).await;
    let options = LockOptions::new(5, Duration::from_secs(10)).expect("options");
    let first = lock.acquire("cluster-lock", options).await.expect("lock on the cluster");
    first.release().await.expect("release");
    // Kill the leader: requests fail ("leader changed", "request timed out") until the two
    // others elect a new one; the acquisition rides that out within its timeout.
    let leader = leader_of(&cluster).await;
    cluster.members[leader].kill();
    let started = std::time::Instant::now();
    let second = lock.acquire("cluster-lock", options).await.expect("two of three members keep quorum");
    eprintln!("lock acquired {:?} after the etcd leader was killed", started.elapsed());
    assert!(second.fencing_token() > 0);
    second.release().await.expect("release");
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
}

/// The client spreads calls over every endpoint, a dead member's too: a call it sends there is
/// refused, never reaches etcd, and must go to a live member instead of failing.
#[tokio::test]
async fn a_dead_follower_fails_no_call_while_two_members_keep_quorum() {
    use lockguard_lock::{Lock, LockOptions};
    let dir = devenv::run_dir("smoke-follower").expect("dir");
    let mut cluster = devenv::EtcdCluster::start(&dir, "member", 3).expect("3-member cluster");
    let lock = lock_on(&cluster).await;
    let follower = (leader_of(&cluster).await + 1) % cluster.members.len();
    cluster.members[follower].kill();
    let options = LockOptions::new(5, Duration::from_secs(5)).expect("options");
    let mut failed = Vec::new();
    for _ in 0..100 {
        if let Err(e) = lock.issued_up_to().await {
            failed.push(e.to_string());
        }
    }
    for _ in 0..20 {
        match lock.try_acquire("follower-lock", options).await {
            Ok(guard) => {
                let write =
                    lock.fenced_txn(&guard, vec![etcd_client::TxnOp::put("smoke/written", "1", None)]);
                if let Err(e) = write.await {
                    failed.push(e.to_string());
                }
                if let Err(e) = guard.release().await {
                    failed.push(e.to_string());
                }
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 160 calls failed with a follower dead: {:?}",
        failed.len(),
        failed.first()
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(dir);
}

/// The version a wrapper module in hack/ pins for `module`.
fn pinned(dir: &str, module: &str) -> String {
    let go_mod =
        std::fs::read_to_string(support::repo().join("hack").join(dir).join("go.mod")).expect("go.mod");
    go_mod
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut words| match (words.next(), words.next()) {
            (Some(m), Some(v)) if m == module && v.starts_with('v') => Some(v.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{module} is not pinned in hack/{dir}/go.mod"))
}

#[test]
fn the_go_built_tools_report_the_pinned_releases() {
    let version = |binary: &str| {
        let out = std::process::Command::new(devenv::binary(binary).expect("built by make tools"))
            .arg(if binary.starts_with("kubectl") { "version" } else { "--version" })
            .args(if binary.starts_with("kubectl") { &["--client"][..] } else { &[][..] })
            .output()
            .expect("run --version");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // hack/kube and each older release of hack/kube-<minor>.
    let older = std::fs::read_dir(support::repo().join("hack")).expect("hack/").filter_map(|entry| {
        let name = entry.ok()?.file_name().into_string().ok()?;
        name.strip_prefix("kube-1.").map(|minor| (name.clone(), format!("-1.{minor}")))
    });
    let releases: Vec<(String, String)> =
        std::iter::once(("kube".to_string(), String::new())).chain(older).collect();
    assert!(releases.len() > 1, "an older Kubernetes is built too: {releases:?}");
    for (dir, suffix) in releases {
        let kubernetes = pinned(&dir, "k8s.io/kubernetes");
        let apiserver = version(&format!("kube-apiserver{suffix}"));
        assert!(apiserver.contains(&format!("Kubernetes {kubernetes}")), "{dir}: {apiserver}");
        let kubectl = version(&format!("kubectl{suffix}"));
        assert!(kubectl.contains(&format!("Client Version: {kubernetes}")), "{dir}: {kubectl}");
    }
    let etcd = pinned("etcd", "go.etcd.io/etcd/server/v3");
    assert!(
        version("etcd").contains(&format!("etcd Version: {}", etcd.trim_start_matches('v'))),
        "{}",
        version("etcd")
    );
}

/// The items of a pool may change while allocated only under ledger format 2 (by value), and
/// the format never goes back. Here, where no operator runs: a replica would move a new pool
/// to format 2 before the test could see format 1.
#[tokio::test]
async fn a_pools_items_change_while_allocated_only_under_the_value_ledger() {
    install().await;
    let name = unique("format");
    let pool = format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\nspec: {{items: {{list: [a, b]}}}}\n"
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&pool));
    let held = r#"{"status":{"capacity":2,"allocated":1,"free":1,"lockBackend":"Etcd","lockService":"etcd:1","lockEpoch":1,"fencingToken":1,"ledger":[{"claim":"x/y","uid":"u","items":"0"}]}}"#;
    kubectl_ok(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", held], None);
    let grown = pool.replace("list: [a, b]", "list: [b, a, c]");
    let out = kubectl(&["apply", "-f", "-"], Some(&grown));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("while items are allocated under ledger format 1"), "{stderr}");
    let format_2 = r#"{"status":{"ledgerFormat":2}}"#;
    kubectl_ok(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", format_2], None);
    kubectl_ok(&["apply", "-f", "-"], Some(&grown));
    for patch in [r#"{"status":{"ledgerFormat":1}}"#, r#"{"status":{"ledgerFormat":null}}"#] {
        let out =
            kubectl(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", patch], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("older ledger format"), "{patch}: expected a refusal in {stderr}");
    }
}
