//! kube-controller-manager beside a [`ControlPlane`], with only the controllers a test
//! needs: without them a ResourceQuota's usage is never counted, the built-in `edit`, `admin`
//! and `view` roles stay empty (aggregation), and a deleted namespace never goes.

use std::time::Duration;

use crate::control_plane::ControlPlane;
use crate::process::Process;
use crate::{Error, Result, binary};

/// The controllers tests of namespaces, quotas and RBAC need.
pub const TENANCY: &[&str] = &[
    "namespace-controller",
    "resourcequota-controller",
    "clusterrole-aggregation-controller",
    "garbage-collector-controller",
];

#[derive(Debug)]
pub struct ControllerManager {
    process: Process,
}

impl ControllerManager {
    /// Starts kube-controller-manager (bin/, built by `make tools`)
    /// against `control_plane` with the admin kubeconfig and only `controllers`. It serves
    /// nothing; callers wait for the effect they need.
    pub fn start(control_plane: &ControlPlane, controllers: &[&str]) -> Result<Self> {
        let kubeconfig = control_plane.kubeconfig().display().to_string();
        let args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
            format!("--controllers={}", controllers.join(",")),
            "--secure-port=0".into(),
            "--leader-elect=false".into(),
            "--use-service-account-credentials=false".into(),
            // Quotas and garbage collection follow resources found by discovery: the
            // CRDs installed after start-up are picked up this often.
            "--resource-quota-sync-period=10s".into(),
            "--v=1".into(),
        ];
        let log = control_plane.dir().join("kube-controller-manager.log");
        let mut process = Process::spawn(&binary("kube-controller-manager")?, &args, &log)?;
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = process.exited() {
            return Err(Error::NotReady {
                what: format!("kube-controller-manager exited ({status})"),
                log: process.log_tail(30),
            });
        }
        Ok(Self { process })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
