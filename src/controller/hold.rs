//! One hold of a pool's lock serves every claim of the pool: the I/O around
//! [`plan`](super::plan::plan). A replica takes the lock only when its caches show work the
//! ledger does not reflect yet, stops waiting for it once they show the work done by
//! another replica, and runs one hold per pool at a time, in a task of the pool's own:
//! claims ask for a hold and go on, and the next hold serves all who asked meanwhile.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::adopt::{awaits_adoption, settleable, still_shows};
use super::batches::PoolBatch;
use super::context::Context;
use super::decide::{Failure, waited_past};
use super::error::Error;
use super::fetch::{get_existing, lean};
use super::plan::{Plan, Rules, Want, plan};
use super::policy::{LOCK_WAIT_RECHECK, retry_delay};
use super::pool_ledger::{disputed_summary, ledger_of, lock_pool, report_lock_unavailable, write_ledger};
use crate::api::{Claim, Party, Pool, Reason};
use crate::ledger::{Adopted, Ledger};
use crate::metrics::by;
use lockguard_lock::LockGuard;

/// Asks for a hold of pool `name` on this replica: the pool's task runs one soon (at once
/// if idle), planned from the caches as they are then.
pub fn request(ctx: &Arc<Context>, name: &str) {
    ctx.batches.request(name, |batch| {
        tokio::spawn(run(ctx.clone(), name.to_string(), batch));
    });
}

enum Round {
    /// The ledger was written: look again, claims may have come meanwhile.
    Wrote,
    /// Nothing (more) to do, or another replica did it.
    Idle,
    NoPool,
}

/// The task of one pool: a round per request, more while rounds write, a backoff while
/// they fail. It ends when the pool is gone.
async fn run(ctx: Arc<Context>, name: String, batch: Arc<PoolBatch>) {
    let mut failures = 0;
    loop {
        batch.requested().await;
        loop {
            match round(&ctx, &name, &batch).await {
                Ok(Round::Wrote) => {
                    failures = 0;
                    batch.state().failure = None;
                }
                Ok(Round::Idle) => {
                    failures = 0;
                    batch.state().failure = None;
                    break;
                }
                Ok(Round::NoPool) => {
                    ctx.batches.ended(&name);
                    return;
                }
                Err(error) => {
                    failures += 1;
                    let delay = retry_delay(&error, failures);
                    warn!(pool = %name, %error, kind = error.kind(), retry_in_ms = delay.as_millis() as u64, "hold of the pool's lock failed");
                    let lock_unavailable = matches!(error, Error::Lock(_));
                    ctx.tell(batch.failed(Failure { message: error.to_string(), lock_unavailable }));
                    if let Some(pool) = ctx.cached_pool(&name).filter(|_| lock_unavailable)
                        && let Err(e) = report_lock_unavailable(&ctx, &pool, &error).await
                    {
                        warn!(pool = %name, error = %e, "could not say on the pool that its lock is unavailable");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// One round: plan from the caches; if that changes anything, take the lock (unless the
/// caches show the work done meanwhile) and hold it once.
async fn round(ctx: &Context, name: &str, batch: &PoolBatch) -> Result<Round, Error> {
    // The pool moved to another replica (members changed): that one serves it now.
    if !ctx.members.serves(name) {
        return Ok(Round::Idle);
    }
    let written = batch.state().written.clone();
    let Some(pool) = Pool::newest(ctx.pool(name).await?, written) else { return Ok(Round::NoPool) };
    let (planned, work) = planned(ctx, &pool)?;
    ctx.tell(batch.planned(&pool, &planned));
    if !work {
        return Ok(Round::Idle);
    }
    let _turn = ctx.turns.take(ctx.members.holds_at_once()).await;
    let Some(guard) = acquire_unless_done(ctx, &pool, batch).await? else { return Ok(Round::Idle) };
    let result = hold(ctx, name, &guard).await;
    let lost = guard.is_lost();
    ctx.locks.unlock(guard).await;
    match result {
        Ok(Some(held)) => {
            ctx.tell(batch.planned(&held.pool, &held.plan));
            batch.state().written = Some(Arc::new(held.pool));
            Ok(if held.wrote { Round::Wrote } else { Round::Idle })
        }
        Ok(None) => Ok(Round::NoPool),
        Err(Error::Fenced { token, by, .. }) => {
            let note = format!(
                "ledger write of pool {name} with token {token} rejected by the API server ({by}); this replica had lost its lock (lost={lost})"
            );
            ctx.events
                .publish(&pool.object_ref(&()), EventType::Warning, Reason::FencedWriteRejected, note)
                .await;
            Err(Error::Fenced { pool: name.to_string(), token, by })
        }
        Err(e) => Err(e),
    }
}

struct Held {
    pool: Pool,
    plan: Plan,
    wrote: bool,
}

/// Under the lock: read the pool; if it lost its ledger, adopt what the claims show and
/// settle the disputes it can; plan for every claim the cache shows, settle entries of
/// another uid by reading those claims, write the ledger once.
async fn hold(ctx: &Context, name: &str, guard: &LockGuard) -> Result<Option<Held>, Error> {
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let Some(mut pool) = get_existing(&pools, name).await? else { return Ok(None) };
    lean(&mut pool);
    let mut ledger = ledger_of(&pool)?;
    let claims = claims_of(ctx, &pool);
    // Only a pool that cannot vanish with its ledger adopts (as it gives out items).
    let adopted =
        if pool.may_grow() { adopt_lost(ctx, &pool, &mut ledger, &claims).await? } else { Vec::new() };
    let settled = settle_disputes(ctx, &mut ledger, &claims).await?;
    let wants = live_shrinks(ctx, &ledger, wants(ctx, &claims, &pool, &ledger)).await?;
    let mut planned = plan(&ledger, &wants, Rules::of(&pool));
    let stale = stale_entries(ctx, &planned, &wants).await?;
    if !stale.is_empty() {
        for key in &stale {
            ledger.remove(key);
        }
        planned = plan(&ledger, &wants, Rules::of(&pool));
    }
    if !planned.changes() && stale.is_empty() && adopted.is_empty() && settled.is_empty() {
        // Another replica did it while this one waited.
        return Ok(Some(Held { pool, plan: planned, wrote: false }));
    }
    let mut written = write_ledger(ctx, &pool, &planned.ledger, guard, |_| {}).await?;
    lean(&mut written);
    let (given, freed) = log_changes(ctx, &written, &planned, guard);
    let note = format!(
        "ledger written under token {}: {given} claims given items, {freed} claims' items freed; {} items free",
        guard.fencing_token(),
        planned.ledger.free()
    );
    ctx.events.publish(&written.object_ref(&()), EventType::Normal, Reason::Allocated, note).await;
    report_adoption(ctx, &written, &adopted, &settled, &planned.ledger).await;
    Ok(Some(Held { pool: written, plan: planned, wrote: true }))
}

/// What a hold adopted: per claim, the items taken and those found in dispute.
type Adoptions = Vec<(String, Adopted)>;

/// The claims whose status shows items of a ledger the pool lost, re-read under the lock
/// (the live status, under the live uid, is what is adopted): their items go into the
/// ledger before anything is given out; an item another claim shows or holds goes into
/// dispute.
async fn adopt_lost(
    ctx: &Context,
    pool: &Pool,
    ledger: &mut Ledger,
    claims: &[Arc<Claim>],
) -> Result<Adoptions, Error> {
    let mut adopted = Vec::new();
    let waiting: Vec<String> =
        claims.iter().filter(|c| awaits_adoption(c, pool, ledger)).map(|c| c.ledger_key()).collect();
    for key in waiting {
        let Some(claim) = live(ctx, &key).await? else { continue };
        if !awaits_adoption(&claim, pool, ledger) {
            continue;
        }
        let (key, uid) = (claim.ledger_key(), claim.uid().unwrap_or_default());
        match ledger.adopt(&key, &uid, claim.shown_items()) {
            Ok(done) => {
                info!(claim = %key, pool = %pool.name_any(), taken = done.taken.len(), disputed = ?done.disputed, "adopted the items the claim shows from a lost ledger");
                adopted.push((key, done));
            }
            // An entry of an earlier claim of the name: settled by the plan, adopted next time.
            Err(e) => {
                warn!(claim = %key, pool = %pool.name_any(), error = %e, "cannot adopt the claim's items yet")
            }
        }
    }
    Ok(adopted)
}

/// Disputes that some party no longer shows (as the cache says), settled from the parties'
/// live statuses: an item none shows is free again, one only one shows is its.
async fn settle_disputes(
    ctx: &Context,
    ledger: &mut Ledger,
    claims: &[Arc<Claim>],
) -> Result<Vec<String>, Error> {
    let cached = |key: &str| claims.iter().find(|c| c.ledger_key() == key).map(|c| &**c);
    let mut settled = Vec::new();
    for item in settleable(ledger, cached) {
        let parties: Vec<Party> =
            ledger.disputes().find(|(i, _)| *i == item).map(|(_, p)| p.to_vec()).unwrap_or_default();
        let mut showing = Vec::new();
        for party in parties {
            let claim = live(ctx, &party.claim).await?;
            if still_shows(claim.as_ref(), &party, &item) {
                showing.push(party);
            }
        }
        if ledger.settle(&item, &showing) {
            info!(item = %item, showing = ?showing, "dispute settled");
            settled.push(item);
        }
    }
    Ok(settled)
}

/// A claim as the API server has it now (`namespace/name`).
async fn live(ctx: &Context, key: &str) -> Result<Option<Claim>, Error> {
    let Some((namespace, name)) = key.split_once('/') else { return Ok(None) };
    let api: Api<Claim> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(get_existing(&api, name).await?)
}

/// An Event on the pool for what a hold adopted and settled, a warning for disputes.
async fn report_adoption(
    ctx: &Context,
    pool: &Pool,
    adopted: &Adoptions,
    settled: &[String],
    ledger: &Ledger,
) {
    let taken: usize = adopted.iter().map(|(_, a)| a.taken.len()).sum();
    if taken > 0 {
        let note = format!(
            "the ledger was lost (pool re-created or its status wiped): adopted {taken} items that {} claims show",
            adopted.len()
        );
        ctx.events.publish(&pool.object_ref(&()), EventType::Normal, Reason::ItemsAdopted, note).await;
    }
    let disputed: Vec<String> = adopted.iter().flat_map(|(_, a)| a.disputed.clone()).collect();
    if !disputed.is_empty() || !settled.is_empty() {
        let (kind, note) = match ledger.disputes().count() {
            0 => (
                EventType::Normal,
                format!("no item is in dispute any more (settled: {})", settled.join(", ")),
            ),
            n => (
                EventType::Warning,
                format!(
                    "{n} items are shown by more than one claim and given to none: {}",
                    disputed_summary(ledger)
                ),
            ),
        };
        ctx.events.publish(&pool.object_ref(&()), kind, Reason::ItemsDisputed, note).await;
    }
}

/// Shrinks as the live claims want them: a cached claim may be older than the growth
/// another replica made from a newer read, and shrinking it back would take items its
/// status already shows. Shrinks are rare, so each is read from the server.
async fn live_shrinks(ctx: &Context, ledger: &Ledger, wants: Vec<Want>) -> Result<Vec<Want>, Error> {
    let mut live = Vec::with_capacity(wants.len());
    for want in wants {
        let given = ledger.given(&want.key, &want.uid);
        let shrinking =
            !want.deleting && ledger.keeps(given, want.count, want.items.as_deref()).len() < given.len();
        let Some((namespace, name)) = want.key.split_once('/').filter(|_| shrinking) else {
            live.push(want);
            continue;
        };
        let api: Api<Claim> = Api::namespaced(ctx.client.clone(), namespace);
        // Gone or replaced: its entry is left to the pool's reconcile.
        if let Some(claim) =
            get_existing(&api, name).await?.filter(|c| c.uid().as_deref() == Some(want.uid.as_str()))
        {
            live.push(Want { starving: want.starving, allowed: want.allowed, ..want_of(&claim, ledger) });
        }
    }
    Ok(live)
}

/// The entries of another uid whose live claim (read from the server) is the one the cache
/// shows: the entry belongs to an earlier claim of the same name that is gone.
async fn stale_entries(ctx: &Context, planned: &Plan, wants: &[Want]) -> Result<Vec<String>, Error> {
    let mut stale = Vec::new();
    for key in planned.conflicts() {
        let Some((namespace, name)) = key.split_once('/') else { continue };
        let Some(want) = wants.iter().find(|w| w.key == key) else { continue };
        let api: Api<Claim> = Api::namespaced(ctx.client.clone(), namespace);
        let live = get_existing(&api, name).await?;
        if live.is_some_and(|c| c.uid().as_deref() == Some(want.uid.as_str())) {
            let held = planned.ledger.entry(key).map(|e| (e.uid.clone(), e.indices.len()));
            warn!(claim = key, stale = ?held, "freeing the entry of an earlier claim of the same name");
            stale.push(key.to_string());
        }
    }
    Ok(stale)
}

/// Logs each claim the write changed; returns how many were given items and freed.
fn log_changes(ctx: &Context, pool: &Pool, planned: &Plan, guard: &LockGuard) -> (usize, usize) {
    let (wait_ms, hold_ms) = (guard.waited().as_millis() as u64, guard.held().as_millis() as u64);
    let (backend, token) = (guard.backend().as_str(), guard.fencing_token());
    let name = pool.name_any();
    let (mut given, mut freed) = (0, 0);
    for (key, change) in planned.changed() {
        let items = planned.ledger.entry(key).map_or(0, |e| e.indices.len());
        if change.added.is_empty() && items == 0 {
            freed += 1;
            info!(claim = key, pool = %name, backend, token, wait_ms, hold_ms, items = change.removed.len(), "freed");
        } else {
            given += 1;
            info!(claim = key, pool = %name, backend, token, wait_ms, hold_ms, items, "allocated");
        }
    }
    ctx.metrics.ledger_writes.get_or_create(&by(guard.backend())).inc();
    ctx.metrics.batch_claims.observe((given + freed) as f64);
    info!(pool = %name, backend, token, wait_ms, hold_ms, claims = given + freed, free = planned.ledger.free(), "ledger written");
    (given, freed)
}

/// Waits for the pool's lock; gives up waiting (`None`) once the caches show that nothing
/// is left to do, because another replica's hold did it.
async fn acquire_unless_done(
    ctx: &Context,
    pool: &Pool,
    batch: &PoolBatch,
) -> Result<Option<LockGuard>, Error> {
    let name = pool.name_any();
    let name = name.as_str();
    let acquire = lock_pool(ctx, pool);
    tokio::pin!(acquire);
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + LOCK_WAIT_RECHECK, LOCK_WAIT_RECHECK);
    let started = Instant::now();
    let mut checked = pool.version();
    loop {
        tokio::select! {
            guard = &mut acquire => return guard.map(Some),
            _ = recheck.tick() => {
                let written = batch.state().written.clone();
                // Only another replica's ledger write can do the work: look again only when
                // the pool changed (planning thousands of claims costs milliseconds).
                let Some(pool) = Pool::newest(ctx.cached_pool(name), written).filter(|p| p.version() != checked) else { continue };
                checked = pool.version();
                if !planned(ctx, &pool)?.1 {
                    ctx.metrics.lock_waits_abandoned.inc();
                    tracing::debug!(pool = name, waited_ms = started.elapsed().as_millis() as u64, "another replica did the work; not waiting for the lock");
                    return Ok(None);
                }
            }
        }
    }
}

fn has_work(planned: &Plan) -> bool {
    planned.changes() || planned.conflicts().next().is_some()
}

/// The plan from the caches, and whether a hold has work: the plan changes the ledger, or
/// a claim shows items of a lost ledger, or a dispute can be settled.
fn planned(ctx: &Context, pool: &Pool) -> Result<(Plan, bool), Error> {
    let ledger = ctx.ledger(pool)?;
    let claims = claims_of(ctx, pool);
    let planned = plan(&ledger, &wants(ctx, &claims, pool, &ledger), Rules::of(pool));
    let cached = |key: &str| claims.iter().find(|c| c.ledger_key() == key).map(|c| &**c);
    let work = has_work(&planned)
        || (pool.may_grow() && claims.iter().any(|c| awaits_adoption(c, pool, &ledger)))
        || !settleable(&ledger, cached).is_empty();
    Ok((planned, work))
}

/// The cached claims of `pool`, oldest first. A claim being deleted takes part only if it
/// carries the finalizer of earlier versions (it lets go of its items first); any other keeps
/// what it holds, untouched, until it is gone and the pool frees its items.
fn claims_of(ctx: &Context, pool: &Pool) -> Vec<Arc<Claim>> {
    let mut claims = ctx.claims.of_pool(&pool.name_any());
    claims.retain(|c| c.metadata.deletion_timestamp.is_none() || c.has_finalizer());
    claims.sort_by_cached_key(|c| (c.metadata.creation_timestamp.as_ref().map(|t| t.0), c.ledger_key()));
    claims
}

/// What the claims want of the ledger. A claim whose items wait for adoption wants
/// nothing yet: given items now, it would hold both those and the ones it shows.
fn wants(ctx: &Context, claims: &[Arc<Claim>], pool: &Pool, ledger: &Ledger) -> Vec<Want> {
    let (bound, now) = (pool.spec.max_wait(), jiff::Timestamp::now());
    let mut admits = ctx.admission(pool);
    claims
        .iter()
        .filter(|c| !awaits_adoption(c, pool, ledger))
        .map(|c| {
            let allowed = admits(&c.namespace().unwrap_or_default());
            Want { starving: waited_past(c, bound, now), allowed, ..want_of(c, ledger) }
        })
        .collect()
}

/// A claim's want: its count, whether it is being deleted, and whether its status shows
/// no more than it keeps after the change (so that the ledger may take the rest back).
fn want_of(claim: &Claim, ledger: &Ledger) -> Want {
    let (key, uid) = (claim.ledger_key(), claim.uid().unwrap_or_default());
    let deleting = claim.metadata.deletion_timestamp.is_some();
    let count = claim.spec.count.max(0) as u32;
    let items = claim.spec.items.clone();
    let given = ledger.given(&key, &uid);
    let keeps = if deleting { Vec::new() } else { ledger.keeps(given, count, items.as_deref()) };
    let kept: HashSet<String> = ledger.describe(&keeps).0.into_iter().collect();
    let status_ready = claim.shown_items().iter().all(|item| kept.contains(item));
    Want { key, uid, count, items, deleting, status_ready, starving: false, allowed: true }
}
