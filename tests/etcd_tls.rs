//! The lock etcd's mutual TLS and auth as deploy/ sets them up: `lockguard certs` under its
//! Job's RBAC makes the Secrets and, once an etcd serves with them, its users; the operator's
//! certificate may use `lockguard/` keys only, and everyone else is refused.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use devenv::certs::EtcdPki;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use lockguard_lock::etcd::{EtcdConfig, EtcdLock};
use lockguard_lock::{Lock, LockOptions};
use support::{OPERATOR_NAMESPACE, Operator, apply, audit, kube_client, kubectl_ok, lockguard_binary, repo};

const SECRETS: [&str; 4] =
    ["lockguard-etcd-ca", "lockguard-etcd-member", "lockguard-etcd-client", "lockguard-etcd-root"];

/// `lockguard certs` under the Job's ServiceAccount, as the Job runs it.
fn certs(kubeconfig: &Path, endpoints: Option<&str>) -> Output {
    let mut command = Command::new(lockguard_binary());
    command
        .args(["certs", "--namespace", OPERATOR_NAMESPACE, "--wait-seconds", "20"])
        .env("KUBECONFIG", kubeconfig);
    if let Some(endpoints) = endpoints {
        command.args(["--etcd-endpoints", endpoints]);
    }
    command.env_remove("LOCKGUARD_ETCD_ENDPOINTS").output().expect("lockguard certs")
}

fn ok(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "lockguard certs failed:\n{text}");
    text
}

/// Writes Secret `name`'s files into `dir`: (ca.crt, tls.crt, tls.key).
async fn files(name: &str, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let secret =
        Api::<Secret>::namespaced(kube_client().await, OPERATOR_NAMESPACE).get(name).await.expect(name);
    let data = secret.data.expect("data");
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("dir");
    let paths = ["ca.crt", "tls.crt", "tls.key"].map(|key| {
        let path = dir.join(key);
        std::fs::write(&path, &data[key].0).expect("write");
        path
    });
    let [ca, cert, key] = paths;
    (ca, cert, key)
}

fn config(endpoint: &str, ca: Option<&Path>, pair: Option<(&Path, &Path)>) -> EtcdConfig {
    EtcdConfig {
        ca: ca.map(Path::to_path_buf),
        cert: pair.map(|(c, _)| c.to_path_buf()),
        key: pair.map(|(_, k)| k.to_path_buf()),
        ..EtcdConfig::new([endpoint])
    }
}

/// Whether a client so configured can take a lock named `name` (connect, grant, put).
async fn can_lock(config: &EtcdConfig, name: &str) -> Result<(), String> {
    let client = config.connect(Duration::from_secs(3)).await.map_err(|e| e.to_string())?;
    let options = LockOptions::new(5, Duration::from_secs(3)).expect("options");
    let guard = EtcdLock::new(client, "tls-test").acquire(name, options).await.map_err(|e| e.to_string())?;
    guard.release().await.map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_etcd_takes_only_its_own_certificates_and_the_operator_only_its_keys() {
    let dir = devenv::run_dir("etcd-tls").expect("dir");
    // The Job's RBAC, from deploy/, and no Secrets of an earlier run.
    support::install().await;
    kubectl_ok(&["apply", "-f", &repo().join("deploy/etcd/certs_rbac.yaml").display().to_string()], None);
    let selector = "app.kubernetes.io/component=etcd-certs";
    kubectl_ok(&["delete", "secret", "-n", OPERATOR_NAMESPACE, "-l", selector, "--ignore-not-found"], None);
    let job = support::service_account_kubeconfig("lockguard-certs").await;

    let made = ok(certs(&job, None));
    for name in SECRETS {
        assert!(made.contains(&format!("created Secret {name}")), "{made}");
    }
    // An etcd serving with the members' certificate, requiring client certificates.
    let (ca, member_cert, member_key) = files("lockguard-etcd-member", &dir).await;
    let (_, client_cert, client_key) = files("lockguard-etcd-client", &dir).await;
    let pki = EtcdPki {
        ca_cert: ca.clone(),
        server_cert: member_cert,
        server_key: member_key,
        client_cert: client_cert.clone(),
        client_key: client_key.clone(),
    };
    let etcd = devenv::etcd::start_tls_from(&dir, "tls-etcd", pki).expect("etcd with the made certificates");
    let endpoint = etcd.endpoint();
    let secrets = Api::<Secret>::namespaced(kube_client().await, OPERATOR_NAMESPACE);
    let versions = || async {
        let mut all = Vec::new();
        for name in SECRETS {
            all.push(secrets.get(name).await.expect(name).metadata.resource_version);
        }
        all
    };
    let before = versions().await;
    let enabled = ok(certs(&job, Some(&endpoint)));
    assert!(enabled.contains("auth enabled"), "{enabled}");
    // Again: nothing changes, nothing fails; as cert-manager's Component runs it, too.
    ok(certs(&job, Some(&endpoint)));
    let external = Command::new(lockguard_binary())
        .args(["certs", "--external", "--namespace", OPERATOR_NAMESPACE, "--etcd-endpoints", &endpoint])
        .env("KUBECONFIG", &job)
        .output()
        .expect("lockguard certs --external");
    let said = ok(external);
    assert!(said.contains("auth enabled") && !said.contains("created"), "{said}");
    assert_eq!(versions().await, before, "a second run kept every Secret");

    // The operator's certificate: its own keys only.
    let operator = config(&endpoint, Some(&ca), Some((&client_cert, &client_key)));
    can_lock(&operator, "lockguard/pools/p").await.expect("the operator locks under lockguard/");
    let outside = can_lock(&operator, "elsewhere/p").await;
    assert!(outside.as_ref().is_err_and(|e| e.contains("permission denied")), "{outside:?}");
    // Everyone else: no certificate, another CA's certificate, plain HTTP.
    let none = can_lock(&config(&endpoint, Some(&ca), None), "lockguard/pools/p").await;
    assert!(none.is_err(), "no client certificate: {none:?}");
    let other_ca = lockguard::certs::Ca::generate(lockguard::certs::Validity::from_now(1)).expect("a CA");
    let forged =
        other_ca.client("lockguard", lockguard::certs::Validity::from_now(1)).expect("a certificate");
    let (forged_cert, forged_key) = (dir.join("forged.crt"), dir.join("forged.key"));
    std::fs::write(&forged_cert, &forged.cert).expect("write");
    std::fs::write(&forged_key, &forged.key).expect("write");
    let wrong =
        can_lock(&config(&endpoint, Some(&ca), Some((&forged_cert, &forged_key))), "lockguard/pools/p").await;
    assert!(wrong.is_err(), "a certificate of another CA: {wrong:?}");
    let plain =
        can_lock(&config(&endpoint.replace("https://", "http://"), None, None), "lockguard/pools/p").await;
    assert!(plain.is_err(), "plain HTTP: {plain:?}");

    // Rotation: a deleted client Secret is made again, signed by the same CA.
    kubectl_ok(&["delete", "secret", "-n", OPERATOR_NAMESPACE, "lockguard-etcd-client"], None);
    let remade = ok(certs(&job, None));
    assert!(
        remade.contains("created Secret lockguard-etcd-client") && !remade.contains("lockguard-etcd-ca"),
        "{remade}"
    );
    let (_, new_cert, new_key) = files("lockguard-etcd-client", &dir.join("rotated")).await;
    assert_ne!(std::fs::read(&new_cert).ok(), std::fs::read(&client_cert).ok(), "a new certificate");
    can_lock(&config(&endpoint, Some(&ca), Some((&new_cert, &new_key))), "lockguard/pools/p")
        .await
        .expect("the new certificate is accepted");

    // The operator itself, with the flags deploy/ gives it.
    let paths = [&ca, &new_cert, &new_key].map(|p| p.display().to_string());
    let args = ["--etcd-ca", &paths[0], "--etcd-cert", &paths[1], "--etcd-key", &paths[2]];
    let op = Operator::start_with(2, "tls", &endpoint, &args).await;
    apply(&op.pool_yaml("{range: {start: 1, end: 10}}", "Etcd"));
    op.claim("a", 2).await;
    op.bound("a", Duration::from_secs(30), "bound over mutual TLS under etcd auth").await;
    assert_eq!(audit(&[&op.pool]).await, Ok(2));
}
