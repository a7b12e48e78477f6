//! Reconciling a Claim: allocate its items from the pool's ledger under the pool's lock.
//! A claim carries no finalizer: once it is gone (a read of the server says so, under the
//! pool's lock) the pool's next hold frees its items. Claims of earlier versions still carry
//! one, and let go of their items before it is removed.
//!
//! The ledger is the truth and a claim's status follows it, never leads it: growing writes
//! the ledger first and the status after; shrinking and freeing write the status first and
//! the ledger after. Every status write carries the claim's uid and resourceVersion, so a
//! write prepared from an older read is refused instead of overwriting a newer one.

use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::adopt::awaits_adoption;
use super::context::Context;
use super::decide::{Decision, NotBound, Recheck, Step, decide, next_step, pool_not_found, waiting};
use super::defer::Deferred;
use super::error::Error;
use super::fetch::get_existing;
use super::hold;
use super::policy::{
    AGAIN_SOON, CLAIM_RESYNC, FRESH_READ, NOT_LISTED_RECHECK, NOT_SERVED_RECHECK, PENDING_RECHECK,
    PLANNED_RECHECK, POOL_MISSING_RECHECK, retry_delay,
};
use super::pool_ledger::ledger_of;
use crate::api::{BOUND, Claim, ClaimStatus, FINALIZER, Pool, Reason, condition, set_condition};
use crate::failpoint;
use crate::ledger::Ledger;

/// Not bound for a reason that only a change of the pool can clear.
pub fn waits_for_pool(claim: &Claim) -> bool {
    claim
        .bound_condition()
        .is_some_and(|c| c.status == "False" && Reason::parse(&c.reason).is_some_and(Reason::waits_for_pool))
}

/// Whether a change of `pool` concerns `claim`: it waits for the pool, its status does not
/// show exactly what the ledger gives it, or it records another incarnation of the pool.
pub fn affected_by(claim: &Claim, pool: &Pool, ledger: Option<&Ledger>) -> bool {
    if waits_for_pool(claim) || claim.recorded_by_another(pool) {
        return true;
    }
    let Some(ledger) = ledger else { return false };
    let given = ledger.given(&claim.ledger_key(), &claim.uid().unwrap_or_default());
    claim.shown_items() != ledger.describe(given).0.as_slice()
}

/// Every log line of a claim's reconcile carries `claim=` and `pool=` from its span.
#[tracing::instrument(name = "reconcile", skip_all, fields(claim = %claim.ledger_key(), pool = %claim.spec.pool_ref))]
pub async fn reconcile(claim: Arc<Claim>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.timed("claim", reconcile_claim(claim, &ctx)).await
}

async fn reconcile_claim(claim: Arc<Claim>, ctx: &Arc<Context>) -> Result<Action, Error> {
    // Another replica serves the pool; a change of members that gives it to this one wakes
    // the claim again.
    if !ctx.members.serves(&claim.spec.pool_ref) {
        return Ok(Action::requeue(NOT_SERVED_RECHECK));
    }
    // A pool just gained is cached once the pool watch, started again to include it, has
    // listed it; until then each of its claims would read the pool from the server.
    if !ctx.pools_listed.covers(&claim.spec.pool_ref) {
        return Ok(Action::requeue(NOT_LISTED_RECHECK));
    }
    // The cache has not shown this replica's last status write of the claim yet: decided
    // from this older copy, the claim would be written again. Its event wakes it (the
    // requeue is a safety net).
    if ctx.claims.behind_own_write(&claim) {
        return Ok(Action::requeue(FRESH_READ));
    }
    if claim.metadata.deletion_timestamp.is_some() {
        // A claim of an earlier version lets go of its items before its finalizer goes; any
        // other keeps them while it exists (another controller's finalizer may hold it, as
        // PVC protection does) and the pool frees them once it is gone.
        let action = if claim.has_finalizer() { release(&claim, ctx).await? } else { Action::await_change() };
        ctx.failures.succeeded(&claim.ledger_key());
        return Ok(action);
    }
    let action = apply(&claim, ctx).await?;
    ctx.failures.succeeded(&claim.ledger_key());
    Ok(action)
}

pub fn error_policy(claim: Arc<Claim>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = retry_delay(error, ctx.failures.failed(&claim.ledger_key()));
    warn!(claim = %claim.ledger_key(), pool = %claim.spec.pool_ref, error = %error, kind = error.kind(), retry_in_ms = delay.as_millis() as u64, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(claim: &Claim, ctx: &Arc<Context>) -> Result<Action, Error> {
    let pool_name = &claim.spec.pool_ref;
    let pool = ctx.pool(pool_name).await?;
    // A corrupt ledger is something to decide about; any other failure is an error.
    let ledger = match pool.as_deref().map(|pool| ctx.ledger(pool)) {
        Some(Ok(ledger)) => Some(Ok(ledger)),
        Some(Err(Error::Ledger { source, .. })) => Some(Err(source)),
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let read = ledger.as_ref().map(|read| read.as_deref());
    match (decide(claim, pool.as_deref().zip(read)), pool) {
        (Decision::NotBound { state, items, recheck }, _) => {
            not_bound(claim, ctx, state, items, recheck).await
        }
        (Decision::Leave { warning, recheck }, _) => {
            warn!("{warning}");
            Ok(action(recheck))
        }
        (Decision::Revoke, _) => revoke(claim, ctx, pool_name).await,
        (Decision::Adopt, _) => {
            hold::request(ctx, pool_name);
            Ok(Action::requeue(PENDING_RECHECK))
        }
        (Decision::Show { given }, Some(pool)) => show(claim, ctx, &pool, &given).await,
        (Decision::Allocate { shrink_to }, Some(pool)) => {
            let claim = match shrink_to {
                Some(indices) => show_bound(claim, ctx, &pool, &indices).await?,
                None => claim.clone(),
            };
            // The pool's task plans for every claim its cache shows, this one included; the
            // ledger write wakes this claim (through the pool watch) to show its items.
            hold::request(ctx, pool_name);
            let failure = ctx.batches.failure(pool_name);
            let outcome = ctx.batches.outcome(pool_name, &claim.ledger_key(), pool.version());
            match waiting(&claim, &pool, failure.as_ref(), outcome.as_ref()) {
                Some((state, recheck)) => not_bound(&claim, ctx, state, None, recheck).await,
                // Planned or about to be: the hold wakes it.
                None => Ok(Action::requeue(PLANNED_RECHECK)),
            }
        }
        // decide() shows and allocates only from a pool it was given.
        (Decision::Show { .. } | Decision::Allocate { .. }, None) => {
            Err(Error::Invariant("a decision to show or allocate without a pool".into()))
        }
    }
}

fn action(recheck: Recheck) -> Action {
    match recheck {
        Recheck::OnChange => Action::await_change(),
        Recheck::After(after) => Action::requeue(after),
    }
}

/// The status lists items that the cached ledger does not give: confirmed by a fresh read
/// of the pool (the cache may lag behind the status), the status gives them back — unless
/// that read shows a pool that lost the ledger those items come from: then it adopts them.
async fn revoke(claim: &Claim, ctx: &Arc<Context>, pool_name: &str) -> Result<Action, Error> {
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let Some(pool) = get_existing(&pools, pool_name).await? else {
        let recheck = Recheck::After(POOL_MISSING_RECHECK);
        let state = pool_not_found(pool_name, claim.shown_items().len());
        return not_bound(claim, ctx, state, None, recheck).await;
    };
    let (key, uid) = (claim.ledger_key(), claim.uid().unwrap_or_default());
    let ledger = ledger_of(&pool)?;
    if awaits_adoption(claim, &pool, &ledger) {
        hold::request(ctx, pool_name);
        return Ok(Action::requeue(PENDING_RECHECK));
    }
    if !ledger.disputed_with(&key, &uid).is_empty() {
        return Ok(Action::requeue(FRESH_READ)); // the cache was behind: decided from it again
    }
    let given = ledger.given(&key, &uid).to_vec();
    let given_items = ledger.describe(&given).0;
    let shown = claim.status.as_ref().map(|s| s.items.clone()).unwrap_or_default();
    let count = claim.spec.count.max(0) as u32;
    let Step::Revoke { keep } = next_step(&shown, &given, &given_items, count, claim.spec.items.as_deref())
    else {
        return Ok(Action::requeue(FRESH_READ)); // the cache was behind
    };
    let (kept, _) = ledger.describe(&keep);
    let message = format!(
        "the ledger of pool {pool_name} no longer gives this claim {} of its items (a pool restored, re-created or edited); re-allocating",
        shown.len() - kept.len()
    );
    warn!(
        shown = shown.len(),
        kept = kept.len(),
        "status lists items the ledger does not give; taking them back"
    );
    ctx.events
        .publish(&claim.object_ref(&()), EventType::Warning, Reason::ItemsRevoked, message.clone())
        .await;
    let recheck = Recheck::After(AGAIN_SOON);
    not_bound(claim, ctx, NotBound { reason: Reason::ItemsRevoked, message }, Some(kept), recheck).await
}

/// The ledger gives the claim what it asks for: its status shows it. The replica that
/// wrote the ledger writes the statuses of its hold; the others leave them to it for a
/// moment, and only write those still not shown after it (that replica may have died).
async fn show(claim: &Claim, ctx: &Context, pool: &Pool, given: &[u32]) -> Result<Action, Error> {
    let key = claim.ledger_key();
    let status = bound_status(claim, pool, &*ctx.ledger(pool)?, given);
    if claim.status.as_ref() != Some(&status) {
        if let Some(wait) = ctx.defer(&key, Deferred::Status, pool) {
            return Ok(Action::requeue(wait));
        }
        write_bound(claim, ctx, status).await?;
    }
    ctx.deferrals.done(&key, Deferred::Status);
    Ok(Action::requeue(CLAIM_RESYNC))
}

/// A claim of an earlier version (it carries the finalizer) being deleted: its status lets go
/// of the items, the pool's task frees them in the ledger, and only then does the finalizer go
/// (checked against a fresh read).
async fn release(claim: &Claim, ctx: &Arc<Context>) -> Result<Action, Error> {
    let key = claim.ledger_key();
    let pool_name = &claim.spec.pool_ref;
    let uid = claim.uid().unwrap_or_default();
    let cached = ctx.pool(pool_name).await?;
    // An item in dispute counts as held: the status lets go of it first, so that the hold
    // can settle the dispute.
    let holds = |ledger: &Ledger| {
        !ledger.given(&key, &uid).is_empty() || !ledger.disputed_with(&key, &uid).is_empty()
    };
    let still_held = match &cached {
        Some(pool) => holds(&*ctx.ledger(pool)?),
        None => false,
    };
    if !still_held {
        // Confirmed by the server: the cache may not show an allocation yet.
        let pools: Api<Pool> = Api::all(ctx.client.clone());
        let fresh = get_existing(&pools, pool_name).await?;
        let held = match &fresh {
            Some(pool) => holds(&ledger_of(pool)?),
            None => false,
        };
        if !held {
            remove_finalizer(claim, ctx).await?;
            ctx.deferrals.done(&key, Deferred::Status);
            return Ok(Action::await_change());
        }
    }
    // The status lets go of the items before the ledger frees them.
    if claim.status.as_ref().is_some_and(|s| !s.items.is_empty()) {
        let message = "the claim is being deleted; its items are returned to the pool".to_string();
        set_not_bound(claim, ctx, NotBound { reason: Reason::Releasing, message }, Some(Vec::new())).await?;
    }
    hold::request(ctx, pool_name);
    Ok(Action::requeue(PENDING_RECHECK))
}

/// Removes this operator's finalizer, only from the finalizers as read (a JSON patch that
/// tests them), so a finalizer another controller added meanwhile stays.
async fn remove_finalizer(claim: &Claim, ctx: &Context) -> Result<(), Error> {
    let finalizers = claim.finalizers();
    let Some(at) = finalizers.iter().position(|f| f == FINALIZER) else { return Ok(()) };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": format!("/metadata/finalizers/{at}"), "value": FINALIZER },
        { "op": "remove", "path": format!("/metadata/finalizers/{at}") },
    ]))
    .map_err(|e| Error::Invariant(format!("finalizer patch: {e}")))?;
    let api: Api<Claim> = Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    match api.patch(&claim.name_any(), &PatchParams::default(), &Patch::Json::<()>(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => {
            Err(Error::Changed { claim: claim.ledger_key() })
        }
        Err(e) => Err(e.into()),
    }
}

/// The Bound status that shows `indices` of `pool`.
fn bound_status(claim: &Claim, pool: &Pool, ledger: &Ledger, indices: &[u32]) -> ClaimStatus {
    let (items, summary) = ledger.describe(indices);
    let generation = claim.metadata.generation;
    let previous = claim.status.as_ref();
    // The token is the one the items were allocated under: a claim whose items stay keeps
    // it, or every ledger write would rewrite every claim's status.
    let token = match previous {
        Some(s) if s.items == items => s.fencing_token,
        _ => pool.status.as_ref().and_then(|s| s.fencing_token),
    };
    let mut conditions = previous.map(|s| s.conditions.clone()).unwrap_or_default();
    let message = format!("{} items from pool {}: {summary}", items.len(), claim.spec.pool_ref);
    set_condition(&mut conditions, condition(BOUND, true, Reason::Allocated, message, generation));
    ClaimStatus {
        observed_generation: generation,
        items,
        summary: Some(summary),
        fencing_token: token,
        pool_uid: pool.metadata.uid.clone(),
        conditions,
    }
}

/// Writes a Bound status showing `indices`; returns the claim as written.
async fn show_bound(claim: &Claim, ctx: &Context, pool: &Pool, indices: &[u32]) -> Result<Claim, Error> {
    let status = bound_status(claim, pool, &*ctx.ledger(pool)?, indices);
    if claim.status.as_ref() == Some(&status) {
        return Ok(claim.clone());
    }
    write_bound(claim, ctx, status).await
}

/// The status write that shows items. No Event per claim: the pool's `Allocated` Event
/// counts the claims of each ledger write (a third of the API requests of a burst were
/// these Events), and the claim's `Bound` condition says what it holds.
async fn write_bound(claim: &Claim, ctx: &Context, status: ClaimStatus) -> Result<Claim, Error> {
    if claim.status.as_ref().is_none_or(|s| s.items != status.items) {
        failpoint::before_status_write(&claim.ledger_key());
    }
    write_status(claim, ctx, &status).await
}

/// Records why the claim is not bound and publishes an Event when the reason is new.
/// `items`: what the status shows from now on (None keeps what it shows, which the caller
/// has checked against the ledger).
async fn not_bound(
    claim: &Claim,
    ctx: &Context,
    state: NotBound,
    items: Option<Vec<String>>,
    recheck: Recheck,
) -> Result<Action, Error> {
    set_not_bound(claim, ctx, state, items).await?;
    Ok(action(recheck))
}

/// Writes the not-bound status; returns the claim as written.
async fn set_not_bound(
    claim: &Claim,
    ctx: &Context,
    state: NotBound,
    items: Option<Vec<String>>,
) -> Result<Claim, Error> {
    let generation = claim.metadata.generation;
    let mut status = claim.status.clone().unwrap_or_default();
    let previous = status.conditions.iter().find(|c| c.type_ == BOUND).map(|c| c.reason.clone());
    set_condition(
        &mut status.conditions,
        condition(BOUND, false, state.reason, state.message.clone(), generation),
    );
    status.observed_generation = generation;
    if let Some(items) = items {
        status.summary = (!items.is_empty()).then(|| format!("{} items", items.len()));
        status.items = items;
    }
    let written = if claim.status.as_ref() != Some(&status) {
        write_status(claim, ctx, &status).await?
    } else {
        claim.clone()
    };
    // ItemsRevoked has its own Event already; Releasing is followed by Freed.
    let quiet = [Reason::ItemsRevoked, Reason::Releasing].contains(&state.reason);
    if previous.as_deref() != Some(state.reason.as_str()) && !quiet {
        info!(reason = %state.reason, "not bound");
        ctx.events.publish(&claim.object_ref(&()), EventType::Warning, state.reason, state.message).await;
    }
    Ok(written)
}

/// A status write that only lands on the claim exactly as it was read (uid and
/// resourceVersion): a write prepared from an older read is refused with 409.
async fn write_status(claim: &Claim, ctx: &Context, status: &ClaimStatus) -> Result<Claim, Error> {
    let api: Api<Claim> = Api::namespaced(ctx.client.clone(), &claim.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": { "uid": claim.uid(), "resourceVersion": claim.resource_version() },
        "status": status,
    });
    match api.patch_status(&claim.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(written) => {
            ctx.claims.wrote_status(claim, &written);
            Ok(written)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Changed { claim: claim.ledger_key() }),
        Err(e) => Err(e.into()),
    }
}
