//! The certificates a local kube-apiserver needs: one CA that signs the serving certificate
//! and the admin client certificate, and the service-account signing key pair.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::Result;

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_public_key: PathBuf,
    pub sa_signing_key: PathBuf,
}

/// TLS material for an etcd that requires client certificates.
#[derive(Debug, Clone)]
pub struct EtcdPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A certificate for loopback (`localhost`, `127.0.0.1`, and `hosts`) or a client, signed
/// by `ca`; PEM.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
    hosts: &[&str],
) -> Result<(String, String)> {
    let names = match usage {
        ExtendedKeyUsagePurpose::ServerAuth => {
            ["localhost", "127.0.0.1"].iter().chain(hosts).map(|h| h.to_string()).collect()
        }
        _ => Vec::new(),
    };
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

pub fn generate_etcd(dir: &Path) -> Result<EtcdPki> {
    std::fs::create_dir_all(dir)?;
    let ca = ca("lockguard-devenv-etcd-ca")?;
    let (server_cert, server_key) = leaf(&ca, "etcd", None, ExtendedKeyUsagePurpose::ServerAuth, &[])?;
    let (client_cert, client_key) = leaf(&ca, "lockguard", None, ExtendedKeyUsagePurpose::ClientAuth, &[])?;
    let pki = EtcdPki {
        ca_cert: dir.join("etcd-ca.crt"),
        server_cert: dir.join("etcd-server.crt"),
        server_key: dir.join("etcd-server.key"),
        client_cert: dir.join("etcd-client.crt"),
        client_key: dir.join("etcd-client.key"),
    };
    std::fs::write(&pki.ca_cert, ca.pem())?;
    std::fs::write(&pki.server_cert, server_cert)?;
    std::fs::write(&pki.server_key, server_key)?;
    std::fs::write(&pki.client_cert, client_cert)?;
    std::fs::write(&pki.client_key, client_key)?;
    Ok(pki)
}

/// A certificate and its key (PEM files).
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificates of a one-node cluster's components, signed by the API server's CA.
#[derive(Debug, Clone)]
pub struct NodePki {
    /// The API server's client certificate towards the kubelet (`system:masters`).
    pub apiserver_kubelet_client: KeyPairFiles,
    /// The kubelet's client certificate (`system:node:<node>` in `system:nodes`).
    pub kubelet_client: KeyPairFiles,
    /// The kubelet's serving certificate (valid for the node's address).
    pub kubelet_serving: KeyPairFiles,
    pub scheduler: KeyPairFiles,
    pub controller_manager: KeyPairFiles,
    pub kube_proxy: KeyPairFiles,
}

/// The API server's PKI; its serving certificate is also valid for `host`.
pub fn generate(dir: &Path, host: &str) -> Result<Pki> {
    Ok(generate_inner(dir, &[host], None)?.0)
}

/// The API server's PKI for a cluster with a node: the serving certificate is also valid for
/// `hosts` (the bridge address pods reach, the `kubernetes` Service's ClusterIP and DNS
/// names), plus the certificates of node `node`'s components, all signed by the one CA.
pub fn generate_for_node(dir: &Path, hosts: &[&str], node: &str, node_ip: &str) -> Result<(Pki, NodePki)> {
    let (pki, node) = generate_inner(dir, hosts, Some((node, node_ip)))?;
    Ok((pki, node.expect("node certificates requested")))
}

fn generate_inner(dir: &Path, hosts: &[&str], node: Option<(&str, &str)>) -> Result<(Pki, Option<NodePki>)> {
    std::fs::create_dir_all(dir)?;
    let ca = ca("lockguard-devenv-ca")?;
    let (serving_cert, serving_key) =
        leaf(&ca, "kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth, hosts)?;
    let (admin_cert, admin_key) =
        leaf(&ca, "admin", Some("system:masters"), ExtendedKeyUsagePurpose::ClientAuth, &[])?;

    let sa_key = KeyPair::generate()?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("serving.crt"),
        serving_key: dir.join("serving.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_public_key: dir.join("sa.pub"),
        sa_signing_key: dir.join("sa.key"),
    };
    std::fs::write(&pki.ca_cert, ca.pem())?;
    std::fs::write(&pki.serving_cert, serving_cert)?;
    std::fs::write(&pki.serving_key, serving_key)?;
    std::fs::write(&pki.admin_cert, admin_cert)?;
    std::fs::write(&pki.admin_key, admin_key)?;
    std::fs::write(&pki.sa_public_key, sa_key.public_key_pem())?;
    std::fs::write(&pki.sa_signing_key, sa_key.serialize_pem())?;
    let Some((node, node_ip)) = node else { return Ok((pki, None)) };
    let write = |name: &str, (cert, key): (String, String)| -> Result<KeyPairFiles> {
        let files =
            KeyPairFiles { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&files.cert, cert)?;
        std::fs::write(&files.key, key)?;
        Ok(files)
    };
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let node_pki = NodePki {
        apiserver_kubelet_client: write(
            "apiserver-kubelet-client",
            leaf(&ca, "kube-apiserver-kubelet-client", Some("system:masters"), client.clone(), &[])?,
        )?,
        kubelet_client: write(
            "kubelet-client",
            leaf(&ca, &format!("system:node:{node}"), Some("system:nodes"), client.clone(), &[])?,
        )?,
        kubelet_serving: write(
            "kubelet-serving",
            leaf(&ca, node, None, ExtendedKeyUsagePurpose::ServerAuth, &[node, node_ip])?,
        )?,
        scheduler: write("scheduler", leaf(&ca, "system:kube-scheduler", None, client.clone(), &[])?)?,
        controller_manager: write(
            "controller-manager",
            leaf(&ca, "system:kube-controller-manager", None, client.clone(), &[])?,
        )?,
        kube_proxy: write("kube-proxy", leaf(&ca, "system:kube-proxy", None, client, &[])?)?,
    };
    Ok((pki, Some(node_pki)))
}
