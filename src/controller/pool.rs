//! Reconciling a Pool: keep its status true to its spec and ledger (capacity, free,
//! conditions), free ledger entries whose claims are gone without their finalizer, hold
//! its deletion while claims hold its items, and report a ledger that cannot be read.

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::context::Context;
use super::error::Error;
use super::fetch::get_existing;
use super::hold;
use super::policy::{
    AGAIN_SOON, DELETION_RECHECK, NOT_LISTED_RECHECK, NOT_SERVED_RECHECK, POOL_RESYNC, retry_delay,
};
use super::pool_ledger::{
    disallowed_held, ledger_of, limits_condition, lock_pool, report_corrupt, report_lock_unavailable,
    write_ledger,
};
use crate::api::{
    Claim, LEDGER_CORRUPT, LIMITS_CLAMPED, POOL_FINALIZER, Pool, PoolStatus, READY, Reason, condition,
    set_condition,
};
use crate::ledger::{LEDGER_FORMAT, Ledger};

/// Every log line of a pool's reconcile carries `pool=` from its span.
#[tracing::instrument(name = "reconcile", skip_all, fields(pool = %pool.name_any()))]
pub async fn reconcile(pool: Arc<Pool>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.timed("pool", reconcile_pool(&pool, &ctx)).await
}

/// The Ready condition a readable ledger calls for.
fn ready_condition(
    pool: &Pool,
    ledger: &Ledger,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let generation = pool.metadata.generation;
    if !pool.is_deleting() {
        // No counts here: they are in status.free, and a message that changed with every
        // allocation would make every allocation rewrite the pool's status once more.
        let message = "the ledger is readable and its counters agree with it";
        return condition(READY, true, Reason::LedgerConsistent, message, generation);
    }
    let holders: Vec<&str> = ledger.claims().map(|(key, _)| key).collect();
    let shown = holders.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    let more = if holders.len() > 5 { format!(" and {} more", holders.len() - 5) } else { String::new() };
    let message = format!(
        "deletion waits: {} claims hold {} items of this pool ({shown}{more}); delete those claims (kubectl delete claim -n NAMESPACE NAME) and the pool goes",
        holders.len(),
        ledger.allocated()
    );
    condition(READY, false, Reason::DeletionBlocked, message, generation)
}

/// Whether the status already says what the spec and ledger call for.
fn status_is_current(ctx: &Context, pool: &Pool, ledger: &Ledger) -> bool {
    let status = pool.status.clone().unwrap_or_default();
    let wanted = ready_condition(pool, ledger);
    let ready = status.conditions.iter().find(|c| c.type_ == READY);
    let limits = limits_condition(pool);
    status.observed_generation == pool.metadata.generation
        && status.capacity == ledger.capacity() as i32
        && status.allocated == ledger.allocated() as i32
        && status.free == ledger.free() as i32
        && status.ledger_format == Some(LEDGER_FORMAT)
        && pool.epoch_requested().is_none()
        && status.removed_held.unwrap_or_default() == ledger.removed_held() as i32
        && status.disallowed_held.unwrap_or_default() == disallowed_held(ctx, pool, ledger) as i32
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == LIMITS_CLAMPED && c.reason == limits.reason && c.message == limits.message)
        && ready.is_some_and(|c| {
            c.status == wanted.status
                && c.reason == wanted.reason
                && (!pool.is_deleting() || c.message == wanted.message)
        })
        && status.conditions.iter().all(|c| c.type_ != LEDGER_CORRUPT || c.status == "False")
}

async fn reconcile_pool(pool: &Pool, ctx: &Arc<Context>) -> Result<Action, Error> {
    let name = pool.name_any();
    if !ctx.members.serves(&name) {
        return Ok(Action::requeue(NOT_SERVED_RECHECK));
    }
    // Every ledger entry whose claim the cache lacks is read from the server: with the cache
    // still listing, that was a read per entry of every pool served (thousands at start-up),
    // and a pool just gained has its claims listed only once the claim watch starts again.
    if !ctx.claims.covers(&name) {
        return Ok(Action::requeue(NOT_LISTED_RECHECK));
    }
    let ledger = match pool.ledger() {
        Ok(l) => l,
        Err(e) => {
            ctx.corrupt.set(&ctx.metrics, &name, true);
            report_corrupt(ctx, pool, &e).await?;
            return Ok(Action::requeue(POOL_RESYNC));
        }
    };
    ctx.corrupt.set(&ctx.metrics, &name, false);
    if !pool.is_deleting() && !pool.is_protected() {
        add_finalizer(ctx, pool).await?;
        return Ok(Action::await_change());
    }
    let gone = vanished_claims(&ledger, ctx).await?;
    if pool.is_deleting() && gone.len() == ledger.claims().count() {
        return release_deletion(ctx, pool, &ledger, gone.len()).await;
    }
    // A lost ledger is rebuilt by a hold, which adopts what the claims show: a write of the
    // empty ledger first would give the pool fence fields and hide that it was lost.
    if pool.lost_ledger() && ctx.claims.of_pool(&name).iter().any(|c| c.shows_lost_ledger(pool)) {
        hold::request(ctx, &name);
        return Ok(Action::requeue(AGAIN_SOON));
    }
    if status_is_current(ctx, pool, &ledger) && gone.is_empty() {
        ctx.failures.succeeded(&name);
        return Ok(Action::requeue(if pool.is_deleting() { DELETION_RECHECK } else { POOL_RESYNC }));
    }

    let guard = match lock_pool(ctx, pool).await {
        Ok(g) => g,
        Err(e) => {
            warn!(error = %e, "pool lock unavailable");
            report_lock_unavailable(ctx, pool, &e).await?;
            return Err(e);
        }
    };
    let result: Result<(usize, Pool), Error> = async {
        let pools: Api<Pool> = Api::all(ctx.client.clone());
        let fresh = pools.get(&name).await?;
        let mut ledger = ledger_of(&fresh)?;
        let mut freed = 0;
        for claim in vanished_claims(&ledger, ctx).await? {
            let (next, items) = ledger.release(&claim);
            freed += items.len();
            info!(claim = %claim, items = items.len(), "freed the items of a claim that no longer exists");
            ledger = next;
        }
        let ready = ready_condition(&fresh, &ledger);
        let written = write_ledger(ctx, &fresh, &ledger, &guard, |status: &mut PoolStatus| {
            status.observed_generation = fresh.metadata.generation;
            set_condition(&mut status.conditions, ready);
            set_condition(
                &mut status.conditions,
                condition(
                    LEDGER_CORRUPT,
                    false,
                    Reason::LedgerReadable,
                    "the ledger reads cleanly",
                    fresh.metadata.generation,
                ),
            );
        })
        .await?;
        Ok((freed, written))
    }
    .await;
    ctx.locks.unlock(guard).await;
    if let Err(Error::Fenced { token, by, .. }) = &result {
        let note = format!(
            "status write with token {token} rejected by the API server ({by}); this replica had lost its lock"
        );
        ctx.events
            .publish(&pool.object_ref(&()), EventType::Warning, Reason::FencedWriteRejected, note)
            .await;
    }
    let (freed, written) = result?;
    if freed > 0 {
        let note = format!("freed {freed} items of claims that no longer exist");
        ctx.events.publish(&pool.object_ref(&()), EventType::Normal, Reason::Freed, note).await;
    }
    if written.is_deleting() {
        let blocked =
            written.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY).cloned());
        let was_blocked = pool.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| c.type_ == READY && c.reason == Reason::DeletionBlocked.as_str())
        });
        if let Some(c) = blocked.filter(|_| !was_blocked) {
            warn!("{}", c.message);
            ctx.events
                .publish(&pool.object_ref(&()), EventType::Warning, Reason::DeletionBlocked, c.message)
                .await;
        }
    }
    ctx.failures.succeeded(&name);
    Ok(Action::requeue(if written.is_deleting() { DELETION_RECHECK } else { POOL_RESYNC }))
}

/// A pool being deleted whose ledger holds nothing of a live claim: let it go. Claims
/// cannot allocate from a pool being deleted, and the finalizer is removed only at the
/// resourceVersion whose ledger was read, so no allocation can land in between.
async fn release_deletion(
    ctx: &Context,
    pool: &Pool,
    ledger: &Ledger,
    vanished: usize,
) -> Result<Action, Error> {
    let finalizers: Vec<String> =
        pool.finalizers().iter().filter(|f| *f != POOL_FINALIZER).cloned().collect();
    if finalizers.len() == pool.finalizers().len() {
        return Ok(Action::await_change());
    }
    info!(
        entries_of_vanished_claims = vanished,
        items = ledger.allocated(),
        "no claim holds items of this pool; letting its deletion proceed"
    );
    set_finalizers(ctx, pool, finalizers).await?;
    Ok(Action::await_change())
}

/// Adds the deletion protection. Claims do not allocate from a pool without it, so it must
/// not starve: a JSON patch that tests the finalizers as read needs no resourceVersion,
/// which ledger writes keep moving.
async fn add_finalizer(ctx: &Context, pool: &Pool) -> Result<(), Error> {
    let ours = json!(POOL_FINALIZER);
    let patch: json_patch::Patch = serde_json::from_value(match &pool.metadata.finalizers {
        Some(present) => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": present },
            { "op": "add", "path": "/metadata/finalizers/-", "value": ours },
        ]),
        None => json!([{ "op": "add", "path": "/metadata/finalizers", "value": [ours] }]),
    })
    .map_err(|e| Error::Invariant(format!("finalizer patch: {e}")))?;
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    match pools.patch(&pool.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        // The finalizers changed since they were read (the test failed): read them again.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => {
            Err(Error::Changed { claim: pool.name_any() })
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces the pool's finalizers, only at the resourceVersion they were read at.
async fn set_finalizers(ctx: &Context, pool: &Pool, finalizers: Vec<String>) -> Result<(), Error> {
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": pool.resource_version() },
    });
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    match pools.patch(&pool.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Changed { claim: pool.name_any() }),
        Err(e) => Err(e.into()),
    }
}

pub fn error_policy(pool: Arc<Pool>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = retry_delay(error, ctx.failures.failed(&pool.name_any()));
    warn!(pool = %pool.name_any(), error = %error, retry_in_ms = delay.as_millis() as u64, "pool reconcile failed");
    Action::requeue(delay)
}

/// Ledger entries whose claim is neither in the cache nor on the server (with that UID).
async fn vanished_claims(ledger: &Ledger, ctx: &Context) -> Result<Vec<String>, Error> {
    let mut gone = Vec::new();
    for (key, entry) in ledger.claims() {
        let Some((namespace, name)) = key.split_once('/') else { continue };
        let cached = ctx.claims.get(&ObjectRef::<Claim>::new(name).within(namespace));
        if cached.is_some_and(|c| c.uid().as_deref() == Some(entry.uid.as_str())) {
            continue;
        }
        // The cache may lag behind a claim just created: ask the server before freeing.
        let api: Api<Claim> = Api::namespaced(ctx.client.clone(), namespace);
        let live = get_existing(&api, name).await?;
        if live.is_none_or(|c| c.uid().as_deref() != Some(entry.uid.as_str())) {
            gone.push(key.to_string());
        }
    }
    Ok(gone)
}
