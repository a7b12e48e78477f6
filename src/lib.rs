//! lockguard: take a fenced distributed lock (etcd or a Kubernetes Lease) before mutating
//! state that other controllers mutate too.

pub mod cli;
pub mod lock;
pub mod telemetry;
