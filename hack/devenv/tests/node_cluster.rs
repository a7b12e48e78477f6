//! `make e2e-cluster`: the one-node cluster of `devenv::node` runs a Deployment behind a
//! ClusterIP Service, a StatefulSet behind a headless Service with volumes from hostPath
//! PersistentVolumes, and answers their names through CoreDNS; then the teardown leaves
//! nothing. Ignored by `cargo test` (it needs root, `make node-tools` and ~1 minute):
//! `cargo test -p devenv --test node_cluster -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use devenv::node::{BUSYBOX_IMAGE, Node};

const NAMESPACE: &str = "e2e";

fn workload() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: web
        image: {BUSYBOX_IMAGE}
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"]
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          exec: {{command: ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]}}
          periodSeconds: 1
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
        volumeMounts: [{{name: tmp, mountPath: /tmp}}]
      volumes: [{{name: tmp, emptyDir: {{}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NAMESPACE}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NAMESPACE}}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{port: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {NAMESPACE}}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - name: db
        image: {BUSYBOX_IMAGE}
        imagePullPolicy: Never
        command: ["/bin/sh", "-c", "hostname >> /data/boots && exec httpd -f -p 8080 -h /data"]
        readinessProbe:
          exec: {{command: ["test", "-s", "/data/boots"]}}
          periodSeconds: 1
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: ""
      resources: {{requests: {{storage: 10Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NAMESPACE}}}
spec:
  containers:
  - name: client
    image: {BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
    )
}

/// Runs `args` in the client pod until it succeeds (DNS and endpoints settle), at most 30 s.
fn exec_until(node: &Node, args: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = vec!["-n", NAMESPACE, "exec", "client", "--"];
    all.extend(args);
    loop {
        match node.kubectl_run(&all, None) {
            Ok(out) => return out,
            Err(e) if Instant::now() > deadline => panic!("kubectl exec {args:?}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The address CoreDNS gives `fqdn`, asked with busybox's nslookup in the client pod (it has
/// a resolver of its own; Debian's static busybox resolves names for wget and nc through
/// glibc's NSS, which a static binary cannot load: "bad address"), so wget and nc are given
/// addresses. (That wget also crashes with SIGSEGV on `-T`: `timeout` bounds it instead.)
fn resolve(node: &Node, fqdn: &str) -> String {
    let out = exec_until(node, &["nslookup", fqdn]);
    let answer = out.split_once(&format!("Name:\t{fqdn}")).map(|(_, a)| a).unwrap_or_default();
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Address: ").map(|a| a.trim().to_string()))
        .unwrap_or_else(|| panic!("{fqdn} does not resolve: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the node tools and a minute: make e2e-cluster"]
async fn a_deployment_a_statefulset_and_dns_on_one_real_node() {
    let dir = devenv::run_dir("node").unwrap();
    let started = Instant::now();
    let node = Node::start(&dir).await.unwrap_or_else(|e| panic!("start the node: {e}"));
    eprintln!("node cluster up in {:.1}s", started.elapsed().as_secs_f64());

    node.create_host_path_volumes("e2e-data", 2, "10Mi").unwrap();
    let applied = Instant::now();
    node.kubectl_run(&["apply", "-f", "-"], Some(&workload())).unwrap();
    for what in ["deployment/web", "statefulset/db"] {
        node.kubectl_run(&["-n", NAMESPACE, "rollout", "status", what, "--timeout=120s"], None).unwrap();
    }
    node.kubectl_run(
        &["-n", NAMESPACE, "wait", "--for=condition=Ready", "pod/client", "--timeout=60s"],
        None,
    )
    .unwrap();
    eprintln!("workload Ready in {:.1}s", applied.elapsed().as_secs_f64());

    // Every PVC bound to one of the hostPath volumes.
    let phases = node
        .kubectl_run(&["-n", NAMESPACE, "get", "pvc", "-o", "jsonpath={.items[*].status.phase}"], None)
        .unwrap();
    assert_eq!(phases.split_whitespace().collect::<Vec<_>>(), ["Bound", "Bound"], "PVCs: {phases}");

    // The ClusterIP Service by name, through CoreDNS and kube-proxy.
    let web_ip = node
        .kubectl_run(&["-n", NAMESPACE, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"], None)
        .unwrap();
    let resolved = resolve(&node, &format!("web.{NAMESPACE}.svc.cluster.local"));
    assert_eq!(resolved, web_ip, "web resolves to its ClusterIP");
    let page = exec_until(&node, &["timeout", "10", "wget", "-q", "-O", "-", &format!("http://{web_ip}/")]);
    assert!(page.starts_with("web-"), "the page names a web pod: {page}");

    // Each StatefulSet pod by its stable name under the headless Service.
    for ordinal in 0..2 {
        let name = format!("db-{ordinal}");
        let pod_ip = node
            .kubectl_run(&["-n", NAMESPACE, "get", "pod", &name, "-o", "jsonpath={.status.podIP}"], None)
            .unwrap();
        let fqdn = format!("{name}.db.{NAMESPACE}.svc.cluster.local");
        assert_eq!(resolve(&node, &fqdn), pod_ip, "{fqdn} resolves to its pod");
        let url = format!("http://{pod_ip}:8080/boots");
        let boots = exec_until(&node, &["timeout", "10", "wget", "-q", "-O", "-", &url]);
        assert_eq!(boots.trim(), name, "{name} wrote its name to its volume");
    }

    // The API server through the `kubernetes` Service (kube-proxy to the bridge address).
    let api = resolve(&node, "kubernetes.default.svc.cluster.local");
    let connected =
        exec_until(&node, &["sh", "-c", &format!("nc -w 3 {api} 443 </dev/null && echo connected")]);
    assert!(connected.contains("connected"), "kubernetes.default: {connected}");
    // Logs through the API server and the kubelet.
    let logs = node.kubectl_run(&["-n", "kube-system", "logs", "deployment/coredns"], None).unwrap();
    assert!(logs.contains("CoreDNS"), "CoreDNS logs: {logs}");

    stop_clean(node, &dir);
}

/// `deploy/` without the operator's Deployment: the CRDs, RBAC, namespace and the lock etcd
/// Component, whose 3-member StatefulSet runs on an etcd image made here from bin/etcd under
/// the name deploy/etcd/etcd.yaml uses, on hostPath PersistentVolumes, its members finding
/// each other by their names under the headless Service, over mutual TLS with the
/// certificates the Component's Job makes (from the operator's image). Then, from the host
/// straight to a member: the operator's certificate may use `lockguard/` keys only, and plain
/// HTTP, no certificate and a certificate of another CA are all refused.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the node tools, the operator image and a minute: make e2e-cluster"]
async fn the_lock_etcd_of_deploy_forms_its_cluster_over_mutual_tls_on_one_real_node() {
    let dir = devenv::run_dir("node").unwrap();
    let node = Node::start(&dir).await.unwrap_or_else(|e| panic!("start the node: {e}"));

    import_etcd_image(&node, &dir);
    node.import_archive(&image_archive()).unwrap();
    // A fourth volume for the member that loses its own below.
    node.create_host_path_volumes("etcd-data", 4, "1Gi").unwrap();

    let rendered =
        node.kubectl_run(&["kustomize", &repo().join("deploy").display().to_string()], None).unwrap();
    let without_operator: Vec<&str> = rendered
        .split("\n---\n")
        .filter(|doc| !(doc.contains("kind: Deployment\n") && doc.contains("\n  name: lockguard\n")))
        .collect();
    assert!(
        without_operator.len() < rendered.split("\n---\n").count(),
        "the operator's Deployment was found"
    );
    let started = Instant::now();
    node.kubectl_run(&["apply", "--server-side", "-f", "-"], Some(&without_operator.join("\n---\n")))
        .unwrap();
    let ns = ["-n", "lockguard-system"];
    node.kubectl_run(
        &[ns[0], ns[1], "rollout", "status", "statefulset/lockguard-etcd", "--timeout=180s"],
        None,
    )
    .unwrap();
    eprintln!("lock etcd: 3 members Ready in {:.1}s", started.elapsed().as_secs_f64());
    let job = ["wait", "--for=condition=complete", "job/lockguard-etcd-certs", "--timeout=180s"];
    node.kubectl_run(&[ns[0], ns[1], job[0], job[1], job[2], job[3]], None).unwrap();
    let said = node.kubectl_run(&[ns[0], ns[1], "logs", "job/lockguard-etcd-certs"], None).unwrap();
    assert!(said.contains("auth enabled"), "the Job turned auth on: {said}");
    let logs = node.kubectl_run(&[ns[0], ns[1], "logs", "lockguard-etcd-0"], None).unwrap();
    assert!(logs.contains("lockguard-etcd-2"), "member 0 knows member 2 by name: {logs}");

    let ip = node
        .kubectl_run(
            &[ns[0], ns[1], "get", "pod", "lockguard-etcd-0", "-o", "jsonpath={.status.podIP}"],
            None,
        )
        .unwrap();
    let pki = dir.join("etcd-pki");
    std::fs::create_dir_all(&pki).unwrap();
    let secret_file = |secret: &str, key: &str| {
        let template = format!("go-template={{{{index .data \"{key}\" | base64decode}}}}");
        let text = node.kubectl_run(&[ns[0], ns[1], "get", "secret", secret, "-o", &template], None).unwrap();
        let path = pki.join(format!("{secret}-{key}"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key) =
        (secret_file("lockguard-etcd-client", "tls.crt"), secret_file("lockguard-etcd-client", "tls.key"));
    let forged = devenv::certs::generate_etcd(&dir.join("forged")).unwrap();
    let https = format!("https://{ip}:2379");
    // The member's certificate names its DNS names, not its pod address: the client checks
    // no server name here; the server still checks the client's certificate.
    let etcdctl = |endpoint: &str, pair: Option<(&str, &str)>, args: &[&str]| {
        let mut command = std::process::Command::new(devenv::binary("etcdctl").unwrap());
        command.args(["--endpoints", endpoint, "--dial-timeout=3s", "--command-timeout=5s"]);
        if endpoint.starts_with("https") {
            command.arg("--insecure-skip-tls-verify");
        }
        if let Some((cert, key)) = pair {
            command.args(["--cert", cert, "--key", key]);
        }
        let out = command.args(args).output().unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (own, text) = etcdctl(&https, Some((&cert, &key)), &["put", "lockguard/e2e", "x"]);
    assert!(own, "the operator's certificate writes lockguard/ keys: {text}");
    let (elsewhere, text) = etcdctl(&https, Some((&cert, &key)), &["put", "other/e2e", "x"]);
    assert!(!elsewhere && text.contains("permission denied"), "and no other key: {text}");
    let (plain, text) = etcdctl(&format!("http://{ip}:2379"), None, &["get", "lockguard/e2e"]);
    assert!(!plain, "plain HTTP is refused: {text}");
    let (anonymous, text) = etcdctl(&https, None, &["get", "lockguard/e2e"]);
    assert!(!anonymous, "no client certificate is refused: {text}");
    let other = (forged.client_cert.display().to_string(), forged.client_key.display().to_string());
    let (foreign, text) = etcdctl(&https, Some((&other.0, &other.1)), &["get", "lockguard/e2e"]);
    assert!(!foreign, "a certificate of another CA is refused: {text}");
    eprintln!(
        "lock etcd: mutual TLS and auth hold (operator's keys only; plain, anonymous and foreign clients refused)"
    );

    // Member 1 loses its volume and is replaced as docs/operations.md says: removed from the
    // cluster and added again, then started afresh with --initial-cluster-state=existing.
    let root = (secret_file("lockguard-etcd-root", "tls.crt"), secret_file("lockguard-etcd-root", "tls.key"));
    let root = Some((root.0.as_str(), root.1.as_str()));
    let (put, text) = etcdctl(&https, root, &["put", "lockguard/before-replace", "kept"]);
    assert!(put, "{text}");
    let (_, members) = etcdctl(&https, root, &["member", "list"]);
    let id = members
        .lines()
        .find(|l| l.contains(", lockguard-etcd-1,"))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("member 1 in {members}"))
        .to_string();
    let sts = node
        .kubectl_run(&[ns[0], ns[1], "get", "statefulset", "lockguard-etcd", "-o", "json"], None)
        .unwrap();
    let sts: serde_json::Value = serde_json::from_str(&sts).unwrap();
    let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    let at = args.iter().position(|a| a == "--initial-cluster-state=new").expect("the bootstrap flag");
    let patch = format!(
        r#"[{{"op":"replace","path":"/spec/updateStrategy","value":{{"type":"OnDelete"}}}},{{"op":"replace","path":"/spec/template/spec/containers/0/args/{at}","value":"--initial-cluster-state=existing"}}]"#
    );
    node.kubectl_run(
        &[ns[0], ns[1], "patch", "statefulset", "lockguard-etcd", "--type=json", "-p", &patch],
        None,
    )
    .unwrap();
    let (removed, text) = etcdctl(&https, root, &["member", "remove", &id]);
    assert!(removed, "{text}");
    let peer = "--peer-urls=https://lockguard-etcd-1.lockguard-etcd.lockguard-system.svc:2380";
    // Removing a member can cost an election (it may have led): an add that timed out is
    // tried again, and one that had gone through says the peer URL exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (added, text) = etcdctl(&https, root, &["member", "add", "lockguard-etcd-1", peer]);
        if added || text.contains("already exists") {
            break;
        }
        assert!(Instant::now() < deadline, "member add: {text}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let replaced = Instant::now();
    let claim_uid = || {
        let uid =
            ["get", "pvc", "data-lockguard-etcd-1", "-o", "jsonpath={.metadata.uid}", "--ignore-not-found"];
        node.kubectl_run(&[ns[0], ns[1], uid[0], uid[1], uid[2], uid[3], uid[4], uid[5]], None)
            .unwrap_or_default()
    };
    let lost = claim_uid();
    let volume_of = || {
        let name = ["get", "pvc", "data-lockguard-etcd-1", "-o", "jsonpath={.spec.volumeName}"];
        node.kubectl_run(&[ns[0], ns[1], name[0], name[1], name[2], name[3], name[4]], None)
            .unwrap_or_default()
    };
    let old_volume = volume_of();
    node.kubectl_run(&[ns[0], ns[1], "delete", "pvc", "data-lockguard-etcd-1", "--wait=false"], None)
        .unwrap();
    // The claim goes once no pod uses it, and the StatefulSet makes a new one for the next pod;
    // a pod it made again on the old claim before it saw the claim going is deleted again.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pod = ["delete", "pod", "lockguard-etcd-1", "--ignore-not-found"];
        node.kubectl_run(&[ns[0], ns[1], pod[0], pod[1], pod[2], pod[3]], None).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        if claim_uid() != lost {
            break;
        }
        let seen =
            node.kubectl_run(&[ns[0], ns[1], "get", "pod,pvc", "-o", "wide"], None).unwrap_or_default();
        assert!(Instant::now() < deadline, "the old claim stays:\n{seen}");
    }
    let ready = ["wait", "--for=condition=Ready", "pod/lockguard-etcd-1", "--timeout=10s"];
    let deadline = Instant::now() + Duration::from_secs(120);
    while node.kubectl_run(&[ns[0], ns[1], ready[0], ready[1], ready[2], ready[3]], None).is_err() {
        let logs = node.kubectl_run(&[ns[0], ns[1], "logs", "lockguard-etcd-1"], None).unwrap_or_default();
        assert!(Instant::now() < deadline, "the new member 1 is not Ready:\n{logs}");
    }
    let volume = volume_of();
    assert!(!volume.is_empty() && volume != old_volume, "a new volume: {old_volume} → {volume}");
    let (_, members) = etcdctl(&https, root, &["member", "list"]);
    assert_eq!(members.lines().filter(|l| l.contains(", started, lockguard-etcd-")).count(), 3, "{members}");
    let ip1 = node
        .kubectl_run(
            &[ns[0], ns[1], "get", "pod", "lockguard-etcd-1", "-o", "jsonpath={.status.podIP}"],
            None,
        )
        .unwrap();
    let (read, text) = etcdctl(
        &format!("https://{ip1}:2379"),
        root,
        &["get", "lockguard/before-replace", "--print-value-only"],
    );
    assert!(read && text.trim() == "kept", "the new member has the data: {text}");
    let selector = "app.kubernetes.io/component=etcd";
    let ips = node
        .kubectl_run(
            &[ns[0], ns[1], "get", "pods", "-l", selector, "-o", "jsonpath={.items[*].status.podIP}"],
            None,
        )
        .unwrap();
    let all: Vec<String> = ips.split_whitespace().map(|ip| format!("https://{ip}:2379")).collect();
    assert_eq!(all.len(), 3, "{ips}");
    let (healthy, text) = etcdctl(&all.join(","), root, &["endpoint", "health"]);
    assert!(healthy, "every member healthy: {text}");
    eprintln!("lock etcd: member 1 replaced on a new volume in {:.1}s", replaced.elapsed().as_secs_f64());

    stop_clean(node, &dir);
}

/// The operator image built from the Dockerfile (`make image image-archive`).
fn image_archive() -> std::path::PathBuf {
    let archive = std::env::var_os("LOCKGUARD_IMAGE_ARCHIVE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("target/image/lockguard.oci.tar"));
    assert!(archive.exists(), "{}: build it with make image image-archive", archive.display());
    archive
}

/// The image deploy/etcd/etcd.yaml names, made here from bin/etcd.
fn import_etcd_image(node: &Node, dir: &std::path::Path) {
    let rootfs = dir.join("images/etcd-rootfs");
    std::fs::create_dir_all(rootfs.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
    std::fs::copy(devenv::binary("etcd").unwrap(), rootfs.join("usr/local/bin/etcd")).unwrap();
    node.import_image("quay.io/coreos/etcd:v3.6.16", &rootfs, r#"["/usr/local/bin/etcd"]"#, "").unwrap();
}

/// Runs kubectl on the node's cluster from the repository root, as a user types it.
fn user_kubectl(node: &Node, args: &[&str]) -> String {
    let out = node.kubectl().unwrap().args(args).current_dir(repo()).output().expect("run kubectl");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "kubectl {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

fn claims_bound(node: &Node, namespace: &str, names: &[&str], timeout: &str) {
    let mut args = vec!["wait", "-n", namespace, "--for=condition=Bound"];
    let refs: Vec<String> = names.iter().map(|n| format!("claim/{n}")).collect();
    args.extend(refs.iter().map(String::as_str));
    let timeout = format!("--timeout={timeout}");
    args.push(&timeout);
    user_kubectl(node, &args);
}

/// The README's install, verbatim, on a real node: the operator image built from the
/// Dockerfile (`make image image-archive`), the lock etcd as deploy/ runs it, the samples
/// bound, an operator pod and an etcd pod deleted meanwhile, then the README's uninstall.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, the node tools and the operator image: make e2e-cluster"]
async fn the_readme_install_runs_lockguard_on_one_real_node() {
    let archive = image_archive();
    let dir = devenv::run_dir("node").unwrap();
    let node = Node::start(&dir).await.unwrap_or_else(|e| panic!("start the node: {e}"));
    import_etcd_image(&node, &dir);
    node.import_archive(&archive).unwrap();
    node.create_host_path_volumes("etcd-data", 3, "1Gi").unwrap();

    let started = Instant::now();
    user_kubectl(&node, &["apply", "-k", "crds/"]);
    user_kubectl(
        &node,
        &["wait", "--for=condition=Established", "crd/pools.lockguard.dev", "crd/claims.lockguard.dev"],
    );
    user_kubectl(&node, &["apply", "-k", "deploy/"]);
    let ns = ["-n", "lockguard-system"];
    user_kubectl(&node, &[ns[0], ns[1], "rollout", "status", "statefulset/lockguard-etcd", "--timeout=180s"]);
    // Ready means the kubelet's readiness probe got 200 from /readyz in both pods.
    user_kubectl(&node, &[ns[0], ns[1], "rollout", "status", "deployment/lockguard", "--timeout=180s"]);
    eprintln!("installed: etcd and operator Ready in {:.1}s", started.elapsed().as_secs_f64());
    let pools = user_kubectl(&node, &["apply", "-f", "deploy/samples/"]);
    eprintln!("{pools}");
    claims_bound(&node, "team-a", &["web", "db"], "120s");
    eprintln!("samples bound {:.1}s after the install began", started.elapsed().as_secs_f64());
    let logs = user_kubectl(&node, &[ns[0], ns[1], "logs", "deploy/lockguard"]);
    let both_pods = user_kubectl(
        &node,
        &[ns[0], ns[1], "logs", "-l", "app.kubernetes.io/component=operator", "--tail=-1"],
    );

    assert!(
        ["lock acquired", "ledger written", "allocated"].iter().all(|line| both_pods.contains(line)),
        "no reconciliation lines in the operator's logs:\n{logs}\n{both_pods}"
    );

    // An operator pod and an etcd member deleted; claims created meanwhile bind.
    let operator = "app.kubernetes.io/component=operator";
    let pods = user_kubectl(&node, &[ns[0], ns[1], "get", "pods", "-l", operator, "-o", "name"]);
    let victim = pods.lines().next().expect("an operator pod").to_string();
    user_kubectl(&node, &[ns[0], ns[1], "delete", &victim, "--wait=false"]);
    user_kubectl(&node, &[ns[0], ns[1], "delete", "pod", "lockguard-etcd-1", "--wait=false"]);
    let more = "apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {name: api, namespace: team-a}\nspec: {poolRef: ports, count: 2}\n---\napiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {name: cache, namespace: team-a}\nspec: {poolRef: vlans, count: 1}\n";
    node.kubectl_run(&["apply", "-f", "-"], Some(more)).unwrap();
    claims_bound(&node, "team-a", &["api", "cache"], "180s");
    user_kubectl(&node, &[ns[0], ns[1], "rollout", "status", "deployment/lockguard", "--timeout=180s"]);
    user_kubectl(&node, &[ns[0], ns[1], "rollout", "status", "statefulset/lockguard-etcd", "--timeout=180s"]);
    eprintln!("survived an operator pod and an etcd pod deleted");
    the_image_refuses_failpoints(&node);

    // The README's uninstall (make undeploy): claims first, while the operator runs.
    user_kubectl(&node, &["delete", "claims", "--all", "-A", "--wait=true", "--timeout=120s"]);
    user_kubectl(&node, &["delete", "pools", "--all", "--wait=true", "--timeout=60s"]);
    user_kubectl(&node, &["delete", "-k", "deploy/", "--ignore-not-found", "--wait=true", "--timeout=180s"]);
    let left = node
        .kubectl_run(&["get", "crd,clusterrole,clusterrolebinding,namespace", "-o", "name"], None)
        .unwrap();
    assert!(!left.contains("lockguard"), "left behind by the uninstall:\n{left}");

    stop_clean(node, &dir);
}

/// The image's binary is the release build without failpoints: asked for one, it refuses to
/// start instead of running without the fault (or with the fence off).
fn the_image_refuses_failpoints(node: &Node) {
    let image = user_kubectl(
        node,
        &[
            "-n",
            "lockguard-system",
            "get",
            "deployment/lockguard",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: failpoint-refused, namespace: default}}
spec:
  restartPolicy: Never
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: lockguard
    image: {image}
    imagePullPolicy: Never
    args: [run]
    env: [{{name: LOCKGUARD_FAILPOINT, value: fence-off}}]
    securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
"#
    );
    node.kubectl_run(&["apply", "-f", "-"], Some(&pod)).unwrap();
    user_kubectl(
        node,
        &["wait", "--for=jsonpath={.status.phase}=Failed", "pod/failpoint-refused", "--timeout=120s"],
    );
    let logs = user_kubectl(node, &["logs", "pod/failpoint-refused"]);
    assert!(
        logs.contains("LOCKGUARD_FAILPOINT=fence-off is set, but this binary was built without failpoints"),
        "the image's binary did not refuse the failpoint:\n{logs}"
    );
    user_kubectl(node, &["delete", "pod/failpoint-refused", "--wait=true"]);
    eprintln!("the image refuses LOCKGUARD_FAILPOINT");
}

/// The repository root, where a user runs the README's commands.
fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Tears the node down and checks that nothing of it is left: no changed sysctl, nothing on
/// the host.
fn stop_clean(mut node: Node, dir: &std::path::Path) {
    let teardown = node.stop();
    eprintln!("teardown in {:.1}s: {:?}", teardown.seconds, teardown.removed);
    assert!(teardown.sysctls_changed.is_empty(), "sysctls changed: {:?}", teardown.sysctls_changed);
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
    let left = devenv::node::leftovers();
    assert!(left.is_empty(), "left on the host: {left:?}");
}
