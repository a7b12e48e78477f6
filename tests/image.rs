//! The operator's container image, run the way deploy/'s Deployment runs it: podman with the
//! host network, a read-only root filesystem, uid 65532, no capabilities, no new privileges,
//! the Deployment's memory limit, and a ServiceAccount token, the API server's CA and the
//! namespace mounted where the kubelet mounts them, so the binary takes its in-cluster config
//! from KUBERNETES_SERVICE_HOST/PORT. Against the local control plane and lock etcd.
//!
//! Ignored by default: it needs the image and podman. `make e2e-image` builds the image from
//! the Dockerfile (with local stand-ins for the base images) and runs it. `LOCKGUARD_IMAGE`
//! names the image (default: the one deploy/default names).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    OPERATOR_NAMESPACE, create_claim, eventually, install, kubectl_ok, lock_etcd, namespace, pool_yaml,
    reason_of, shared, unique,
};

const DEFAULT_IMAGE: &str = "ghcr.io/lockguard/lockguard:0.1.0";
/// Where the kubelet mounts a projected ServiceAccount token.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn podman(args: &[&str]) -> std::process::Output {
    let runtime = std::env::var("LOCKGUARD_OCI_RUNTIME").unwrap_or_else(|_| "runc".into());
    Command::new("podman")
        .args(["--runtime", &runtime])
        .args(args)
        .output()
        .expect("run podman (make image-deps installs it)")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container that is removed when the test ends, its log printed if the test failed.
struct Container(String);

impl Container {
    fn logs(&self) -> String {
        let out = podman(&["logs", &self.0]);
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- container log ---\n{}", self.logs());
        }
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// A field of /proc/PID/status.
fn status_field(pid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the container's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the kubelet mounts at SERVICE_ACCOUNT_DIR: the token, the cluster's CA, the namespace.
fn service_account_files(dir: &Path) {
    std::fs::create_dir_all(dir).expect("service account dir");
    let token =
        kubectl_ok(&["create", "token", "lockguard", "-n", OPERATOR_NAMESPACE, "--duration=1h"], None);
    let ca = shared().control_plane.dir().join("pki/ca.crt");
    std::fs::write(dir.join("token"), token.trim()).expect("write token");
    std::fs::copy(&ca, dir.join("ca.crt")).expect("copy ca.crt");
    std::fs::write(dir.join("namespace"), OPERATOR_NAMESPACE).expect("write namespace");
    // Readable by uid 65532, as the kubelet's projected volume is.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    for file in ["token", "ca.crt", "namespace"] {
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
}

#[tokio::test]
#[ignore = "needs podman and the image: make e2e-image"]
async fn the_image_runs_as_the_deployment_runs_it() {
    let image = std::env::var("LOCKGUARD_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.into());
    assert!(
        podman(&["image", "exists", &image]).status.success(),
        "no image {image} in container storage: run `make image`"
    );
    // What the image says of itself: the numeric nonroot user (runAsNonRoot can check it), the
    // binary as entrypoint, `run` by default.
    let config = podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{.Config.Entrypoint}} {{.Config.Cmd}}",
        &image,
    ]);
    assert_eq!(config, "65532:65532 [/usr/local/bin/lockguard] [run]", "image config of {image}");
    install().await;
    let secrets = shared().control_plane.dir().join(unique("image-serviceaccount"));
    service_account_files(&secrets);
    let url = shared().control_plane.url();
    let (host, port) = url.trim_start_matches("https://").rsplit_once(':').expect("host:port in the URL");
    let metrics_port = devenv::process::free_port().expect("a free port");
    let metrics = format!("127.0.0.1:{metrics_port}");
    let name = unique("lockguard-image");

    let started = Instant::now();
    let mount = format!("{}:{SERVICE_ACCOUNT_DIR}:ro", secrets.display());
    let env = [
        format!("KUBERNETES_SERVICE_HOST={host}"),
        format!("KUBERNETES_SERVICE_PORT={port}"),
        format!("POD_NAME={name}"),
        format!("POD_NAMESPACE={OPERATOR_NAMESPACE}"),
        "RUST_LOG=info,kube=warn".to_string(),
        format!("LOCKGUARD_ETCD_ENDPOINTS={}", lock_etcd()),
    ];
    // Limits a container can get here: root lacks CAP_SYS_RESOURCE, so no limit can be raised
    // above this process's. Podman's defaults are above (nofile 1048576, and nproc 1048576 as
    // soon as any --ulimit is given): the open files of this process, and podman's own
    // default for processes (32768, its --ulimit default) unless this process has fewer.
    let limit = |resource| {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0, "getrlimit");
        limit
    };
    let files = limit(libc::RLIMIT_NOFILE);
    let processes = limit(libc::RLIMIT_NPROC).rlim_max.min(32768);
    let ulimits = [
        format!("--ulimit=nofile={}:{}", files.rlim_cur, files.rlim_max),
        format!("--ulimit=nproc={processes}:{processes}"),
    ];
    let mut args = vec![
        "run",
        "--detach",
        "--name",
        &name,
        "--pull=never",
        "--network=host",
        // readOnlyRootFilesystem: nothing writable, not even the /tmp and /run podman adds.
        "--read-only",
        "--read-only-tmpfs=false",
        "--user=65532:65532",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--memory=256m",
        &ulimits[0],
        &ulimits[1],
        "--volume",
        &mount,
    ];
    for e in &env {
        args.extend(["--env", e]);
    }
    let metrics_arg = format!("--metrics-addr={metrics}");
    args.extend([image.as_str(), "run", &metrics_arg, "--log-format=json"]);
    let container = Container(name.clone());
    podman_ok(&args);

    // The probes of the Deployment.
    for path in ["/healthz", "/readyz"] {
        let answered = eventually(Duration::from_secs(60), || async {
            (devenv::http_get(&metrics, path)?.0 == 200).then_some(())
        })
        .await;
        assert!(answered.is_some(), "{path} on {metrics} did not answer 200 within 60 s");
    }
    eprintln!("image: /readyz 200 after {:.1}s", started.elapsed().as_secs_f64());

    // A pool of each backend and a claim on each: both get Bound.
    let ns = namespace("image").await;
    let lease_pool = unique("image-lease");
    let etcd_pool = unique("image-etcd");
    kubectl_ok(&["apply", "-f", "-"], Some(&pool_yaml(&lease_pool, "{list: [a, b, c]}", "Lease")));
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&pool_yaml(&etcd_pool, "{range: {start: 40000, end: 40009}}", "Etcd")),
    );
    create_claim(&ns, "on-lease", &lease_pool, 2).await;
    create_claim(&ns, "on-etcd", &etcd_pool, 3).await;
    for claim in ["on-lease", "on-etcd"] {
        let bound = eventually(Duration::from_secs(60), || async {
            reason_of(&ns, claim).await.filter(|(status, _)| status == "True")
        })
        .await;
        assert!(
            bound.is_some(),
            "claim {ns}/{claim} not Bound within 60 s: {:?}",
            reason_of(&ns, claim).await
        );
    }
    for pool in [&lease_pool, &etcd_pool] {
        let ready = kubectl_ok(
            &["get", "pool", pool, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"],
            None,
        );
        assert_eq!(ready, "True", "pool {pool} Ready");
    }
    eprintln!(
        "image: claims on a Lease and an Etcd pool Bound after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let scraped = devenv::http_get(&metrics, "/metrics").expect("scrape /metrics");
    assert_eq!(scraped.0, 200);
    assert!(scraped.1.contains("lockguard_"), "no lockguard metrics:\n{}", scraped.1);

    // The process: uid and gid 65532, no capabilities, no new privileges.
    let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &name]);
    assert_eq!(status_field(&pid, "Uid:"), "65532 65532 65532 65532");
    assert_eq!(status_field(&pid, "Gid:"), "65532 65532 65532 65532");
    assert_eq!(status_field(&pid, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(&pid, "CapBnd:"), "0000000000000000");
    assert_eq!(status_field(&pid, "NoNewPrivs:"), "1");
    // Its root filesystem is read-only: a write through its root (even as root, from outside)
    // fails with EROFS, in / and in its home.
    for path in ["probe", "home/nonroot/probe", "tmp/probe"] {
        let target = format!("/proc/{pid}/root/{path}");
        let error = std::fs::write(&target, b"x").expect_err("a write to the container's root filesystem");
        assert_eq!(error.raw_os_error(), Some(libc::EROFS), "{target}: {error}");
    }
    eprintln!(
        "image: pid {pid} runs as 65532:65532, no capabilities, no new privileges; its root is read-only (EROFS)"
    );
    let logs = container.logs();
    for line in logs.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not a JSON log line: {line}");
    }

    // Deleting the claims, then the pools, goes through the operator's finalizers; then
    // SIGTERM stops it with 0.
    kubectl_ok(&["delete", "claims", "--all", "-n", &ns, "--wait=true", "--timeout=60s"], None);
    kubectl_ok(&["delete", "pool", &lease_pool, &etcd_pool, "--wait=true", "--timeout=60s"], None);
    podman_ok(&["stop", "--time", "25", &name]);
    let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    assert_eq!(code, "0", "exit code after SIGTERM; log:\n{}", container.logs());
    let _ = std::fs::remove_dir_all(&secrets);
    eprintln!("image: done in {:.1}s", started.elapsed().as_secs_f64());
}
