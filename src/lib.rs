//! lockguard: take a fenced distributed lock (etcd or a Kubernetes Lease) before mutating
//! state that other controllers mutate too.

pub mod api;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod failpoint;
pub mod health;
pub mod ledger;
pub mod metrics;
pub mod telemetry;
