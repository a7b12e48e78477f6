//! `devenv up`: a local control plane and a lock etcd until Ctrl-C; `devenv sweep`;
//! `devenv timeline`: the lock timeline of the demo's replica logs as an SVG picture.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use devenv::{ControlPlane, EtcdCluster, etcd};

#[derive(Parser)]
#[command(about = "A local kube-apiserver + etcd, and etcd servers for locks, on loopback")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the control plane and a lock etcd; print how to reach them; stop on Ctrl-C,
    /// SIGTERM, or after --seconds.
    Up {
        /// Write `export …` lines for KUBECONFIG and LOCKGUARD_ETCD_ENDPOINTS here.
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Members of the lock etcd cluster (1 or 3).
        #[arg(long, default_value_t = 1)]
        lock_etcd_members: usize,
        /// Stop by itself after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// A one-node cluster (kubelet + containerd, scheduler, controller-manager, kube-proxy,
    /// CoreDNS) on the control plane; stop on Ctrl-C, SIGTERM or after --seconds, tear down
    /// and check that nothing is left. Needs root and `make node-tools`.
    NodeUp {
        /// Write `export KUBECONFIG=…` here.
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Stop by itself after this many seconds.
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// List what a node cluster left on the host (processes, cgroups, bridge, nft tables,
    /// mounts, paths); exit 1 if anything.
    NodeLeftovers,
    /// Remove run directories left by harness processes that are gone (and undo what a
    /// node cluster of theirs left).
    Sweep,
    /// List processes whose harness is gone (orphans); exit 1 if there are any.
    Orphans,
    /// Draw which replica held which pool's lock when (SVG), from `lockguard run` logs
    /// (text or JSON format): holds labelled with their fencing tokens, freezes, refused
    /// writes.
    Timeline {
        /// The SVG file to write (its directory is created).
        #[arg(long)]
        out: PathBuf,
        /// One log per replica.
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Sweep => {
            println!("devenv: removed {} stale run directories", devenv::sweep());
            Ok(())
        }
        Command::Orphans => {
            let orphans = devenv::orphans().into_iter().map(|(pid, command)| format!("{pid} {command}"));
            report(
                orphans,
                "no orphaned etcd or kube-apiserver processes",
                "processes outlived their harness",
            )
        }
        Command::Timeline { out, logs } => timeline(&out, &logs),
        Command::NodeUp { env_file, seconds } => node_up(env_file, seconds).await,
        Command::NodeLeftovers => report(devenv::node::leftovers(), "no node leftovers", "node leftovers"),
        Command::Up { env_file, lock_etcd_members, seconds } => {
            up(env_file, lock_etcd_members, seconds).await
        }
    }
}

fn timeline(out: &std::path::Path, logs: &[PathBuf]) -> anyhow::Result<()> {
    let timeline = devenv::timeline::from_files(logs).context("read the logs")?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(out, devenv::timeline::svg::render(&timeline))
        .with_context(|| format!("write {}", out.display()))?;
    println!("devenv: lock timeline ({}) written to {}", timeline.summary(), out.display());
    Ok(())
}

async fn up(env_file: Option<PathBuf>, members: usize, seconds: Option<u64>) -> anyhow::Result<()> {
    let dir = devenv::run_dir("up")?;
    let result = async {
        let control_plane =
            ControlPlane::start(&dir.join("control-plane")).await.context("start the control plane")?;
        let lock_etcd = if members <= 1 {
            let single = etcd::start_single(&dir, "lock-etcd").context("start the lock etcd")?;
            EtcdCluster { members: vec![single] }
        } else {
            EtcdCluster::start(&dir, "lock-etcd", members).context("start the lock etcd cluster")?
        };
        let exports = format!(
            "export KUBECONFIG={}\nexport LOCKGUARD_ETCD_ENDPOINTS={}\n",
            control_plane.kubeconfig().display(),
            lock_etcd.endpoints()
        );
        if let Some(path) = &env_file {
            std::fs::write(path, &exports).with_context(|| format!("write {}", path.display()))?;
        }
        println!("devenv: up. API server {}; run dir {}", control_plane.url(), dir.display());
        print!("{exports}");
        println!("devenv: Ctrl-C stops everything");
        wait_for_stop(seconds).await;
        println!("devenv: stopping");
        drop(lock_etcd);
        drop(control_plane);
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn node_up(env_file: Option<PathBuf>, seconds: Option<u64>) -> anyhow::Result<()> {
    let dir = devenv::run_dir("node")?;
    let result = async {
        let started = std::time::Instant::now();
        let mut node = devenv::node::Node::start(&dir).await.context("start the node cluster")?;
        let exports = format!("export KUBECONFIG={}\n", node.control_plane().kubeconfig().display());
        if let Some(path) = &env_file {
            std::fs::write(path, &exports).with_context(|| format!("write {}", path.display()))?;
        }
        println!(
            "devenv: node cluster up in {:.1}s. API server {}; run dir {}",
            started.elapsed().as_secs_f64(),
            node.control_plane().url(),
            dir.display()
        );
        print!("{exports}");
        println!("devenv: Ctrl-C stops everything");
        wait_for_stop(seconds).await;
        println!("devenv: stopping");
        let teardown = node.stop();
        for item in &teardown.removed {
            println!("devenv: teardown: {item}");
        }
        for item in &teardown.sysctls_changed {
            println!("devenv: teardown: sysctl {item}");
        }
        println!("devenv: teardown took {:.1}s", teardown.seconds);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let left = devenv::node::leftovers();
    for item in &left {
        println!("devenv: LEFT: {item}");
    }
    if left.is_empty() {
        println!("devenv: teardown clean: no process, cgroup, bridge, nft table or mount left");
    }
    result?;
    anyhow::ensure!(left.is_empty(), "{} node leftovers", left.len());
    Ok(())
}

async fn wait_for_stop(seconds: Option<u64>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let timer = async {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
        _ = timer => {}
    }
}

/// Prints what was found, one per line; fails when anything was.
fn report(found: impl IntoIterator<Item = String>, clean: &str, what: &str) -> anyhow::Result<()> {
    let found: Vec<String> = found.into_iter().collect();
    for item in &found {
        println!("{item}");
    }
    if found.is_empty() {
        println!("devenv: {clean}");
        Ok(())
    } else {
        anyhow::bail!("{} {what}", found.len())
    }
}
