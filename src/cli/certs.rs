//! `lockguard certs`: the lock etcd's certificates, made in the cluster by a Job of deploy/
//! (nothing fetched, no Helm) and kept in Secrets of the operator's namespace; then, once the
//! etcd answers, its users: `root`, and `lockguard`, which may touch `lockguard/` keys only.
//! Idempotent: a Secret that exists is left as it is (delete one to have it made again,
//! signed by the same CA), and users, roles and auth that exist are kept.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions, UserAddOptions};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::lock::EXIT_ERROR;
use crate::certs::{Ca, Pem, Validity};

/// The Secrets, by what they hold.
pub const CA_SECRET: &str = "lockguard-etcd-ca";
pub const MEMBER_SECRET: &str = "lockguard-etcd-member";
pub const CLIENT_SECRET: &str = "lockguard-etcd-client";
pub const ROOT_SECRET: &str = "lockguard-etcd-root";
/// The etcd user of the operator (the common name of its certificate), and its key prefix.
pub const OPERATOR_USER: &str = "lockguard";
pub const OPERATOR_PREFIX: &str = "lockguard/";

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Namespace of the Secrets (the operator's).
    #[arg(long, env = "POD_NAMESPACE", default_value = "lockguard-system")]
    pub namespace: String,
    /// The lock etcd's headless Service; its client Service is `<service>-client`.
    #[arg(long, default_value = "lockguard-etcd")]
    pub service: String,
    /// How long new certificates are valid.
    #[arg(long, default_value_t = 3650)]
    pub days: i64,
    /// With the lock etcd's endpoints (https://), wait for it and set up its users and auth.
    #[arg(long = "etcd-endpoints", env = "LOCKGUARD_ETCD_ENDPOINTS")]
    pub endpoints: Option<String>,
    /// How long to wait for the lock etcd to answer (and, with `--external`, for the Secrets).
    #[arg(long, default_value_t = 600)]
    pub wait_seconds: u64,
    /// The Secrets are made by someone else (cert-manager, deploy/etcd-cert-manager): wait for
    /// them instead of making them, then set up auth.
    #[arg(long)]
    pub external: bool,
}

pub async fn certs(args: CertsArgs) -> ExitCode {
    match make(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockguard certs: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

async fn make(args: &CertsArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connect to the Kubernetes API")?;
    let secrets: Api<Secret> = Api::namespaced(client, &args.namespace);
    let deadline = Instant::now() + Duration::from_secs(args.wait_seconds);
    let (ca_cert, root) = if args.external {
        let ca = wait_for(&secrets, CA_SECRET, deadline).await?;
        for name in [MEMBER_SECRET, CLIENT_SECRET] {
            wait_for(&secrets, name, deadline).await?;
        }
        (ca.cert, wait_for(&secrets, ROOT_SECRET, deadline).await?)
    } else {
        let validity = Validity::from_now(args.days);
        let ca = ensure(&secrets, CA_SECRET, None, || Ok(Ca::generate(validity)?.pem().clone())).await?;
        let ca = Ca::from_pem(ca).context("read the CA from its Secret")?;
        let ca_cert = ca.pem().cert.clone();
        let signed_by_ca = Some(ca_cert.as_str());
        let member = || ca.member(&args.service, &args.namespace, validity);
        ensure(&secrets, MEMBER_SECRET, signed_by_ca, member).await?;
        ensure(&secrets, CLIENT_SECRET, signed_by_ca, || ca.client(OPERATOR_USER, validity)).await?;
        let root = ensure(&secrets, ROOT_SECRET, signed_by_ca, || ca.client("root", validity)).await?;
        (ca_cert, root)
    };
    let Some(endpoints) = &args.endpoints else { return Ok(()) };
    loop {
        match enable_auth(endpoints, &ca_cert, &root).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("lockguard certs: the lock etcd is not ready yet ({e:#}); trying again");
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The certificate in Secret `name` once someone else made it.
async fn wait_for(secrets: &Api<Secret>, name: &str, deadline: Instant) -> anyhow::Result<Pem> {
    loop {
        // Until issued, the Secret may exist without its certificate.
        match read(secrets, name).await {
            Ok(Some(pem)) => return Ok(pem),
            Ok(None) | Err(_) if Instant::now() < deadline => {}
            Ok(None) => anyhow::bail!("Secret {name} was not made in time (is cert-manager running?)"),
            Err(e) => return Err(e),
        }
        eprintln!("lockguard certs: waiting for Secret {name}");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// The certificate in Secret `name`, made by `make` and stored if the Secret is missing (a
/// Secret another run made first is used). `ca_cert`: the CA's certificate, `None` for the CA.
async fn ensure(
    secrets: &Api<Secret>,
    name: &str,
    ca_cert: Option<&str>,
    make: impl FnOnce() -> Result<Pem, crate::certs::CertError>,
) -> anyhow::Result<Pem> {
    if let Some(pem) = read(secrets, name).await? {
        return Ok(pem);
    }
    let pem = make()?;
    match create(secrets, name, &pem, ca_cert.unwrap_or(&pem.cert)).await {
        Ok(()) => {
            println!("created Secret {name}");
            Ok(pem)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            read(secrets, name).await?.context("the Secret vanished")
        }
        Err(e) => Err(e).with_context(|| format!("create Secret {name}")),
    }
}

async fn read(secrets: &Api<Secret>, name: &str) -> anyhow::Result<Option<Pem>> {
    let Some(secret) = secrets.get_opt(name).await.with_context(|| format!("read Secret {name}"))? else {
        return Ok(None);
    };
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .with_context(|| format!("Secret {name} has no {key}"))
    };
    Ok(Some(Pem { cert: text("tls.crt")?, key: text("tls.key")? }))
}

/// A `kubernetes.io/tls` Secret, with the CA's certificate as `ca.crt` beside the pair.
async fn create(secrets: &Api<Secret>, name: &str, pem: &Pem, ca_cert: &str) -> Result<(), kube::Error> {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "lockguard".to_string()),
        ("app.kubernetes.io/component".to_string(), "etcd-certs".to_string()),
    ]);
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels), ..ObjectMeta::default() },
        type_: Some("kubernetes.io/tls".to_string()),
        string_data: Some(BTreeMap::from([
            ("tls.crt".to_string(), pem.cert.clone()),
            ("tls.key".to_string(), pem.key.clone()),
            ("ca.crt".to_string(), ca_cert.to_string()),
        ])),
        ..Secret::default()
    };
    secrets.create(&PostParams::default(), &secret).await.map(drop)
}

/// As `root` (its certificate): users `root` and `lockguard` without passwords (a
/// certificate's common name is the user), role `lockguard` with read and write on
/// `lockguard/` only, then auth on. Each step that was done before is kept.
async fn enable_auth(endpoints: &str, ca_cert: &str, root: &Pem) -> anyhow::Result<()> {
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca_cert))
        .identity(Identity::from_pem(&root.cert, &root.key));
    let options = ConnectOptions::new().with_tls(tls).with_connect_timeout(Duration::from_secs(5));
    let list: Vec<&str> = endpoints.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut etcd =
        etcd_client::Client::connect(list, Some(options)).await.context("connect to the lock etcd")?;
    let no_password = || Some(UserAddOptions::new().with_no_pwd());
    kept(etcd.user_add("root", "", no_password()).await, "user root")?;
    kept(etcd.role_add("root").await, "role root")?;
    kept(etcd.user_grant_role("root", "root").await, "root's role")?;
    kept(etcd.role_add(OPERATOR_USER).await, "role lockguard")?;
    let prefix = Permission::read_write(OPERATOR_PREFIX).with_prefix();
    kept(etcd.role_grant_permission(OPERATOR_USER, prefix).await, "lockguard's permission")?;
    kept(etcd.user_add(OPERATOR_USER, "", no_password()).await, "user lockguard")?;
    kept(etcd.user_grant_role(OPERATOR_USER, OPERATOR_USER).await, "lockguard's role")?;
    etcd.auth_enable().await.context("enable auth")?;
    println!("lock etcd: auth enabled; user {OPERATOR_USER} may use {OPERATOR_PREFIX} keys only");
    Ok(())
}

/// Success, or "already exists" (a run before this one did it).
fn kept<T>(result: Result<T, etcd_client::Error>, what: &str) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("already exists") => Ok(()),
        Err(e) => Err(e).with_context(|| format!("set up {what}")),
    }
}
