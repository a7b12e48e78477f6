//! A one-node Kubernetes cluster from real parts, started and torn down by the harness.
//!
//! The control plane of [`ControlPlane::start_for_node`] (kube-apiserver + etcd) listens on
//! the node's bridge address; kube-scheduler, kube-controller-manager and kube-proxy
//! (nftables mode) run on the host; containerd (Debian's, with runc and the CNI bridge
//! plugin) and the kubelet run in the node's own mount namespace ([`jail`]). The images
//! (pause, CoreDNS, busybox) are built here from local binaries and imported into
//! containerd: nothing is pulled. CoreDNS runs as a pod behind the `kube-dns` Service.
//!
//! Network: pods live on [`host::BRIDGE`] (`10.217.0.0/24`); their only routes are that
//! subnet and the service range via the bridge address. The host routes the service range
//! onto the bridge too. Forwarding is enabled on the bridge alone, and an nft guard drops
//! whatever would be forwarded between the bridge and any other interface.
//!
//! One node cluster per machine at a time (the bridge, kube-proxy's tables and the kubelet's
//! ports are the machine's). Teardown ([`Node::stop`], also on drop) kills the pods, stops
//! the components, and removes the cgroups, nft tables and the bridge; it returns what it
//! had to clean and [`leftovers`] checks that nothing remains. `devenv sweep` undoes what a
//! killed harness left (its pods, shims, cgroups, the network).

pub mod host;
pub mod jail;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;

use crate::control_plane::{ControlPlane, SERVICE_CIDR};
use crate::process::{Process, free_port, wait_until};
use crate::{Error, Result, binary};
use host::{BRIDGE, BRIDGE_IP, POD_SUBNET};
use jail::Jail;

pub const NODE_NAME: &str = "lockguard-node";
/// The `kube-dns` Service's ClusterIP (the kubelet's `clusterDNS`).
pub const CLUSTER_DNS: &str = "10.0.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The sandbox image, built from the k8s module's pause.c (`make node-tools`).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";
/// Debian's busybox-static with a passwd file: the image test pods run.
pub const BUSYBOX_IMAGE: &str = "lockguard.dev/busybox:1.35";
pub const COREDNS_IMAGE: &str = "lockguard.dev/coredns:v1.15.0";

/// Marker file of a node's run directory (for `devenv sweep`).
const MARKER: &str = "node-state";
const SYSCTLS_BEFORE: &str = "sysctls-before";

/// Binaries from Debian packages the node needs, and the package that has each.
const DEBIAN: [(&str, &str); 7] = [
    ("/usr/bin/containerd", "containerd"),
    ("/usr/bin/ctr", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/sbin/nft", "nftables"),
    ("/usr/bin/busybox", "busybox-static"),
    ("/usr/bin/unshare", "util-linux"),
];

#[derive(Debug)]
pub struct Node {
    dir: PathBuf,
    control_plane: Option<ControlPlane>,
    jail: Option<Jail>,
    /// Host-side components, stopped in reverse order.
    components: Vec<(&'static str, Process)>,
    containerd: Option<Process>,
    kubelet: Option<Process>,
    cgroup_root: String,
    stopped: bool,
}

/// What a teardown had to do and what it found changed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub removed: Vec<String>,
    pub sysctls_changed: Vec<String>,
    pub seconds: f64,
}

impl Node {
    /// Starts everything under `dir` and waits until the node is Ready and CoreDNS serves.
    pub async fn start(dir: &Path) -> Result<Self> {
        let started = Instant::now();
        preflight()?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(MARKER), "")?;
        std::fs::write(dir.join(SYSCTLS_BEFORE), host::record_sysctls())?;
        let mut node = Self {
            dir: dir.to_path_buf(),
            control_plane: None,
            jail: None,
            components: Vec::new(),
            containerd: None,
            kubelet: None,
            cgroup_root: host::cgroup_root_name(std::process::id()),
            stopped: false,
        };
        // On an error below, dropping `node` tears down what was started.
        host::create_network(SERVICE_CIDR)?;
        host::create_cgroup_root(&node.cgroup_root)?;
        let (control_plane, pki) =
            ControlPlane::start_for_node(&dir.join("control-plane"), BRIDGE_IP, NODE_NAME).await?;
        let step = |what: &str| eprintln!("devenv node: {what} ({:.1}s)", started.elapsed().as_secs_f64());
        step(&format!("API server ready on {}", control_plane.url()));
        let ca = control_plane.pki().ca_cert.clone();
        let kubelet_kubeconfig = control_plane.write_kubeconfig("kubelet", &pki.kubelet_client)?;
        let scheduler_kubeconfig = control_plane.write_kubeconfig("scheduler", &pki.scheduler)?;
        let kcm_kubeconfig = control_plane.write_kubeconfig("controller-manager", &pki.controller_manager)?;
        let proxy_kubeconfig = control_plane.write_kubeconfig("kube-proxy", &pki.kube_proxy)?;
        let sa_key = control_plane.pki().sa_signing_key.clone();
        node.control_plane = Some(control_plane);

        node.jail = Some(Jail::create(dir)?);
        node.start_containerd()?;
        step("containerd ready");
        node.import_images()?;
        step("images imported");

        let path = |p: &Path| p.display().to_string();
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let scheduler = Process::spawn(
            &binary("kube-scheduler")?,
            &[
                format!("--kubeconfig={}", path(&scheduler_kubeconfig)),
                format!("--authentication-kubeconfig={}", path(&scheduler_kubeconfig)),
                format!("--authorization-kubeconfig={}", path(&scheduler_kubeconfig)),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
            &logs.join("kube-scheduler.log"),
        )?;
        node.components.push(("kube-scheduler", scheduler));
        let kcm = Process::spawn(
            &binary("kube-controller-manager")?,
            &[
                format!("--kubeconfig={}", path(&kcm_kubeconfig)),
                format!("--authentication-kubeconfig={}", path(&kcm_kubeconfig)),
                format!("--authorization-kubeconfig={}", path(&kcm_kubeconfig)),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!("--service-account-private-key-file={}", path(&sa_key)),
                format!("--root-ca-file={}", path(&ca)),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--cluster-name={NODE_NAME}"),
                "--v=1".into(),
            ],
            &logs.join("kube-controller-manager.log"),
        )?;
        node.components.push(("kube-controller-manager", kcm));
        let proxy_config = dir.join("kube-proxy.yaml");
        std::fs::write(&proxy_config, kube_proxy_config(&proxy_kubeconfig, free_port()?, free_port()?))?;
        let proxy = Process::spawn(
            &binary("kube-proxy")?,
            &[format!("--config={}", path(&proxy_config)), "--v=1".into()],
            &logs.join("kube-proxy.log"),
        )?;
        node.components.push(("kube-proxy", proxy));
        node.start_kubelet(&kubelet_kubeconfig, &pki.kubelet_serving, &ca)?;
        node.wait_node_ready(Duration::from_secs(120)).await?;
        step("node Ready");
        node.start_coredns(Duration::from_secs(120))?;
        step("CoreDNS ready");
        Ok(node)
    }

    pub fn control_plane(&self) -> &ControlPlane {
        self.control_plane.as_ref().expect("control plane started")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Result<Command> {
        self.control_plane().kubectl()
    }

    /// Runs kubectl with `args` (stdin from `input` if given); its stdout, or an error with
    /// its stderr.
    pub fn kubectl_run(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        kubectl_output(self.kubectl()?, args, input)
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    fn in_jail(&self, program: &Path, args: &[String], log: &Path) -> Result<Process> {
        let jail = self.jail.as_ref().expect("jail created");
        let mut all = jail.prefix();
        all.push(program.display().to_string());
        all.extend(args.iter().cloned());
        Ok(Process::spawn(&Jail::nsenter(), &all, log)?)
    }

    fn start_containerd(&mut self) -> Result<()> {
        let base = self.dir.join("containerd");
        let cni = self.dir.join("cni");
        std::fs::create_dir_all(base.join("runc"))?;
        std::fs::create_dir_all(cni.join("net.d"))?;
        std::fs::create_dir_all(cni.join("ipam"))?;
        std::fs::write(cni.join("net.d/10-lockguard-node.conflist"), cni_config(&cni.join("ipam")))?;
        let config = base.join("config.toml");
        std::fs::write(&config, containerd_config(&base, &cni.join("net.d"), &self.cgroup_root))?;
        let log = self.dir.join("logs");
        std::fs::create_dir_all(&log)?;
        let process = self.in_jail(
            Path::new("/usr/bin/containerd"),
            &["--config".into(), config.display().to_string()],
            &log.join("containerd.log"),
        )?;
        self.containerd = Some(process);
        let socket = self.containerd_socket();
        let ready = wait_until(Duration::from_secs(30), || socket.exists() && self.ctr(&["version"]).is_ok());
        if !ready {
            let log = self.containerd.as_ref().map(|p| p.log_tail(20)).unwrap_or_default();
            return Err(Error::NotReady { what: "containerd".into(), log });
        }
        Ok(())
    }

    /// `ctr` against the node's containerd, in the CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        let socket = self.containerd_socket().display().to_string();
        let mut all = vec!["/usr/bin/ctr", "--address", &socket, "--namespace", "k8s.io"];
        all.extend(args);
        host::run(&all)
    }

    /// Builds the pause, busybox and CoreDNS images from local binaries (one-layer OCI
    /// archives, `hack/node/oci-image.sh`) and imports them into containerd.
    fn import_images(&self) -> Result<()> {
        let images = self.dir.join("images");
        let pause_root = images.join("pause-rootfs");
        std::fs::create_dir_all(&pause_root)?;
        std::fs::copy(binary("pause")?, pause_root.join("pause"))?;
        let coredns_root = images.join("coredns-rootfs");
        std::fs::create_dir_all(&coredns_root)?;
        std::fs::copy(binary("coredns")?, coredns_root.join("coredns"))?;
        let busybox_root = images.join("busybox-rootfs");
        busybox_rootfs(&busybox_root)?;
        for (name, root, entrypoint, user) in [
            (PAUSE_IMAGE, &pause_root, r#"["/pause"]"#, "65535"),
            (COREDNS_IMAGE, &coredns_root, r#"["/coredns"]"#, ""),
            (BUSYBOX_IMAGE, &busybox_root, r#"["/bin/sh"]"#, ""),
        ] {
            self.import_image(name, root, entrypoint, user)?;
        }
        Ok(())
    }

    /// Imports the directory `rootfs` as image `name` (one layer; `entrypoint` a JSON array,
    /// `user` empty for root), e.g. an image that a manifest of `deploy/` names.
    pub fn import_image(&self, name: &str, rootfs: &Path, entrypoint: &str, user: &str) -> Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/oci-image.sh");
        let images = self.dir.join("images");
        std::fs::create_dir_all(&images)?;
        let file = name.rsplit('/').next().unwrap_or(name).replace(':', "-");
        let archive = images.join(format!("{file}.tar"));
        host::run(&[
            &script.display().to_string(),
            name,
            &rootfs.display().to_string(),
            &archive.display().to_string(),
            entrypoint,
            user,
        ])?;
        self.ctr(&["images", "import", &archive.display().to_string()])?;
        Ok(())
    }

    /// Imports an OCI archive (e.g. `podman save --format oci-archive`) built elsewhere.
    pub fn import_archive(&self, archive: &Path) -> Result<()> {
        self.ctr(&["images", "import", &archive.display().to_string()])?;
        Ok(())
    }

    fn start_kubelet(
        &mut self,
        kubeconfig: &Path,
        serving: &crate::certs::KeyPairFiles,
        ca: &Path,
    ) -> Result<()> {
        let base = self.dir.join("kubelet");
        std::fs::create_dir_all(base.join("root"))?;
        std::fs::create_dir_all(base.join("pod-logs"))?;
        let config = base.join("config.yaml");
        std::fs::write(
            &config,
            kubelet_config(
                &base,
                &self.containerd_socket(),
                &self.cgroup_root,
                serving,
                ca,
                free_port()?,
                free_port()?,
            ),
        )?;
        let args = vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", base.join("root").display()),
            format!("--node-ip={BRIDGE_IP}"),
            format!("--hostname-override={NODE_NAME}"),
            "--v=1".into(),
        ];
        let log = self.dir.join("logs/kubelet.log");
        self.kubelet = Some(self.in_jail(&binary("kubelet")?, &args, &log)?);
        Ok(())
    }

    async fn wait_node_ready(&mut self, timeout: Duration) -> Result<()> {
        let nodes: Api<NodeObject> = Api::all(self.control_plane().client().await?);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(kubelet) = self.kubelet.as_mut()
                && let Some(status) = kubelet.exited()
            {
                return Err(Error::NotReady {
                    what: format!("kubelet exited ({status})"),
                    log: kubelet.log_tail(30),
                });
            }
            if let Ok(node) = nodes.get(NODE_NAME).await {
                let ready = node
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if ready {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let log = self.kubelet.as_ref().map(|p| p.log_tail(30)).unwrap_or_default();
                return Err(Error::NotReady { what: "node Ready".into(), log });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn start_coredns(&self, timeout: Duration) -> Result<()> {
        let manifest = include_str!("../../../node/coredns.yaml")
            .replace("image: IMAGE", &format!("image: {COREDNS_IMAGE}"))
            .replace("clusterIP: DNS_IP", &format!("clusterIP: {CLUSTER_DNS}"));
        self.kubectl_run(&["apply", "-f", "-"], Some(&manifest))?;
        let seconds = format!("--timeout={}s", timeout.as_secs());
        self.kubectl_run(&["-n", "kube-system", "rollout", "status", "deployment/coredns", &seconds], None)?;
        Ok(())
    }

    /// `count` PersistentVolumes (hostPath directories in the run directory, no storage class,
    /// `capacity` each, ReadWriteOnce) for volumeClaimTemplates to bind to.
    pub fn create_host_path_volumes(&self, prefix: &str, count: usize, capacity: &str) -> Result<()> {
        let mut manifest = String::new();
        for i in 0..count {
            let dir = self.dir.join("volumes").join(format!("{prefix}-{i}"));
            std::fs::create_dir_all(&dir)?;
            // A hostPath volume gets no fsGroup: let non-root pods (65532) write it.
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
            manifest.push_str(&format!(
                "---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {prefix}-{i}, labels: {{lockguard.dev/node-volume: {prefix}}}}}
spec:
  capacity: {{storage: {capacity}}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: \"\"
  hostPath: {{path: {}, type: DirectoryOrCreate}}
",
                dir.display()
            ));
        }
        self.kubectl_run(&["apply", "-f", "-"], Some(&manifest))?;
        Ok(())
    }

    /// Kills the pods, stops every component, removes the cgroups, nft tables and the bridge,
    /// restores sysctls that changed; then the control plane.
    pub fn stop(&mut self) -> Teardown {
        let started = Instant::now();
        let mut teardown = Teardown::default();
        if self.stopped {
            return teardown;
        }
        self.stopped = true;
        for (_, process) in self.components.iter_mut().rev() {
            process.terminate(Duration::from_secs(5));
        }
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.terminate(Duration::from_secs(5));
        }
        // The containers (their processes are all in the node's cgroup tree), then the shims
        // (their command lines name the containerd socket in the run directory).
        teardown.removed.extend(kill_node_processes(&self.dir, &self.cgroup_root));
        if let Some(mut containerd) = self.containerd.take() {
            containerd.terminate(Duration::from_secs(5));
        }
        if let Some(mut jail) = self.jail.take() {
            let ns = jail.namespace().to_string();
            jail.stop();
            // The mount namespace (and with it every mount and the pods' network namespaces)
            // is gone with its last process.
            for pid in host::processes_in_mount_ns(&ns) {
                // SAFETY: kill(2) of a process in the node's own mount namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                teardown.removed.push(format!("process {pid} in the node's mount namespace"));
            }
            wait_until(Duration::from_secs(10), || host::processes_in_mount_ns(&ns).is_empty());
        }
        for left in host::remove_cgroup_root(&self.cgroup_root) {
            teardown.removed.push(format!("cgroup {} NOT removed", left.display()));
        }
        teardown.removed.extend(host::remove_network());
        jail::remove_created_dirs(&self.dir);
        if let Some(control_plane) = self.control_plane.take() {
            drop(control_plane);
        }
        if let Ok(record) = std::fs::read_to_string(self.dir.join(SYSCTLS_BEFORE)) {
            teardown.sysctls_changed = host::restore_sysctls(&record);
        }
        let _ = std::fs::remove_file(self.dir.join(MARKER));
        teardown.seconds = started.elapsed().as_secs_f64();
        teardown
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGKILLs the node's containers (its cgroup tree) and the processes whose command line
/// names its run directory (containerd's shims); returns what it killed.
fn kill_node_processes(dir: &Path, cgroup_root: &str) -> Vec<String> {
    let mut killed = Vec::new();
    for _ in 0..3 {
        let pids = host::cgroup_pids(cgroup_root);
        for pid in &pids {
            // SAFETY: kill(2) of a process in the node's cgroup tree.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        if !pids.is_empty() {
            killed.push(format!("{} container processes", pids.len()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (pid, command) in host::processes_mentioning(&dir.display().to_string()) {
        if command.contains("containerd-shim") {
            // SAFETY: kill(2) of a shim of the node's containerd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed.push(format!("shim {pid}"));
        }
    }
    killed
}

/// Fails early, with the fix, when something the node needs is missing or a node is up.
fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotReady { what: "the node (needs root)".into(), log: String::new() });
    }
    for (path, package) in DEBIAN {
        if !Path::new(path).exists() {
            return Err(Error::NotReady {
                what: format!("the node: {path} is missing"),
                log: format!("apt-get install {package} (or: make node-deps)"),
            });
        }
    }
    for name in ["kubelet", "kube-scheduler", "kube-controller-manager", "kube-proxy", "coredns", "pause"] {
        binary(name).map_err(|_| Error::NotReady {
            what: format!("the node: bin/{name} is missing"),
            log: "make node-tools".into(),
        })?;
    }
    if host::bridge_exists()
        || host::nft_tables().iter().any(|(_, t)| t == "kube-proxy" || t == host::GUARD_TABLE)
    {
        return Err(Error::NotReady {
            what: "the node: another node cluster is up, or one was left (bridge or nft tables exist)".into(),
            log: "stop it, or run `devenv sweep`".into(),
        });
    }
    Ok(())
}

/// Undoes what the node harness of run directory `dir` (pid `pid`, no longer running) left:
/// its pods and shims, its cgroups, the network, the created directories, the sysctls.
pub fn cleanup_dead(dir: &Path, pid: u32) -> Vec<String> {
    if !dir.join(MARKER).exists() {
        return Vec::new();
    }
    let cgroup_root = host::cgroup_root_name(pid);
    let mut done = kill_node_processes(dir, &cgroup_root);
    for (pid, _) in host::processes_mentioning(&dir.display().to_string()) {
        // SAFETY: kill(2) of a process started for the dead harness's node.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        done.push(format!("process {pid}"));
    }
    for left in host::remove_cgroup_root(&cgroup_root) {
        done.push(format!("cgroup {} NOT removed", left.display()));
    }
    // The bridge and the tables have fixed names: leave them to a node harness still running.
    if !live_node_harness() {
        done.extend(host::remove_network());
    }
    jail::remove_created_dirs(dir);
    if let Ok(record) = std::fs::read_to_string(dir.join(SYSCTLS_BEFORE)) {
        done.extend(host::restore_sysctls(&record));
    }
    done
}

/// Whether a node harness that is still running has a run directory.
fn live_node_harness() -> bool {
    let Ok(entries) = std::fs::read_dir(crate::runs_root()) else { return false };
    entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
        entry.path().join(MARKER).exists()
            // SAFETY: signal 0 only checks that the process exists.
            && pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) == 0 })
    })
}

/// What a node leaves on the host, if anything: processes naming the runs root, node cgroups,
/// the bridge, the nft tables, mounts under the runs root, CRI network namespaces, paths the
/// kubelet and containerd use by default.
pub fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let root = crate::runs_root();
    // Processes of node run directories (`<root>/<pid>-node-<n>`) only: other harnesses (the
    // tests' control planes) may be running.
    for (pid, command) in host::processes_mentioning(&root.display().to_string()) {
        let node_dir = command
            .split(&format!("{}/", root.display()))
            .skip(1)
            .any(|rest| rest.split('/').next().is_some_and(|dir| dir.split('-').nth(1) == Some("node")));
        if node_dir {
            found.push(format!("process {pid}: {command}"));
        }
    }
    for (name, _) in host::node_cgroup_roots() {
        found.push(format!("cgroup {name}"));
    }
    if host::bridge_exists() {
        found.push(format!("bridge {BRIDGE}"));
    }
    for (family, table) in host::nft_tables() {
        if table == "kube-proxy" || table == host::GUARD_TABLE {
            found.push(format!("nft table {family} {table}"));
        }
    }
    for mount in host::mounts_under(&root) {
        found.push(format!("mount {mount}"));
    }
    // Paths other tools use too are checked for what containerd's CRI would put there: its
    // network namespaces are `/run/netns/cni-…` (podman's are `netns-…`).
    for path in ["/run/containerd", "/var/log/pods", "/var/log/containers", "/var/lib/kubelet"] {
        if Path::new(path).exists() {
            found.push(format!("path {path}"));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("cni-")) {
            found.push(format!("network namespace {}", entry.path().display()));
        }
    }
    found
}

fn kubectl_output(mut command: Command, args: &[&str], input: Option<&str>) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = command.spawn()?;
    if let Some(text) = input
        && let Some(mut stdin) = child.stdin.take()
    {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::NotReady {
        what: format!("`kubectl {}`", args.join(" ")),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// busybox-static with a link per applet, `/etc/passwd` and `/etc/group` (root, nobody and
/// 65532 for non-root pods), `/tmp`.
fn busybox_rootfs(root: &Path) -> Result<()> {
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("etc"))?;
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox"))?;
    let applets = host::run(&["/usr/bin/busybox", "--list"])?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty() && *a != "busybox") {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nnonroot:x:65532:65532:nonroot:/tmp:/bin/false\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")?;
    Ok(())
}

fn cni_config(ipam_dir: &Path) -> String {
    let gateway = BRIDGE_IP;
    let start = POD_SUBNET.replace(".0/24", ".10");
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "lockguard-node",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{BRIDGE}",
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{ipam}",
        "ranges": [[{{"subnet": "{POD_SUBNET}", "rangeStart": "{start}", "gateway": "{gateway}"}}]],
        "routes": [{{"dst": "{SERVICE_CIDR}", "gw": "{gateway}"}}]
      }}
    }}
  ]
}}
"#,
        ipam = ipam_dir.display()
    )
}

fn containerd_config(base: &Path, cni_conf_dir: &Path, _cgroup_root: &str) -> String {
    let b = base.display();
    format!(
        r#"version = 2
root = "{b}/root"
state = "{b}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{b}/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{b}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: runc may not lower its oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{b}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
"#,
        cni = cni_conf_dir.display()
    )
}

fn kubelet_config(
    base: &Path,
    socket: &Path,
    cgroup_root: &str,
    serving: &crate::certs::KeyPairFiles,
    ca: &Path,
    port: u16,
    healthz_port: u16,
) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {BRIDGE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{socket}
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
podCIDR: {POD_SUBNET}
podLogsDir: {logs}
resolvConf: ""
clusterDNS: [{CLUSTER_DNS}]
clusterDomain: {CLUSTER_DOMAIN}
hairpinMode: none
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: "1%", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
maxPods: 50
"#,
        cert = serving.cert.display(),
        key = serving.key.display(),
        ca = ca.display(),
        socket = socket.display(),
        logs = base.join("pod-logs").display(),
    )
}

fn kube_proxy_config(kubeconfig: &Path, healthz_port: u16, metrics_port: u16) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: nftables
hostnameOverride: {NODE_NAME}
bindAddress: {BRIDGE_IP}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
clusterCIDR: {POD_SUBNET}
nodePortAddresses: ["{BRIDGE_IP}/32"]
oomScoreAdj: 0
# Leave the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = kubeconfig.display()
    )
}
