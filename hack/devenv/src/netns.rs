//! A network namespace joined to this one by a veth pair, for partition tests.
//!
//! The namespace has no name: a holder process (`unshare --net sleep`) keeps it alive and
//! processes join it with `nsenter --net=/proc/PID/ns/net`. So nothing is mounted (as
//! `ip netns add` would under /run/netns), and when the holder dies with the harness the
//! kernel frees the namespace and the veth pair with it.
//!
//! Addresses: on the host side of the pair `HOST` (for the API server) and `ETCD` (for the
//! lock etcd), in the namespace `INNER`; all in one /24 that only this pair routes. Nothing
//! is routed anywhere else. A partition is a blackhole route to `ETCD` inside the namespace:
//! its processes still reach the API server, and their packets to etcd vanish.

use std::process::Command;

use crate::process::Process;
use crate::{Error, Result};

#[derive(Debug)]
pub struct Netns {
    holder: Process,
    host_if: String,
    subnet: u8,
}

impl Netns {
    /// Creates the namespace and the veth pair. Needs CAP_NET_ADMIN (root here).
    pub fn create(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let holder = Process::spawn(
            std::path::Path::new("/usr/bin/unshare"),
            &["--net".into(), "sleep".into(), "infinity".into()],
            &dir.join("netns-holder.log"),
        )?;
        // A /24 per harness process, so parallel harnesses do not collide.
        let subnet = (std::process::id() % 200) as u8 + 20;
        let id = std::process::id() % 100_000;
        let (host_if, inner_if) = (format!("lgh{id}"), format!("lgn{id}"));
        let netns = Self { holder, host_if: host_if.clone(), subnet };
        let pid = netns.holder.pid().to_string();
        // The holder must have entered its namespace before the peer is moved there.
        let own = std::fs::read_link("/proc/self/ns/net")?;
        if !crate::process::wait_until(std::time::Duration::from_secs(5), || {
            std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != own)
        }) {
            return Err(Error::NotReady { what: "network namespace".into(), log: netns.holder.log_tail(5) });
        }
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &inner_if, "netns", &pid])?;
        for addr in [netns.host(), netns.etcd()] {
            run(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &host_if])?;
        }
        run(&["ip", "link", "set", &host_if, "up"])?;
        netns.inside(&["ip", "addr", "add", &format!("{}/24", netns.inner()), "dev", &inner_if])?;
        netns.inside(&["ip", "link", "set", &inner_if, "up"])?;
        netns.inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The API server's address on the host side.
    pub fn host(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// The lock etcd's address on the host side.
    pub fn etcd(&self) -> String {
        format!("10.213.{}.2", self.subnet)
    }

    /// The namespace's own address.
    pub fn inner(&self) -> String {
        format!("10.213.{}.10", self.subnet)
    }

    /// The command line that runs a program inside the namespace: append the program.
    pub fn prefix(&self) -> Vec<String> {
        vec!["/usr/bin/nsenter".into(), format!("--net=/proc/{}/ns/net", self.holder.pid()), "--".into()]
    }

    /// Cuts the namespace off from the lock etcd (the API server stays reachable).
    pub fn cut_etcd(&self) -> Result<()> {
        self.inside(&["ip", "route", "add", "blackhole", &format!("{}/32", self.etcd())])
    }

    pub fn heal_etcd(&self) -> Result<()> {
        self.inside(&["ip", "route", "del", "blackhole", &format!("{}/32", self.etcd())])
    }

    fn inside(&self, args: &[&str]) -> Result<()> {
        let net = format!("--net=/proc/{}/ns/net", self.holder.pid());
        let mut all = vec!["nsenter", net.as_str(), "--"];
        all.extend(args);
        run(&all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; the namespace goes with its last process.
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::NotReady {
        what: format!("`{}`", args.join(" ")),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}
