//! etcd servers on loopback: a single member, or a cluster of several.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::EtcdPki;
use crate::process::{Process, free_port, wait_until};
use crate::{Error, Result, binary};

/// One etcd member. It can be stopped, restarted on the same ports and data, and paused.
#[derive(Debug)]
pub struct EtcdServer {
    name: String,
    dir: PathBuf,
    /// The address clients reach it on (peers always talk over loopback).
    host: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    durable: bool,
    /// Flags of the test's own (a quota, compaction), after the others.
    extra: Vec<String>,
    /// With TLS, clients must show a certificate; health is read on a plain metrics port.
    tls: Option<(EtcdPki, u16)>,
    process: Option<Process>,
}

impl EtcdServer {
    fn new(name: &str, dir: &Path, client_port: u16, peer_port: u16) -> Self {
        Self {
            name: name.to_string(),
            dir: dir.join(name),
            host: "127.0.0.1".to_string(),
            client_port,
            peer_port,
            initial_cluster: format!("{name}=http://127.0.0.1:{peer_port}"),
            durable: false,
            extra: Vec::new(),
            tls: None,
            process: None,
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), for `--etcd-servers` and etcd clients.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }

    /// The client certificate, key and CA of a TLS server.
    pub fn tls(&self) -> Option<&EtcdPki> {
        self.tls.as_ref().map(|(pki, _)| pki)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    fn args(&self) -> Vec<String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut args: Vec<String> = [
            "--name",
            &self.name,
            "--data-dir",
            &self.dir.join("data").display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &self.initial_cluster,
            "--initial-cluster-token",
            "devenv",
            "--initial-cluster-state",
            "new",
            "--listen-metrics-urls",
            "",
            "--log-level",
            "warn",
            // Tests measure behaviour, not durability; benchmarks keep fsync.
            if self.durable { "--unsafe-no-fsync=false" } else { "--unsafe-no-fsync=true" },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some((pki, metrics_port)) = &self.tls {
            let path = |p: &PathBuf| p.display().to_string();
            args.retain(|a| a != "--listen-metrics-urls" && !a.is_empty());
            args.extend([
                format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
                format!("--cert-file={}", path(&pki.server_cert)),
                format!("--key-file={}", path(&pki.server_key)),
                format!("--trusted-ca-file={}", path(&pki.ca_cert)),
                "--client-cert-auth=true".into(),
            ]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Starts the process (again, after `stop`) without waiting for health.
    pub fn launch(&mut self) -> Result<()> {
        if self.process.is_some() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let log = self.dir.join("etcd.log");
        self.process = Some(Process::spawn(&binary("etcd")?, &self.args(), &log)?);
        Ok(())
    }

    /// Starts the process and waits until `/health` answers 200.
    pub fn start(&mut self) -> Result<()> {
        self.launch()?;
        self.wait_healthy(Duration::from_secs(30))
    }

    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let addr = match &self.tls {
            Some((_, metrics)) => format!("127.0.0.1:{metrics}"),
            None => format!("{}:{}", self.host, self.client_port),
        };
        if wait_until(timeout, || http_status(&addr, "/health") == Some(200)) {
            return Ok(());
        }
        let tail = self.process.as_ref().map(|p| p.log_tail(20)).unwrap_or_default();
        Err(Error::NotReady { what: format!("etcd {}", self.name), log: tail })
    }

    /// Stops gracefully (SIGTERM). `start` brings it back on the same ports and data.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    /// Replaces this server by a fresh cluster on the same ports: stopped, its data
    /// directory removed, started again (a new cluster id; revisions start over).
    pub fn replace_with_fresh_cluster(&mut self) -> Result<()> {
        self.kill_and_wipe()?;
        self.start()
    }

    /// A copy of its data directory as a stopped member leaves it (a volume snapshot): stopped,
    /// copied to `to`, started again.
    pub fn copy_volume(&mut self, to: &Path) -> Result<()> {
        self.stop();
        copy_dir(&self.dir.join("data"), to)?;
        self.start()
    }

    /// Puts a copy made by `copy_volume` back in place of its data (a volume snapshot
    /// restored), and starts it on it: the same cluster, its revisions as they were then.
    pub fn put_back_volume(&mut self, from: &Path) -> Result<()> {
        let data = self.kill_and_wipe()?;
        copy_dir(from, &data)?;
        self.start()
    }

    /// `etcdctl snapshot save` of this member into `to`.
    pub fn save_snapshot(&self, to: &Path) -> Result<()> {
        let out = std::process::Command::new(binary("etcdctl")?)
            .args(["--endpoints", &self.endpoint(), "snapshot", "save"])
            .arg(to)
            .output()?;
        if out.status.success() {
            return Ok(());
        }
        Err(Error::NotReady {
            what: "etcdctl snapshot save".into(),
            log: String::from_utf8_lossy(&out.stderr).into(),
        })
    }

    /// Replaces its data by `etcdutl snapshot restore` of `snapshot` with `--bump-revision
    /// bump --mark-compacted` (as the etcd docs advise for a restore that clients watched
    /// past), and starts it on the restored data.
    pub fn restore_snapshot(&mut self, snapshot: &Path, bump: u64) -> Result<()> {
        let data = self.kill_and_wipe()?;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let out = std::process::Command::new(binary("etcdutl")?)
            .arg("snapshot")
            .arg("restore")
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&data)
            .args(["--name", &self.name, "--initial-cluster", &self.initial_cluster])
            .args(["--initial-advertise-peer-urls", &peer, "--initial-cluster-token", "devenv"])
            .args(["--bump-revision", &bump.to_string(), "--mark-compacted"])
            .output()?;
        if !out.status.success() {
            let log = String::from_utf8_lossy(&out.stderr).into();
            return Err(Error::NotReady { what: "etcdutl snapshot restore".into(), log });
        }
        self.start()
    }

    /// Kills it and removes its data directory, whose path it returns.
    fn kill_and_wipe(&mut self) -> Result<PathBuf> {
        self.kill();
        let data = self.dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        Ok(data)
    }

    /// SIGKILL: a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// SIGSTOP: the process hangs, its sockets stay open (a hung etcd).
    pub fn pause(&self) -> Result<()> {
        self.signal(libc::SIGSTOP)
    }

    pub fn resume(&self) -> Result<()> {
        self.signal(libc::SIGCONT)
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        match &self.process {
            Some(p) => Ok(p.signal(signal)?),
            None => Err(Error::NotRunning(self.name.clone())),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// A single etcd server without fsync (fast, for tests).
pub fn start_single(dir: &Path, name: &str) -> Result<EtcdServer> {
    let mut server = EtcdServer::new(name, dir, free_port()?, free_port()?);
    server.start()?;
    Ok(server)
}

/// A single etcd server that serves clients over TLS and requires client certificates.
pub fn start_tls(dir: &Path, name: &str) -> Result<EtcdServer> {
    let mut server = EtcdServer::new(name, dir, free_port()?, free_port()?);
    server.tls = Some((crate::certs::generate_etcd(&dir.join(name).join("pki"))?, free_port()?));
    server.start()?;
    Ok(server)
}

/// A single etcd server without fsync, with `extra` flags (e.g. `--quota-backend-bytes=…`).
pub fn start_with(dir: &Path, name: &str, extra: &[&str]) -> Result<EtcdServer> {
    let mut server = EtcdServer::new(name, dir, free_port()?, free_port()?);
    server.extra = extra.iter().map(|s| s.to_string()).collect();
    server.start()?;
    Ok(server)
}

/// A single etcd server that serves clients over TLS with the given certificates (`pki`'s
/// client pair is what `tls()` hands to tests) and requires client certificates.
pub fn start_tls_from(dir: &Path, name: &str, pki: EtcdPki) -> Result<EtcdServer> {
    let mut server = EtcdServer::new(name, dir, free_port()?, free_port()?);
    server.tls = Some((pki, free_port()?));
    server.start()?;
    Ok(server)
}

/// A single etcd server that fsyncs its log, as in production (for benchmarks).
pub fn start_durable(dir: &Path, name: &str) -> Result<EtcdServer> {
    let mut server = EtcdServer::new(name, dir, free_port()?, free_port()?);
    server.durable = true;
    server.start()?;
    Ok(server)
}

/// An etcd cluster of `size` members on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<EtcdServer>,
}

impl EtcdCluster {
    pub fn start(dir: &Path, prefix: &str, size: usize) -> Result<Self> {
        Self::start_on(dir, prefix, size, "127.0.0.1")
    }

    /// A cluster whose members serve clients on `host` (a local address).
    pub fn start_on(dir: &Path, prefix: &str, size: usize, host: &str) -> Result<Self> {
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            let mut member = EtcdServer::new(&format!("{prefix}-{i}"), dir, free_port()?, free_port()?);
            member.host = host.to_string();
            members.push(member);
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = initial_cluster.clone();
            m.launch()?;
        }
        for m in &mut members {
            m.wait_healthy(Duration::from_secs(30))?;
        }
        Ok(Self { members })
    }

    /// All client endpoints, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members.iter().map(EtcdServer::endpoint).collect::<Vec<_>>().join(",")
    }
}

/// The status code of a plain HTTP GET on loopback, or None when it cannot connect.
pub(crate) fn http_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// A plain HTTP/1.0 GET on loopback: status code and body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}
