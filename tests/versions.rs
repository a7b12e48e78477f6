//! The fence of a frozen holder, kept by the API server (the CRD's transition rules and the
//! resourceVersion precondition of a ledger write), on every Kubernetes version lockguard
//! supports: `make test-versions` runs it with `LOCKGUARD_KUBERNETES=1.32`, beside the
//! admission table, the install's dry run, the bursts and the upgrade test. A test binary of
//! its own: every replica of a control plane serves every pool, and the frozen replica must
//! stop at this test's ledger write, not another test's.

mod support;

use std::time::Duration;

use support::epochs::{frozen_writer, pool_yaml, refused_when_thawed};
use support::{Operator, apply, audit};

/// A replica frozen before its ledger write loses the pool's lock; another binds the claim;
/// thawed, the frozen one writes with its old token and the API server refuses the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_holders_late_ledger_write_is_refused_by_the_api_server() {
    let mut op = Operator::start(0, "frozen").await;
    apply(&pool_yaml(&op.pool, "Etcd"));
    let frozen = frozen_writer(&mut op).await;
    op.replicas.add();
    op.bound_exactly(1, Duration::from_secs(60), "another replica binds the claim").await;
    refused_when_thawed(&op.replicas, frozen).await;
    op.claim("second", 2).await;
    op.bound_exactly(2, Duration::from_secs(60), "the pool serves claims after the refusal").await;
    assert_eq!(audit(&[&op.pool]).await, Ok(3));
}
