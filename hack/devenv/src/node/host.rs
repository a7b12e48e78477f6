//! What the node changes on the host, and undoing it: the bridge, the nft tables, the cgroup
//! root, the sysctls it might touch, processes left behind.
//!
//! Everything here is named after the node's conventions (bridge [`BRIDGE`], nft tables
//! `inet lockguard-node` and kube-proxy's `ip`/`ip6 kube-proxy`, cgroups
//! `lockguard-node-<harness pid>` in every hierarchy), so that `devenv sweep` can undo what a
//! killed harness left.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// The node's bridge; pods are plugged into it by the CNI bridge plugin.
pub const BRIDGE: &str = "lgnode0";
/// The bridge's address: the node's InternalIP, the API server's address, the pods' gateway
/// to the service range.
pub const BRIDGE_IP: &str = "10.217.0.1";
pub const POD_SUBNET: &str = "10.217.0.0/24";
/// The nft table of the node's own forwarding guard.
pub const GUARD_TABLE: &str = "lockguard-node";
/// The tables kube-proxy (nftables mode) creates.
pub const KUBE_PROXY_TABLES: [(&str, &str); 2] = [("ip", "kube-proxy"), ("ip6", "kube-proxy")];

/// Sysctls that the kubelet, kube-proxy or the CNI plugins set on a usual node. Their values
/// are recorded before the start, checked after the teardown and restored if they changed.
/// (The kubelet's own six are kept from the host by the jail: see `jail.rs`.)
pub const WATCHED_SYSCTLS: [&str; 14] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
];

pub fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok().map(|v| v.trim().to_string())
}

/// `name=value` lines of the watched sysctls that exist.
pub fn record_sysctls() -> String {
    WATCHED_SYSCTLS
        .iter()
        .filter_map(|name| read_sysctl(name).map(|value| format!("{name}={value}\n")))
        .collect()
}

/// Compares the sysctls with a record, restores those that changed; returns what changed.
pub fn restore_sysctls(record: &str) -> Vec<String> {
    let mut changed = Vec::new();
    for line in record.lines() {
        let Some((name, before)) = line.split_once('=') else { continue };
        let now = read_sysctl(name).unwrap_or_default();
        if now != before {
            let restored = std::fs::write(Path::new("/proc/sys").join(name), before).is_ok();
            changed.push(format!(
                "{name}: {before} -> {now} ({})",
                if restored { "restored" } else { "NOT restored" }
            ));
        }
    }
    changed
}

/// Runs a command; its stderr in the error.
pub fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Error::NotReady { what: format!("`{}`", args.join(" ")), log: e.to_string() })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::NotReady {
        what: format!("`{}`", args.join(" ")),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

pub fn bridge_exists() -> bool {
    Path::new("/sys/class/net").join(BRIDGE).exists()
}

/// The bridge with its address, the service range routed onto it (and nowhere else), and
/// forwarding enabled on the bridge only, behind a guard that drops whatever would be
/// forwarded between the bridge and any other interface.
pub fn create_network(service_cidr: &str) -> Result<()> {
    run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    run(&["ip", "addr", "add", &format!("{BRIDGE_IP}/24"), "dev", BRIDGE])?;
    run(&["ip", "link", "set", BRIDGE, "up"])?;
    run(&["ip", "route", "add", service_cidr, "dev", BRIDGE])?;
    let guard = format!(
        "table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname \"{BRIDGE}\" oifname != \"{BRIDGE}\" counter drop
    oifname \"{BRIDGE}\" iifname != \"{BRIDGE}\" counter drop
  }}
}}
"
    );
    let file = std::env::temp_dir().join(format!("lockguard-node-guard-{}.nft", std::process::id()));
    std::fs::write(&file, guard)?;
    let loaded = run(&["nft", "-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    loaded?;
    // A ClusterIP's packets arrive on the bridge and leave on it again towards the endpoint
    // (DNAT by kube-proxy): that is forwarding, enabled for this interface only (the sysctl
    // goes away with the bridge); `ip_forward` and every other interface stay as they are.
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{BRIDGE}/forwarding"), "1")?;
    Ok(())
}

/// Deletes the bridge (its route and per-interface sysctls go with it) and the nft tables of
/// the guard and of kube-proxy; returns what was there.
pub fn remove_network() -> Vec<String> {
    let mut removed = Vec::new();
    for (family, table) in nft_tables() {
        let ours = table == GUARD_TABLE || KUBE_PROXY_TABLES.contains(&(family.as_str(), table.as_str()));
        if ours && run(&["nft", "delete", "table", &family, &table]).is_ok() {
            removed.push(format!("nft table {family} {table}"));
        }
    }
    if bridge_exists() && run(&["ip", "link", "del", BRIDGE]).is_ok() {
        removed.push(format!("bridge {BRIDGE}"));
    }
    removed
}

/// `(family, name)` of every nft table.
pub fn nft_tables() -> Vec<(String, String)> {
    let Ok(out) = run(&["nft", "list", "tables"]) else { return Vec::new() };
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            if words.next() != Some("table") {
                return None;
            }
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// The mount points of the cgroup hierarchies (v1 controllers, named, and v2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let target = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .collect()
}

pub fn cgroup_root_name(harness_pid: u32) -> String {
    format!("lockguard-node-{harness_pid}")
}

/// Creates the kubelet's cgroup root in every hierarchy (the kubelet requires it to exist);
/// cpuset needs its cpus and mems before a task can join.
pub fn create_cgroup_root(name: &str) -> Result<()> {
    for mount in cgroup_mounts() {
        let dir = mount.join(name);
        std::fs::create_dir_all(&dir)?;
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(mount.join(file))
                && dir.join(file).exists()
            {
                std::fs::write(dir.join(file), value.trim())?;
            }
        }
    }
    Ok(())
}

/// Every pid in the cgroup trees named `name` (all hierarchies).
pub fn cgroup_pids(name: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for mount in cgroup_mounts() {
        let mut stack = vec![mount.join(name)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()));
            }
            stack.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in the trees (again, until they are empty), then removes the
/// directories deepest first; returns the directories still there.
pub fn remove_cgroup_root(name: &str) -> Vec<PathBuf> {
    for _ in 0..50 {
        let pids = cgroup_pids(name);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2); these are the node's containers (its own cgroup tree).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut left = Vec::new();
    for mount in cgroup_mounts() {
        let root = mount.join(name);
        if !root.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(entries.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()));
            }
            dirs.push(dir);
        }
        // Children come after their parents in `dirs`: remove in reverse.
        for dir in dirs.iter().rev() {
            for _ in 0..20 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        if root.exists() {
            left.push(root);
        }
    }
    left
}

/// Names of cgroup roots of node harnesses, in any hierarchy: `(name, harness pid)`.
pub fn node_cgroup_roots() -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for mount in cgroup_mounts() {
        let Ok(entries) = std::fs::read_dir(&mount) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("lockguard-node-").and_then(|p| p.parse().ok())
                && !found.iter().any(|(n, _)| n == &name)
            {
                found.push((name, pid));
            }
        }
    }
    found
}

/// Processes whose command line contains `needle`: `(pid, command line)`.
pub fn processes_mentioning(needle: &str) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let own = std::process::id() as i32;
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let command = String::from_utf8_lossy(&raw).replace('\0', " ");
            (pid != own && command.contains(needle)).then(|| (pid, command.trim().to_string()))
        })
        .collect()
}

/// Processes in mount namespace `ns` (as `/proc/PID/ns/mnt` reads, `mnt:[N]`).
pub fn processes_in_mount_ns(ns: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let link = std::fs::read_link(e.path().join("ns/mnt")).ok()?;
            (link.to_string_lossy() == ns).then_some(pid)
        })
        .collect()
}

/// Mount points (in this mount namespace) under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|t| t.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}
