//! kube-apiserver + its etcd as processes on loopback, envtest-style: no controllers,
//! no kubelet, no garbage collection.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::certs::{self, KeyPairFiles, NodePki, Pki};
use crate::etcd::{self, EtcdServer};
use crate::process::{Process, free_port};
use crate::{Error, Result, kubernetes_binary};

#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    host: String,
    port: u16,
    pki: Pki,
    kubeconfig: PathBuf,
    apiserver: Process,
    etcd: EtcdServer,
    /// With a node: the API server's client certificate towards the kubelet.
    kubelet_client: Option<KeyPairFiles>,
}

/// The `kubernetes` Service's ClusterIP: the first address of `--service-cluster-ip-range`.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
pub const KUBERNETES_SERVICE_IP: &str = "10.0.0.1";

impl ControlPlane {
    /// Starts etcd and kube-apiserver under `dir` and waits until the API server is ready
    /// and namespace `default` exists.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_on(dir, "127.0.0.1").await
    }

    /// The same, with the API server listening on `host` only (a local address, e.g. of a
    /// veth pair that a network namespace reaches).
    pub async fn start_on(dir: &Path, host: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let pki = certs::generate(&dir.join("pki"), host)?;
        Self::launch(dir, host, pki, None).await
    }

    /// A control plane for a cluster with node `node` (hack/devenv's node module): the API
    /// server listens on `host` (the node's bridge address, which pods reach), advertises it
    /// as the `kubernetes` Service's endpoint, authorizes with Node and RBAC, admits with the
    /// ServiceAccount plugin (pods get tokens), and reaches the kubelet with a client
    /// certificate. Its serving certificate is valid for `host`, the Service's ClusterIP
    /// and its DNS names.
    pub async fn start_for_node(dir: &Path, host: &str, node: &str) -> Result<(Self, NodePki)> {
        std::fs::create_dir_all(dir)?;
        let hosts = [
            host,
            KUBERNETES_SERVICE_IP,
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let (pki, node_pki) = certs::generate_for_node(&dir.join("pki"), &hosts, node, host)?;
        let control_plane =
            Self::launch(dir, host, pki, Some(node_pki.apiserver_kubelet_client.clone())).await?;
        Ok((control_plane, node_pki))
    }

    async fn launch(dir: &Path, host: &str, pki: Pki, kubelet_client: Option<KeyPairFiles>) -> Result<Self> {
        let started = Instant::now();
        let etcd = etcd::start_single(dir, "apiserver-etcd")?;
        let port = free_port()?;
        let args =
            apiserver_args(host, port, &pki, &etcd.endpoint(), &dir.join("pki"), kubelet_client.as_ref());
        let apiserver =
            Process::spawn(&kubernetes_binary("kube-apiserver")?, &args, &dir.join("kube-apiserver.log"))?;
        let kubeconfig = dir.join("admin.kubeconfig");
        let host = host.to_string();
        std::fs::write(&kubeconfig, admin_kubeconfig(&host, port, &pki))?;
        let mut control_plane =
            Self { dir: dir.to_path_buf(), host, port, pki, kubeconfig, apiserver, etcd, kubelet_client };
        control_plane.wait_ready(Duration::from_secs(90)).await?;
        eprintln!(
            "devenv: kube-apiserver{} ready on {} in {:.1}s",
            crate::kubernetes_version().map(|v| format!(" {v}")).unwrap_or_default(),
            control_plane.url(),
            started.elapsed().as_secs_f64()
        );
        Ok(control_plane)
    }

    /// Kills the API server (SIGKILL) and starts it again on the same port, certificates
    /// and etcd; waits until it is ready.
    pub async fn restart_apiserver(&mut self) -> Result<()> {
        self.apiserver.kill();
        let args = apiserver_args(
            &self.host,
            self.port,
            &self.pki,
            &self.etcd.endpoint(),
            &self.dir.join("pki"),
            self.kubelet_client.as_ref(),
        );
        self.apiserver = Process::spawn(
            &kubernetes_binary("kube-apiserver")?,
            &args,
            &self.dir.join("kube-apiserver.log"),
        )?;
        self.wait_ready(Duration::from_secs(90)).await
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let client = self.client().await?;
        loop {
            if let Some(status) = self.apiserver.exited() {
                return Err(Error::NotReady {
                    what: format!("kube-apiserver exited ({status})"),
                    log: self.apiserver.log_tail(30),
                });
            }
            if is_ready(&client).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    what: "kube-apiserver".into(),
                    log: self.apiserver.log_tail(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }

    /// The admin (system:masters) kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.pid()
    }

    pub fn etcd(&self) -> &EtcdServer {
        &self.etcd
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// A kubeconfig at `name.kubeconfig` in the run directory that authenticates with the
    /// client certificate `identity` (for the node's components).
    pub fn write_kubeconfig(&self, name: &str, identity: &KeyPairFiles) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let user = format!(
            "client-certificate: {}\n    client-key: {}",
            identity.cert.display(),
            identity.key.display()
        );
        std::fs::write(&path, kubeconfig_yaml(&self.host, self.port, &self.pki, &user))?;
        Ok(path)
    }

    /// A kube client with admin rights.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// `kubectl` of the release the API server was built from, with the admin kubeconfig.
    pub fn kubectl(&self) -> Result<Command> {
        let mut command = Command::new(kubernetes_binary("kubectl")?);
        command.env("KUBECONFIG", &self.kubeconfig);
        Ok(command)
    }

    /// Writes a kubeconfig that authenticates as ServiceAccount `namespace/name` with a token
    /// from the TokenRequest API, so a process runs under exactly that account's RBAC.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client().await?, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(24 * 3600), ..Default::default() }),
            ..Default::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Token(format!("{namespace}/{name}")))?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        std::fs::write(&path, kubeconfig_yaml(&self.host, self.port, &self.pki, &format!("token: {token}")))?;
        Ok(path)
    }
}

/// `/readyz` says ok and namespace `default` exists.
async fn is_ready(client: &Client) -> bool {
    let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else { return false };
    let ready = matches!(client.request_text(request).await.as_deref(), Ok("ok"));
    ready && Api::<Namespace>::all(client.clone()).get("default").await.is_ok()
}

/// A kube client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn apiserver_args(
    host: &str,
    port: u16,
    pki: &Pki,
    etcd: &str,
    cert_dir: &Path,
    kubelet_client: Option<&KeyPairFiles>,
) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args = vec![
        format!("--etcd-servers={etcd}"),
        format!("--bind-address={host}"),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", path(cert_dir)),
        format!("--tls-cert-file={}", path(&pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&pki.serving_key)),
        format!("--client-ca-file={}", path(&pki.ca_cert)),
        format!("--service-account-issuer=https://{host}:{port}/"),
        format!("--service-account-key-file={}", path(&pki.sa_public_key)),
        format!("--service-account-signing-key-file={}", path(&pki.sa_signing_key)),
        "--authorization-mode=RBAC".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--allow-privileged=true".into(),
        "--disable-admission-plugins=ServiceAccount".into(),
        // There is no default route to advertise on loopback.
        "--endpoint-reconciler-type=none".into(),
        "--v=1".into(),
    ];
    if let Some(client) = kubelet_client {
        // A node: pods reach the API server through the `kubernetes` Service, get tokens
        // (ServiceAccount admission), and the kubelet is authorized by the Node authorizer.
        args.retain(|a| {
            !a.starts_with("--disable-admission-plugins=")
                && !a.starts_with("--endpoint-reconciler-type=")
                && !a.starts_with("--authorization-mode=")
        });
        args.extend([
            format!("--advertise-address={host}"),
            "--authorization-mode=Node,RBAC".into(),
            format!("--kubelet-client-certificate={}", path(&client.cert)),
            format!("--kubelet-client-key={}", path(&client.key)),
            // The node's name is not in any DNS: reach the kubelet at its address.
            "--kubelet-preferred-address-types=InternalIP".into(),
        ]);
    }
    args.retain(|a| !a.is_empty());
    args
}

fn admin_kubeconfig(host: &str, port: u16, pki: &Pki) -> String {
    let user = format!(
        "client-certificate: {}\n    client-key: {}",
        pki.admin_cert.display(),
        pki.admin_key.display()
    );
    kubeconfig_yaml(host, port, pki, &user)
}

fn kubeconfig_yaml(host: &str, port: u16, pki: &Pki, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: devenv
  cluster:
    server: https://{host}:{port}
    certificate-authority: {ca}
users:
- name: devenv
  user:
    {user}
contexts:
- name: devenv
  context:
    cluster: devenv
    user: devenv
    namespace: default
current-context: devenv
",
        ca = pki.ca_cert.display()
    )
}
