//! The node's own mount namespace (the "jail") that containerd, its shims and the kubelet
//! run in.
//!
//! Everything they mount stays in it: the kubelet's shared bind mount of its root directory,
//! volume tmpfs, container root filesystems, the network namespaces that CNI pins under
//! `/run/netns`, and the paths they use whatever their configuration says (`/run/containerd`,
//! `/run/netns`, `/var/log/containers`, `/var/lib/cni`, the kubelet's device-plugin socket
//! in `/var/lib/kubelet/device-plugins`) are tmpfs of the jail. When its last
//! process exits the kernel drops all of it: the host's mount table never changes.
//!
//! The kubelet sets six kernel tunables on start (`vm.overcommit_memory=1`, `kernel.panic=10`,
//! `kernel.panic_on_oops=1`, …) and refuses to start when they differ and it may not change
//! them. In the jail each of them is a bind mount of a plain file that already holds the
//! value the kubelet wants, so it finds them set and the host's kernel keeps its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Process, wait_until};
use crate::{Error, Result};

/// The kubelet's kernel tunables and the values it wants (`setupKernelTunables`).
const KUBELET_TUNABLES: [(&str, &str); 6] = [
    ("vm/overcommit_memory", "1"),
    ("vm/panic_on_oom", "0"),
    ("kernel/panic", "10"),
    ("kernel/panic_on_oops", "1"),
    ("kernel/keys/root_maxkeys", "1000000"),
    ("kernel/keys/root_maxbytes", "25000000"),
];

/// Directories that get a tmpfs of their own in the jail.
const PRIVATE_DIRS: [&str; 4] = ["/run", "/var/log", "/var/lib/cni", "/var/lib/kubelet"];

/// File in the run directory listing the directories the harness created on the host as
/// empty mount points for the jail; they are removed at the end.
pub const CREATED_DIRS: &str = "created-dirs";

#[derive(Debug)]
pub struct Jail {
    holder: Process,
    ns: String,
}

impl Jail {
    pub fn create(dir: &Path) -> Result<Self> {
        let files = dir.join("jail");
        std::fs::create_dir_all(&files)?;
        let mut created = String::new();
        for target in PRIVATE_DIRS {
            if !Path::new(target).exists() {
                std::fs::create_dir_all(target)?;
                created.push_str(&format!("{target}\n"));
            }
        }
        std::fs::write(dir.join(CREATED_DIRS), created)?;
        let mut script = String::from("set -e\n");
        for target in PRIVATE_DIRS {
            script.push_str(&format!("mount -t tmpfs -o mode=755 lockguard-node {target}\n"));
        }
        for (name, value) in KUBELET_TUNABLES {
            let file = files.join(name.replace('/', "."));
            std::fs::write(&file, format!("{value}\n"))?;
            script.push_str(&format!("mount --bind {} /proc/sys/{name}\n", file.display()));
        }
        let ready = files.join("ready");
        script.push_str(&format!("touch {}\nexec sleep infinity\n", ready.display()));
        let holder = Process::spawn(
            Path::new("/usr/bin/unshare"),
            &[
                "--mount".into(),
                "--propagation".into(),
                "private".into(),
                "/bin/sh".into(),
                "-c".into(),
                script,
            ],
            &files.join("holder.log"),
        )?;
        let mut jail = Self { holder, ns: String::new() };
        if !wait_until(Duration::from_secs(10), || ready.exists()) {
            return Err(Error::NotReady {
                what: "the node's mount namespace".into(),
                log: jail.holder.log_tail(10),
            });
        }
        jail.ns = std::fs::read_link(format!("/proc/{}/ns/mnt", jail.holder.pid()))?.display().to_string();
        Ok(jail)
    }

    /// The command line that runs a program in the jail: append the program and its args.
    pub fn prefix(&self) -> Vec<String> {
        vec![format!("--mount=/proc/{}/ns/mnt", self.holder.pid()), "--".into()]
    }

    pub fn nsenter() -> PathBuf {
        PathBuf::from("/usr/bin/nsenter")
    }

    /// `mnt:[N]`, as `/proc/PID/ns/mnt` reads.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Kills the holder; the namespace goes once every other process in it is gone too.
    pub fn stop(&mut self) {
        self.holder.kill();
    }
}

/// Removes the mount points the harness of `dir` created, if they are still empty.
pub fn remove_created_dirs(dir: &Path) {
    if let Ok(created) = std::fs::read_to_string(dir.join(CREATED_DIRS)) {
        for target in created.lines().rev() {
            let _ = std::fs::remove_dir(target);
        }
        let _ = std::fs::remove_file(dir.join(CREATED_DIRS));
    }
}
