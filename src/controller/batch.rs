//! One hold of a pool's lock serves every claim of the pool: the I/O around
//! [`plan`](super::plan::plan). A replica takes the lock only when its caches show work the
//! ledger does not reflect yet, stops waiting for it once they show the work done by
//! another replica, and runs one hold per pool at a time: reconciles of the same pool that
//! arrive meanwhile find their work done by the hold before them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::claim::ledger_key;
use super::context::{Context, newest};
use super::plan::{Outcome, Plan, Want, plan};
use super::pool_ledger::{is_deleting, is_protected, ledger_of, lock_pool, write_ledger};
use super::{Error, FINALIZER, get_existing};
use crate::api::{Claim, Pool};
use crate::ledger::Ledger;
use crate::lock::LockGuard;

/// How often a replica waiting for a pool's lock looks whether its caches show the work
/// done by the holder, so that it can stop waiting.
const RECHECK: Duration = Duration::from_millis(50);

/// Per pool: one hold at a time on this replica, and the pool as this replica last wrote it
/// (newer than the cache until the watch delivers it).
#[derive(Default)]
pub struct Batches {
    pools: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Pool>>>>>,
}

impl Batches {
    fn slot(&self, pool: &str) -> Arc<tokio::sync::Mutex<Option<Pool>>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(pool.to_string()).or_default().clone()
    }

    /// Forgets a pool that is gone.
    pub fn forget(&self, pool: &str) {
        self.pools.lock().unwrap_or_else(|e| e.into_inner()).remove(pool);
    }
}

/// What [`settle`] found.
pub enum Settled {
    /// The newest copy of the pool this replica knows of.
    Pool(Box<Pool>),
    /// The pool does not exist.
    NoPool,
    /// A hold of this pool is under way on this replica; it serves this claim too if its
    /// cache showed it, else the next one does. Try again in a moment rather than wait:
    /// a reconcile waiting here would keep a worker from other claims.
    Busy,
}

/// Brings pool `name`'s ledger as far towards what its claims want as it can go, unless the
/// caches show it there already. `claim`, as its reconcile last read or wrote it, stands in
/// for the cached copy when newer.
pub async fn settle(ctx: &Context, name: &str, claim: &Claim) -> Result<Settled, Error> {
    let slot = ctx.batches.slot(name);
    let Ok(mut last_written) = slot.try_lock() else { return Ok(Settled::Busy) };
    let found = |pool: Option<Pool>| pool.map_or(Settled::NoPool, |p| Settled::Pool(Box::new(p)));
    let Some(pool) = newest(ctx.pool(name).await?, last_written.clone()) else { return Ok(Settled::NoPool) };
    if !has_work(&pool, &wants(ctx, &pool, Some(claim)))? {
        return Ok(found(Some(pool)));
    }
    let Some(guard) = acquire_unless_done(ctx, &pool, claim, last_written.as_ref()).await? else {
        return Ok(found(newest(ctx.cached_pool(name), last_written.clone())));
    };
    let result = hold(ctx, name, claim, &guard).await;
    let lost = guard.is_lost();
    let token = guard.fencing_token();
    ctx.unlock(guard).await;
    match result {
        Ok(pool) => {
            if pool.is_some() {
                last_written.clone_from(&pool);
            }
            Ok(found(pool))
        }
        Err(Error::Fenced { pool, token, by }) => {
            let note = format!(
                "ledger write of pool {pool} with token {token} rejected by the API server ({by}); this replica had lost its lock (lost={lost})"
            );
            ctx.event(&claim.object_ref(&()), EventType::Warning, "FencedWriteRejected", note).await;
            Err(Error::Fenced { pool, token, by })
        }
        Err(e) => {
            warn!(pool = name, token, error = %e, "batch failed");
            Err(e)
        }
    }
}

/// Under the lock: read the pool, plan for every claim the cache shows, settle entries of
/// another uid by reading those claims, write the ledger once.
async fn hold(ctx: &Context, name: &str, claim: &Claim, guard: &LockGuard) -> Result<Option<Pool>, Error> {
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    let Some(pool) = get_existing(&pools, name).await? else { return Ok(None) };
    let wants = wants(ctx, &pool, Some(claim));
    let mut ledger = ledger_of(&pool)?;
    let mut planned = plan(&ledger, &wants, may_grow(&pool));
    let stale = stale_entries(ctx, &planned, &wants).await?;
    if !stale.is_empty() {
        for key in &stale {
            ledger.remove(key);
        }
        planned = plan(&ledger, &wants, may_grow(&pool));
    }
    if !planned.changes() && stale.is_empty() {
        return Ok(Some(pool)); // another replica did it while this one waited
    }
    let written = write_ledger(ctx, &pool, &planned.ledger, guard, |_| {}).await?;
    log_changes(ctx, &written, &planned, guard);
    Ok(Some(written))
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

fn log_changes(ctx: &Context, pool: &Pool, planned: &Plan, guard: &LockGuard) {
    let (wait_ms, hold_ms) = (guard.waited().as_millis() as u64, guard.held().as_millis() as u64);
    let (backend, token) = (guard.backend().as_str(), guard.fencing_token());
    let name = pool.name_any();
    let mut claims = 0;
    for (key, change) in planned.changed() {
        claims += 1;
        let items = planned.ledger.entry(key).map_or(0, |e| e.indices.len());
        if change.added.is_empty() && items == 0 {
            info!(claim = key, pool = %name, backend, token, wait_ms, hold_ms, items = change.removed.len(), "freed");
        } else {
            info!(claim = key, pool = %name, backend, token, wait_ms, hold_ms, items, "allocated");
        }
    }
    ctx.metrics.ledger_writes.get_or_create(&crate::metrics::by(guard.backend())).inc();
    ctx.metrics.batch_claims.observe(f64::from(claims));
    info!(pool = %name, backend, token, wait_ms, hold_ms, claims, free = planned.ledger.free(), "ledger written");
}

/// Waits for the pool's lock; gives up waiting (`None`) once the caches show that nothing
/// is left to do, because another replica's hold did it.
async fn acquire_unless_done(
    ctx: &Context,
    pool: &Pool,
    claim: &Claim,
    last_written: Option<&Pool>,
) -> Result<Option<LockGuard>, Error> {
    let acquire = lock_pool(ctx, pool);
    tokio::pin!(acquire);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    let started = Instant::now();
    loop {
        tokio::select! {
            guard = &mut acquire => return guard.map(Some),
            _ = recheck.tick() => {
                let Some(newest) = newest(ctx.cached_pool(&pool.name_any()), last_written.cloned()) else { continue };
                if !has_work(&newest, &wants(ctx, &newest, Some(claim)))? {
                    ctx.metrics.lock_waits_abandoned.inc();
                    tracing::debug!(pool = %pool.name_any(), waited_ms = started.elapsed().as_millis() as u64, "another replica did the work; not waiting for the lock");
                    return Ok(None);
                }
            }
        }
    }
}

fn has_work(pool: &Pool, wants: &[Want]) -> Result<bool, Error> {
    let planned = plan(&ledger_of(pool)?, wants, may_grow(pool));
    Ok(planned.changes() || planned.conflicts().next().is_some())
}

/// Claims get items only from a pool that is not being deleted and carries its deletion
/// protection: a pool that could vanish with its ledger would leave its claims holding
/// items nobody records.
pub fn may_grow(pool: &Pool) -> bool {
    !is_deleting(pool) && is_protected(pool)
}

/// What the cached claims of `pool` want, oldest first; `claim` replaces its cached copy
/// when it is newer. Only claims that carry the finalizer take part: a claim without it
/// could go without giving its items back.
pub fn wants(ctx: &Context, pool: &Pool, claim: Option<&Claim>) -> Vec<Want> {
    let name = pool.name_any();
    let mut claims: Vec<Arc<Claim>> =
        ctx.claims.state().into_iter().filter(|c| c.spec.pool_ref == name).collect();
    if let Some(own) = claim.filter(|c| c.spec.pool_ref == name) {
        let key = ledger_key(own);
        match claims.iter_mut().find(|c| ledger_key(c) == key) {
            Some(cached) if version(cached) <= version(own) => *cached = Arc::new(own.clone()),
            Some(_) => {}
            None => claims.push(Arc::new(own.clone())),
        }
    }
    claims.sort_by(|a, b| {
        let age = |c: &Claim| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
        age(a).cmp(&age(b)).then_with(|| ledger_key(a).cmp(&ledger_key(b)))
    });
    let ledger = ledger_of(pool).unwrap_or_else(|_| Ledger::empty(0));
    claims
        .iter()
        .filter(|c| c.finalizers().iter().any(|f| f == FINALIZER))
        .map(|c| want_of(c, pool, &ledger))
        .collect()
}

fn version(claim: &Claim) -> u64 {
    claim.resource_version().and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// A claim's want: its count, whether it is being deleted, and whether its status shows
/// no more than it keeps after the change (so that the ledger may take the rest back).
pub fn want_of(claim: &Claim, pool: &Pool, ledger: &Ledger) -> Want {
    let (key, uid) = (ledger_key(claim), claim.uid().unwrap_or_default());
    let deleting = claim.metadata.deletion_timestamp.is_some();
    let count = claim.spec.count.max(0) as u32;
    let given = ledger.given(&key, &uid);
    let keeps = if deleting { &[][..] } else { &given[..given.len().min(count as usize)] };
    let kept: HashSet<String> = pool.spec.items.describe(keeps).0.into_iter().collect();
    let shown = claim.status.as_ref().map(|s| s.items.as_slice()).unwrap_or_default();
    let status_ready = shown.iter().all(|item| kept.contains(item));
    Want { key, uid, count, deleting, status_ready }
}

/// The outcome of the plan for `claim` on `pool`, as the caches show the other claims.
pub fn outcome_for(ctx: &Context, pool: &Pool, claim: &Claim) -> Result<Outcome, Error> {
    let planned = plan(&ledger_of(pool)?, &wants(ctx, pool, Some(claim)), may_grow(pool));
    Ok(planned.outcomes.get(&ledger_key(claim)).cloned().unwrap_or(Outcome::Unchanged))
}
