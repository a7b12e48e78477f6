//! Reconciling a Pool: keep its status true to its spec and ledger (capacity, free,
//! conditions), and free ledger entries whose claims are gone without their finalizer.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::claim::{ledger_of, lock_pool, write_ledger};
use super::context::Context;
use super::{Error, backoff};
use crate::api::{Claim, Pool, condition, set_condition};
use crate::ledger::Ledger;

/// How often a pool is checked for entries of vanished claims.
const RESYNC: Duration = Duration::from_secs(60);

pub async fn reconcile(pool: Arc<Pool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_pool(&pool, &ctx).await;
    ctx.metrics.reconciled("pool", started.elapsed().as_secs_f64(), result.as_ref().err().map(Error::kind));
    result
}

async fn reconcile_pool(pool: &Pool, ctx: &Context) -> Result<Action, Error> {
    let ledger = match ledger_of(pool) {
        Ok(l) => l,
        Err(e) => {
            warn!(pool = %pool.name_any(), error = %e, "corrupt ledger; not touching it");
            ctx.event(&pool.object_ref(&()), EventType::Warning, "LedgerCorrupt", e.to_string()).await;
            return Ok(Action::requeue(RESYNC));
        }
    };
    let gone = vanished_claims(&ledger, ctx).await?;
    let status = pool.status.clone().unwrap_or_default();
    let current = status.observed_generation == pool.metadata.generation
        && status.capacity == ledger.capacity() as i32
        && status.free == ledger.free() as i32;
    if current && gone.is_empty() {
        ctx.succeeded(&pool.name_any());
        return Ok(Action::requeue(RESYNC));
    }

    let guard = match lock_pool(ctx, pool).await {
        Ok(g) => g,
        Err(e) => {
            warn!(pool = %pool.name_any(), error = %e, "pool lock unavailable");
            ctx.event(&pool.object_ref(&()), EventType::Warning, "LockUnavailable", e.to_string()).await;
            return Err(e);
        }
    };
    let result: Result<usize, Error> = async {
        let pools: Api<Pool> = Api::all(ctx.client.clone());
        let mut fresh = pools.get(&pool.name_any()).await?;
        let mut ledger = ledger_of(&fresh)?;
        let mut freed = 0;
        for claim in vanished_claims(&ledger, ctx).await? {
            let (next, items) = ledger.release(&claim);
            freed += items.len();
            info!(pool = %fresh.name_any(), claim = %claim, items = items.len(), "freed the items of a claim that no longer exists");
            ledger = next;
        }
        let status = fresh.status.get_or_insert_with(Default::default);
        status.observed_generation = fresh.metadata.generation;
        let ready = condition("Ready", true, "LedgerConsistent", format!("{} of {} items free", ledger.free(), ledger.capacity()), fresh.metadata.generation);
        set_condition(&mut status.conditions, ready);
        write_ledger(ctx, &fresh, &ledger, &guard).await.map(|_| freed)
    }
    .await;
    ctx.unlock(guard).await;
    if let Err(Error::Fenced { token, by, .. }) = &result {
        let note = format!(
            "status write with token {token} rejected by the API server ({by}); this replica had lost its lock"
        );
        ctx.event(&pool.object_ref(&()), EventType::Warning, "FencedWriteRejected", note).await;
    }
    let freed = result?;
    if freed > 0 {
        let note = format!("freed {freed} items of claims that no longer exist");
        ctx.event(&pool.object_ref(&()), EventType::Normal, "Freed", note).await;
    }
    ctx.succeeded(&pool.name_any());
    Ok(Action::requeue(RESYNC))
}

pub fn error_policy(pool: Arc<Pool>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = backoff(ctx.failed(&pool.name_any()), Duration::from_secs(30));
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
        let live = api.get_opt(name).await?;
        if live.is_none_or(|c| c.uid().as_deref() != Some(entry.uid.as_str())) {
            gone.push(key.to_string());
        }
    }
    Ok(gone)
}
