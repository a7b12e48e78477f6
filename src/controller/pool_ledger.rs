//! The I/O around a pool's ledger that both controllers share: lock the pool, read its
//! ledger, write it fenced, and say when a pool is corrupt.

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use std::time::Duration;

use super::context::Context;
use super::epoch::{next_epoch, went_back};
use super::error::Error;
use crate::api::{
    FenceRule, ITEMS_DISPUTED, LEDGER_CORRUPT, LIMITS_CLAMPED, LOCK_EPOCH, LOCK_HEALTHY, Pool, PoolStatus,
    READY, REMOVED_ITEMS_HELD, Reason, condition, same_conditions, set_condition,
};
use crate::failpoint;
use crate::ledger::{LEDGER_FORMAT, Ledger, LedgerError, namespace_of};
use crate::metrics::by as by_backend;
use lockguard_lock::LockGuard;

pub async fn lock_pool(ctx: &Context, pool: &Pool) -> Result<LockGuard, Error> {
    Ok(ctx.locks.lock(&pool.name_any(), &pool.spec.lock).await?)
}

/// The pool's ledger, or an error that names the pool.
pub fn ledger_of(pool: &Pool) -> Result<Ledger, Error> {
    pool.ledger().map_err(|source| Error::Ledger { pool: pool.name_any(), source })
}

/// Writes `ledger` into the pool's status with the lock's token and the resourceVersion it
/// was read at. The API server refuses it when the version moved on (409) or when the stored
/// token is newer (422: the CRD's transition rule). `edit` sets conditions of the same write.
pub async fn write_ledger(
    ctx: &Context,
    pool: &Pool,
    ledger: &Ledger,
    guard: &LockGuard,
    edit: impl FnOnce(&mut PoolStatus),
) -> Result<Pool, Error> {
    let pools: Api<Pool> = Api::all(ctx.client.clone());
    // The token belongs to the guard's backend: if the pool moved to another backend since
    // the lock was taken, this write must not happen at all (retried under the new lock).
    let held = guard.backend();
    if held != pool.spec.lock.backend {
        return Err(Error::BackendChanged { pool: pool.name_any(), held, wanted: pool.spec.lock.backend });
    }
    let stored = pool.status.clone().unwrap_or_default();
    let requested = pool.epoch_requested();
    let same_service = stored.lock_service.as_deref() == Some(guard.token_space());
    // Every write of this epoch would be refused if the service went back in time (restored
    // from a backup): that opens a new epoch, like an administrator's request.
    let back_in_time = !fence_off()
        && same_service
        && stored.fencing_token.is_some_and(|t| t > guard.fencing_token() as i64)
        && went_back(stored.fencing_token, guard.fencing_token(), ctx.locks.issued_up_to(held).await?);
    if back_in_time {
        warn!(
            pool = %pool.name_any(),
            stored = ?stored.fencing_token,
            token = guard.fencing_token(),
            "the lock service went back in time (restored from a backup?): the stored token is above every token it has issued; opening a new lock epoch"
        );
    }
    let epoch = next_epoch(
        stored.lock_epoch,
        stored.lock_service.as_deref(),
        guard.token_space(),
        requested.is_some() || back_in_time,
    );
    // Another lock service waits until the old one was quiet for a TTL; a new epoch asked for,
    // or forced by a service back in time, under the same service needs no wait: this replica
    // holds its lock.
    if epoch.advance && !((requested.is_some() || back_in_time) && same_service) {
        let ttl = Duration::from_secs(pool.spec.lock.ttl_seconds.max(0) as u64);
        let quiet = ctx.quiet.unchanged_for(&pool.name_any(), &pool.resource_version().unwrap_or_default());
        if quiet < ttl {
            return Err(Error::EpochWait { pool: pool.name_any(), wait: ttl - quiet });
        }
    }
    let mut next = pool.clone();
    let status = next.status.get_or_insert_with(PoolStatus::default);
    status.lock_epoch = Some(epoch.number);
    status.lock_service = Some(guard.token_space().to_string());
    if let Some(request) = requested {
        status.epoch_request = Some(request.to_string());
    }
    if epoch.advance {
        let why = if back_in_time { " (the lock service went back in time)" } else { "" };
        let message = format!(
            "lock epoch {} under {}{why}; epoch {} under {} is closed",
            epoch.number,
            guard.token_space(),
            epoch.number - 1,
            stored.lock_service.as_deref().unwrap_or("none")
        );
        set_condition(
            &mut status.conditions,
            condition(LOCK_EPOCH, true, Reason::EpochAdvanced, message, pool.metadata.generation),
        );
    }
    status.ledger = ledger.to_status();
    status.ledger_format = Some(LEDGER_FORMAT);
    status.removed_held = Some(ledger.removed_held() as i32);
    set_condition(&mut status.conditions, removed_items_condition(ledger, pool.metadata.generation));
    status.disallowed_held = Some(disallowed_held(ctx, pool, ledger) as i32);
    set_condition(&mut status.conditions, limits_condition(pool));
    status.disputed = ledger.disputes_to_status();
    set_condition(&mut status.conditions, disputes_condition(ledger, pool.metadata.generation));
    status.capacity = ledger.capacity() as i32;
    status.allocated = ledger.allocated() as i32;
    status.free = ledger.free() as i32;
    status.fencing_token = Some(guard.fencing_token() as i64);
    status.lock_backend = Some(held);
    status.lock_holder = Some(ctx.identity().to_string());
    set_condition(
        &mut status.conditions,
        condition(
            LOCK_HEALTHY,
            true,
            Reason::LockAcquired,
            format!("ledger written under token {}", guard.fencing_token()),
            pool.metadata.generation,
        ),
    );
    edit(status);
    failpoint::before_ledger_write(&pool.name_any(), guard.fencing_token());
    #[cfg(feature = "failpoints")]
    if failpoint::enabled(failpoint::FENCE_OFF) {
        return write_unfenced(&pools, next).await;
    }
    // Every writer of a ledger holds the pool's lock, so under the lock a moved version
    // (409) means another replica wrote: this one lost its lock, just like a lower token. A
    // merge patch leaves the fields this version does not know as they are (a replica of a
    // newer version may have written them); the resourceVersion in it is the precondition.
    let patch = json!({
        "metadata": { "resourceVersion": pool.resource_version() },
        "status": next.status,
    });
    let name = pool.name_any();
    // The first write of format 2 goes as a dry run first: an API server that still serves an
    // older Pool CRD (just after `kubectl apply` of new CRDs and a new Deployment at once) drops
    // the fields it does not know, and the ledger would name no items at all.
    let migrating = stored.ledger_format != Some(LEDGER_FORMAT);
    let written = if migrating {
        match pools.patch_status(&name, &PatchParams::default().dry_run(), &Patch::Merge(&patch)).await {
            Ok(probe) if probe.status.as_ref().and_then(|s| s.ledger_format) == Some(LEDGER_FORMAT) => {
                pools.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
            }
            Ok(_) => {
                let message = "status.ledgerFormat was dropped by the schema".to_string();
                return Err(Error::OutdatedCrd { pool: name, message });
            }
            Err(e) => Err(e),
        }
    } else {
        pools.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await
    };
    let by = match written {
        Ok(written) => {
            if epoch.advance {
                let note = format!(
                    "lock epoch {} begins under {} (token {}); writes of epoch {} are refused from now on",
                    epoch.number,
                    guard.token_space(),
                    guard.fencing_token(),
                    epoch.number - 1
                );
                info!(pool = %name, epoch = epoch.number, service = guard.token_space(), "{note}");
                ctx.events
                    .publish(&pool.object_ref(&()), EventType::Normal, Reason::LockEpochAdvanced, note)
                    .await;
            }
            return Ok(written);
        }
        Err(kube::Error::Api(e)) if e.code == 409 => "resourceVersion precondition",
        Err(kube::Error::Api(e)) if e.code == 422 && FenceRule::refused(&e.message).is_some() => {
            FenceRule::refused(&e.message).map_or("fencing rule", FenceRule::name)
        }
        Err(e) => return Err(e.into()),
    };
    ctx.metrics.fenced_rejections.get_or_create(&by_backend(guard.backend())).inc();
    warn!(pool = %pool.name_any(), token = guard.fencing_token(), by, lost = guard.is_lost(), "fenced ledger write rejected: another replica wrote the ledger under a newer lock");
    Err(Error::Fenced { pool: pool.name_any(), token: guard.fencing_token(), by })
}

/// The negative control (a test build only) writes without any token logic: not even the
/// check for a lock service back in time, whose extra etcd read would spare a partitioned
/// replica its stale write.
fn fence_off() -> bool {
    #[cfg(feature = "failpoints")]
    return failpoint::enabled(failpoint::FENCE_OFF);
    #[cfg(not(feature = "failpoints"))]
    false
}

/// Whether the ledger holds items removed from the spec: they stay with their claims until
/// released and are never given again, and the pool says how many there are.
pub fn removed_items_condition(
    ledger: &Ledger,
    generation: Option<i64>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    match ledger.removed_held() {
        0 => condition(
            REMOVED_ITEMS_HELD,
            false,
            Reason::AllHeldItemsInSpec,
            "every held item is in spec.items",
            generation,
        ),
        n => condition(
            REMOVED_ITEMS_HELD,
            true,
            Reason::RemovedItemsStillHeld,
            format!(
                "{n} items removed from spec.items are still held; they stay with their claims until released and are never given out again"
            ),
            generation,
        ),
    }
}

/// Items held by claims of namespaces the pool no longer admits.
pub fn disallowed_held(ctx: &Context, pool: &Pool, ledger: &Ledger) -> u32 {
    if !pool.spec.selects_namespaces() {
        return 0;
    }
    let mut admits = ctx.admission(pool);
    ledger
        .claims()
        .filter(|(key, _)| !admits(namespace_of(key)))
        .map(|(_, entry)| entry.indices.len() as u32)
        .sum()
}

/// Whether a per-namespace limit is above what the pool can give, and so clamped.
pub fn limits_condition(pool: &Pool) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let generation = pool.metadata.generation;
    match pool.spec.limits.and_then(|l| l.clamped(pool.spec.items.capacity())) {
        Some(message) => condition(LIMITS_CLAMPED, true, Reason::LimitAboveCapacity, message, generation),
        None => {
            let message = "the per-namespace limits apply as written";
            condition(LIMITS_CLAMPED, false, Reason::LimitsWithinCapacity, message, generation)
        }
    }
}

/// Whether items are in dispute: shown by several claims when the ledger was rebuilt from
/// them, given to none.
pub fn disputes_condition(
    ledger: &Ledger,
    generation: Option<i64>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    match ledger.disputes().count() {
        0 => condition(
            ITEMS_DISPUTED,
            false,
            Reason::NoItemDisputed,
            "no item is shown by two claims",
            generation,
        ),
        n => condition(
            ITEMS_DISPUTED,
            true,
            Reason::ItemsDisputed,
            format!(
                "{n} items are shown by more than one claim and given to none of them, nor to any other claim, until all but one let go: {}",
                disputed_summary(ledger)
            ),
            generation,
        ),
    }
}

/// The first few disputed items and the claims that show each.
pub fn disputed_summary(ledger: &Ledger) -> String {
    let mut parts: Vec<String> = ledger
        .disputes()
        .take(5)
        .map(|(item, parties)| {
            let claims: Vec<&str> = parties.iter().map(|p| p.claim.as_str()).collect();
            format!("{item} ({})", claims.join(", "))
        })
        .collect();
    let n = ledger.disputes().count();
    if n > parts.len() {
        parts.push(format!("… {} more", n - parts.len()));
    }
    parts.join("; ")
}

/// The negative control (a test build only): a merge patch without the resourceVersion precondition, and with
/// the largest token there is, so the API server's token rules let every write through.
#[cfg(feature = "failpoints")]
async fn write_unfenced(pools: &Api<Pool>, mut next: Pool) -> Result<Pool, Error> {
    if let Some(status) = next.status.as_mut() {
        status.fencing_token = Some(i64::MAX);
    }
    let patch = json!({ "status": next.status });
    Ok(pools.patch_status(&next.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?)
}

/// Says on the pool that its lock cannot be taken: `LockHealthy=False` (`LockUnavailable`,
/// with the error, which says what to do when the lock etcd is out of space) and an Event,
/// when that is news. The next ledger write sets it back. Written only on the pool as read
/// (resourceVersion), so that it never hides a newer write's conditions.
pub async fn report_lock_unavailable(ctx: &Context, pool: &Pool, error: &Error) -> Result<(), Error> {
    let generation = pool.metadata.generation;
    let mut conditions = pool.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let before = conditions.clone();
    let message = error.to_string();
    set_condition(
        &mut conditions,
        condition(LOCK_HEALTHY, false, Reason::LockUnavailable, message.clone(), generation),
    );
    if same_conditions(&before, &conditions) {
        return Ok(());
    }
    let patch = json!({
        "metadata": { "resourceVersion": pool.resource_version() },
        "status": { "conditions": conditions },
    });
    let name = pool.name_any();
    match Api::<Pool>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()), // a newer write said more
        Err(e) => return Err(e.into()),
    }
    ctx.events.publish(&pool.object_ref(&()), EventType::Warning, Reason::LockUnavailable, message).await;
    Ok(())
}

/// Marks a pool whose ledger cannot be read: `Ready=False` and `LedgerCorrupt=True` with
/// the error (which names the entry), an Event when that is news, and the metric. The
/// ledger itself is not written: only a person can tell which entry is right.
pub async fn report_corrupt(ctx: &Context, pool: &Pool, error: &LedgerError) -> Result<(), Error> {
    let name = pool.name_any();
    let message = format!(
        "the ledger cannot be read: {error}; no allocation from this pool until an administrator repairs the entry in its status (see the README)"
    );
    let generation = pool.metadata.generation;
    let mut conditions = pool.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let before = conditions.clone();
    set_condition(
        &mut conditions,
        condition(READY, false, Reason::LedgerCorrupt, message.clone(), generation),
    );
    set_condition(
        &mut conditions,
        condition(LEDGER_CORRUPT, true, Reason::LedgerCorrupt, message.clone(), generation),
    );
    if same_conditions(&before, &conditions) {
        return Ok(());
    }
    warn!(pool = %name, %error, "corrupt ledger; not touching it");
    // A merge patch of the conditions only: the ledger and the fencing token stay as they are.
    let patch = json!({ "status": { "conditions": conditions } });
    Api::<Pool>::all(ctx.client.clone())
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.events.publish(&pool.object_ref(&()), EventType::Warning, Reason::LedgerCorrupt, message).await;
    Ok(())
}
