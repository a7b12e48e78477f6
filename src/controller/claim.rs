//! Reconciling a Claim: allocate its items from the pool's ledger under the pool's lock,
//! and give them back (finalizer) when it is deleted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalize, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::context::Context;
use super::{Error, FINALIZER, backoff};
use crate::api::{Claim, ClaimStatus, LockBackend, Pool, PoolStatus, condition, set_condition};
use crate::failpoint;
use crate::ledger::{AllocError, Ledger};
use crate::lock::LockGuard;
use crate::metrics::by as by_backend;

pub const BOUND: &str = "Bound";

/// Not bound for a reason that only a change of the pool can clear.
pub fn waits_for_pool(claim: &Claim) -> bool {
    let reasons = ["PoolNotFound", "PoolTooSmall", "PoolExhausted"];
    claim
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == BOUND))
        .is_some_and(|c| c.status == "False" && reasons.contains(&c.reason.as_str()))
}

/// `namespace/name`, the claim's key in a ledger.
pub fn ledger_key(claim: &Claim) -> String {
    format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any())
}

pub async fn reconcile(claim: Arc<Claim>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_claim(claim, &ctx).await;
    ctx.metrics.reconciled("claim", started.elapsed().as_secs_f64(), result.as_ref().err().map(Error::kind));
    result
}

async fn reconcile_claim(claim: Arc<Claim>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ctx = ctx.clone();
    let api: Api<Claim> = Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let result = finalizer(&api, FINALIZER, claim.clone(), |event| async {
        match event {
            Finalize::Apply(claim) => apply(&claim, &ctx).await,
            Finalize::Cleanup(claim) => cleanup(&claim, &ctx).await,
        }
    })
    .await;
    match result {
        Ok(action) => {
            ctx.succeeded(&ledger_key(&claim));
            Ok(action)
        }
        Err(
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e),
        ) => Err(e),
        Err(e) => Err(Error::Finalizer(e.to_string())),
    }
}

pub fn error_policy(claim: Arc<Claim>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failed(&ledger_key(&claim));
    let delay = match error {
        // A fenced write means another replica holds the lock now: retry soon, as a waiter.
        Error::Fenced { .. } => Duration::from_millis(200),
        _ => backoff(failures, Duration::from_secs(30)),
    };
    warn!(claim = %ledger_key(&claim), pool = %claim.spec.pool_ref, error = %error, kind = error.kind(), retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

/// What a claim's status should say when it is not bound.
struct NotBound {
    reason: &'static str,
    message: String,
}

async fn apply(claim: &Claim, ctx: &Context) -> Result<Action, Error> {
    let key = ledger_key(claim);
    let pool_name = &claim.spec.pool_ref;
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let Some(pool) = pools.get_opt(pool_name).await? else {
        let message = format!("pool {pool_name} does not exist; the claim binds once it is created");
        return not_bound(claim, ctx, NotBound { reason: "PoolNotFound", message }, Some(60)).await;
    };
    let capacity = pool.spec.items.capacity();
    let count = claim.spec.count.max(0) as u32;
    if count > capacity {
        let message = format!("the claim asks for {count} items but pool {pool_name} only has {capacity}");
        return not_bound(claim, ctx, NotBound { reason: "PoolTooSmall", message }, None).await;
    }
    // Already done (the ledger is the truth): only the status may need writing.
    if let Some(entry) = ledger_of(&pool)?.entry(&key)
        && entry.uid == claim.uid().unwrap_or_default()
        && entry.indices.len() as u32 == count
    {
        let token = pool.status.as_ref().and_then(|s| s.fencing_token);
        bind(claim, ctx, &pool, &entry.indices.clone(), token, false).await?;
        return Ok(Action::await_change());
    }

    let backend = pool.spec.lock.backend;
    let guard = match lock_pool(ctx, &pool).await {
        Ok(guard) => guard,
        Err(error) => {
            let message = format!("{} lock of pool {pool_name} unavailable: {error}", backend_name(backend));
            not_bound(claim, ctx, NotBound { reason: "LockUnavailable", message }, None).await?;
            return Err(error);
        }
    };
    let wait_ms = guard.waited().as_millis() as u64;
    let result = allocate_locked(claim, ctx, &guard, &key, count).await;
    let hold_ms = guard.held().as_millis() as u64;
    let lost = guard.is_lost();
    ctx.unlock(guard).await;
    match result {
        Ok(Allocated::Bound { indices, token, pool, changed }) => {
            let what = if changed { "allocated" } else { "already allocated (another reconcile did it)" };
            info!(claim = %key, pool = %pool_name, backend = backend_name(backend), token, wait_ms, hold_ms, items = indices.len(), "{what}");
            bind(claim, ctx, &pool, &indices, Some(token as i64), changed).await?;
            Ok(Action::await_change())
        }
        Ok(Allocated::Refused(state)) => {
            info!(claim = %key, pool = %pool_name, reason = state.reason, hold_ms, "not bound");
            not_bound(claim, ctx, state, Some(30)).await
        }
        Err(Error::Fenced { pool, token, by }) => {
            let note = format!(
                "ledger write of pool {pool} with token {token} rejected by the API server ({by}); this replica had lost its lock (lost={lost})"
            );
            ctx.event(&claim.object_ref(&()), EventType::Warning, "FencedWriteRejected", note).await;
            Err(Error::Fenced { pool, token, by })
        }
        Err(e) => Err(e),
    }
}

enum Allocated {
    Bound { indices: Vec<u32>, token: u64, pool: Box<Pool>, changed: bool },
    Refused(NotBound),
}

/// Under the lock: read the ledger afresh, allocate, write it fenced.
async fn allocate_locked(
    claim: &Claim,
    ctx: &Context,
    guard: &LockGuard,
    key: &str,
    count: u32,
) -> Result<Allocated, Error> {
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let pool_name = &claim.spec.pool_ref;
    let Some(pool) = pools.get_opt(pool_name).await? else {
        let message = format!("pool {pool_name} does not exist; the claim binds once it is created");
        return Ok(Allocated::Refused(NotBound { reason: "PoolNotFound", message }));
    };
    let ledger = ledger_of(&pool)?;
    let uid = claim.uid().unwrap_or_default();
    let (next, change) = match ledger.allocate(key, &uid, count) {
        Ok(done) => done,
        Err(AllocError::TooSmall { .. }) => {
            let message = format!(
                "the claim asks for {count} items but pool {pool_name} only has {}",
                ledger.capacity()
            );
            return Ok(Allocated::Refused(NotBound { reason: "PoolTooSmall", message }));
        }
        Err(e @ (AllocError::Exhausted { .. } | AllocError::TooManyClaims { .. })) => {
            let message = format!("pool {pool_name}: {e}; the claim binds when items are freed");
            return Ok(Allocated::Refused(NotBound { reason: "PoolExhausted", message }));
        }
    };
    let indices = next.entry(key).map(|e| e.indices.clone()).unwrap_or_default();
    let changed = !change.is_empty();
    let pool = if changed { write_ledger(ctx, &pool, &next, guard).await? } else { pool };
    Ok(Allocated::Bound { indices, token: guard.fencing_token(), pool: Box::new(pool), changed })
}

async fn cleanup(claim: &Claim, ctx: &Context) -> Result<Action, Error> {
    let key = ledger_key(claim);
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let Some(pool) = pools.get_opt(&claim.spec.pool_ref).await? else {
        return Ok(Action::await_change()); // nothing was allocated from a pool that is gone
    };
    let uid = claim.uid().unwrap_or_default();
    if ledger_of(&pool)?.entry(&key).is_none_or(|e| e.uid != uid) {
        return Ok(Action::await_change());
    }
    let guard = lock_pool(ctx, &pool).await?;
    let result: Result<Option<(Vec<u32>, Pool)>, Error> = async {
        let pool = pools.get(&claim.spec.pool_ref).await?;
        let ledger = ledger_of(&pool)?;
        match ledger.entry(&key) {
            Some(e) if e.uid == uid => {
                let (next, freed) = ledger.release(&key);
                let pool = write_ledger(ctx, &pool, &next, &guard).await?;
                Ok(Some((freed, pool)))
            }
            _ => Ok(None),
        }
    }
    .await;
    let token = guard.fencing_token();
    ctx.unlock(guard).await;
    if let Some((freed, pool)) = result? {
        let (_, summary) = pool.spec.items.describe(&freed);
        info!(claim = %key, pool = %claim.spec.pool_ref, token, items = freed.len(), "freed");
        let note = format!("returned {summary} to pool {} (token {token})", claim.spec.pool_ref);
        ctx.event(&claim.object_ref(&()), EventType::Normal, "Freed", note).await;
    }
    Ok(Action::await_change())
}

pub(super) async fn lock_pool(ctx: &Context, pool: &Pool) -> Result<LockGuard, Error> {
    Ok(ctx.lock(&pool.name_any(), &pool.spec.lock).await?)
}

pub(super) fn ledger_of(pool: &Pool) -> Result<Ledger, Error> {
    let capacity = pool.spec.items.capacity();
    let allocations = pool.status.as_ref().map(|s| s.ledger.as_slice()).unwrap_or_default();
    Ledger::from_status(allocations, capacity)
        .map_err(|source| Error::Ledger { pool: pool.name_any(), source })
}

/// Writes `ledger` into the pool's status with the lock's token and the resourceVersion it
/// was read at. The API server refuses it when the version moved on (409) or when the stored
/// token is newer (422: the CRD's transition rule).
pub(super) async fn write_ledger(
    ctx: &Context,
    pool: &Pool,
    ledger: &Ledger,
    guard: &LockGuard,
) -> Result<Pool, Error> {
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let mut next = pool.clone();
    let status = next.status.get_or_insert_with(PoolStatus::default);
    status.ledger = ledger.to_status();
    status.capacity = ledger.capacity() as i32;
    status.allocated = ledger.allocated() as i32;
    status.free = ledger.free() as i32;
    status.fencing_token = Some(guard.fencing_token() as i64);
    status.lock_backend = Some(pool.spec.lock.backend);
    status.lock_holder = Some(ctx.identity().to_string());
    set_condition(
        &mut status.conditions,
        condition(
            "LockHealthy",
            true,
            "LockAcquired",
            format!("ledger written under token {}", guard.fencing_token()),
            pool.metadata.generation,
        ),
    );
    failpoint::before_ledger_write(&pool.name_any(), guard.fencing_token());
    // Every writer of a ledger holds the pool's lock, so under the lock a moved version
    // (409) means another replica wrote: this one lost its lock, just like a lower token.
    let by = match pools.replace_status(&pool.name_any(), &PostParams::default(), &next).await {
        Ok(pool) => return Ok(pool),
        Err(kube::Error::Api(e)) if e.code == 409 => "resourceVersion precondition",
        Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("stale fencing token") => {
            "fencing-token rule"
        }
        Err(e) => return Err(e.into()),
    };
    ctx.metrics.fenced_rejections.get_or_create(&by_backend(guard.backend())).inc();
    warn!(pool = %pool.name_any(), token = guard.fencing_token(), by, lost = guard.is_lost(), "fenced ledger write rejected: another replica wrote the ledger under a newer lock");
    Err(Error::Fenced { pool: pool.name_any(), token: guard.fencing_token(), by })
}

async fn bind(
    claim: &Claim,
    ctx: &Context,
    pool: &Pool,
    indices: &[u32],
    token: Option<i64>,
    changed: bool,
) -> Result<(), Error> {
    let (items, summary) = pool.spec.items.describe(indices);
    let generation = claim.metadata.generation;
    // The token is the one the items were allocated under: a later reconcile that finds the
    // work done keeps it, or every ledger write would rewrite every claim's status.
    let token = if changed { token } else { claim.status.as_ref().and_then(|s| s.fencing_token).or(token) };
    let mut conditions = claim.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let message = format!("{} items from pool {}: {summary}", items.len(), claim.spec.pool_ref);
    set_condition(&mut conditions, condition(BOUND, true, "Allocated", message, generation));
    let status = ClaimStatus {
        observed_generation: generation,
        items,
        summary: Some(summary.clone()),
        fencing_token: token,
        conditions,
    };
    if claim.status.as_ref() != Some(&status) {
        if changed {
            failpoint::before_status_write(&ledger_key(claim));
        }
        patch_status(claim, ctx, &status).await?;
    }
    if changed {
        let note =
            format!("{summary} from pool {} (token {})", claim.spec.pool_ref, token.unwrap_or_default());
        ctx.event(&claim.object_ref(&()), EventType::Normal, "Allocated", note).await;
    }
    Ok(())
}

/// Records why the claim is not bound (keeping any items it already holds) and publishes an
/// Event when the reason is new.
async fn not_bound(
    claim: &Claim,
    ctx: &Context,
    state: NotBound,
    requeue_seconds: Option<u64>,
) -> Result<Action, Error> {
    let generation = claim.metadata.generation;
    let mut status = claim.status.clone().unwrap_or_default();
    let previous = status.conditions.iter().find(|c| c.type_ == BOUND).map(|c| c.reason.clone());
    set_condition(
        &mut status.conditions,
        condition(BOUND, false, state.reason, state.message.clone(), generation),
    );
    status.observed_generation = generation;
    if claim.status.as_ref() != Some(&status) {
        patch_status(claim, ctx, &status).await?;
    }
    if previous.as_deref() != Some(state.reason) {
        ctx.event(&claim.object_ref(&()), EventType::Warning, state.reason, state.message).await;
    }
    Ok(match requeue_seconds {
        Some(s) => Action::requeue(Duration::from_secs(s)),
        None => Action::await_change(),
    })
}

async fn patch_status(claim: &Claim, ctx: &Context, status: &ClaimStatus) -> Result<(), Error> {
    let api: Api<Claim> = Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let patch = json!({ "status": status });
    api.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

fn backend_name(backend: LockBackend) -> &'static str {
    crate::lock::Backend::from(backend).as_str()
}
