//! lockguard: take a fenced distributed lock (etcd or a Kubernetes Lease) before mutating
//! state that other controllers mutate too.

pub mod api;
pub mod cli;
pub mod controller;
pub mod ledger;
pub mod lock;
pub mod telemetry;
