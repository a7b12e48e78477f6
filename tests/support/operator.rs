//! One test's operator: `lockguard run` replicas, a pool and a namespace of its own.

use std::time::Duration;

use super::{
    Replicas, apply, bound_exactly, create_claim, eventually, install, lock_etcd, namespace, pool_yaml,
    reasons, unique,
};

/// What most operator tests start from; the replicas stop when it is dropped.
pub struct Operator {
    pub replicas: Replicas,
    /// The pool's name; the test creates the pool (`apply_pool`) when its story needs it.
    pub pool: String,
    /// The namespace of the test's claims.
    pub ns: String,
}

impl Operator {
    /// `n` replicas on the shared lock etcd, a fresh namespace and a pool name, both named
    /// after `label`.
    pub async fn start(n: usize, label: &str) -> Self {
        Self::start_with(n, label, &lock_etcd(), &[]).await
    }

    /// `start` with replicas on the lock etcd at `etcd_endpoints`, with extra `lockguard run`
    /// arguments. With `n` = 0, the test adds replicas of its own making (`replicas.add_with`).
    pub async fn start_with(n: usize, label: &str, etcd_endpoints: &str, args: &[&str]) -> Self {
        let kubeconfig = install().await;
        let replicas = Replicas::start_with(n, &kubeconfig, etcd_endpoints, args);
        Self { replicas, pool: unique(label), ns: namespace(label).await }
    }

    /// The pool's YAML (see `pool_yaml`).
    pub fn pool_yaml(&self, items: &str, backend: &str) -> String {
        pool_yaml(&self.pool, items, backend)
    }

    /// Creates (or updates) the pool with `items` on `backend`.
    pub fn apply_pool(&self, items: &str, backend: &str) {
        apply(&self.pool_yaml(items, backend));
    }

    /// Creates claim `name` for `count` items of the pool.
    pub async fn claim(&self, name: &str, count: i32) {
        create_claim(&self.ns, name, &self.pool, count).await;
    }

    /// Waits until the Bound condition of every claim in `names` satisfies
    /// `wanted(status, reason)`; on timeout the test fails with `what`, the conditions then
    /// and every replica's log tail.
    pub async fn until_claims(
        &self,
        names: &[impl AsRef<str>],
        wanted: impl Fn(&str, &str) -> bool,
        timeout: Duration,
        what: &str,
    ) {
        let reached = eventually(timeout, || async {
            reasons(&self.ns, names).await.iter().all(|(s, r)| wanted(s, r)).then_some(())
        })
        .await;
        if reached.is_none() {
            let seen = reasons(&self.ns, names).await;
            self.replicas.fail(&format!("{what}: {seen:?}"));
        }
    }

    /// Waits until claim `name` is bound (`until_claims`).
    pub async fn bound(&self, name: &str, timeout: Duration, what: &str) {
        self.all_bound(&[name], timeout, what).await;
    }

    /// Waits until every claim in `names` is bound (`until_claims`).
    pub async fn all_bound(&self, names: &[impl AsRef<str>], timeout: Duration, what: &str) {
        self.until_claims(names, |status, _| status == "True", timeout, what).await;
    }

    /// Waits until claim `name` gives `reason`, e.g. PoolExhausted (`until_claims`).
    pub async fn reports(&self, name: &str, reason: &str, timeout: Duration, what: &str) {
        self.until_claims(&[name], |_, r| r == reason, timeout, what).await;
    }

    /// Waits until exactly `n` claims of the namespace are bound; fails with `what` and the logs
    /// if they are not in time.
    pub async fn bound_exactly(&self, n: usize, timeout: Duration, what: &str) {
        let namespaces = std::slice::from_ref(&self.ns);
        self.replicas.eventually(timeout, what, || bound_exactly(namespaces, n)).await;
    }
}
