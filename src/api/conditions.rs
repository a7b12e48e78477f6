//! `metav1.Condition` helpers: set a condition, keeping its transition time when the status
//! did not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::reason::Reason;

/// A claim's condition: it holds the items it asks for.
pub const BOUND: &str = "Bound";
/// A pool's conditions.
pub const READY: &str = "Ready";
pub const LEDGER_CORRUPT: &str = "LedgerCorrupt";
pub const LOCK_HEALTHY: &str = "LockHealthy";
pub const LOCK_EPOCH: &str = "LockEpoch";
pub const REMOVED_ITEMS_HELD: &str = "RemovedItemsHeld";
pub const ITEMS_DISPUTED: &str = "ItemsDisputed";
pub const LIMITS_CLAMPED: &str = "LimitsClamped";

/// A condition of `type_` with status True/False.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: Reason,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// Replaces the condition of the same type; keeps the old transition time if the status is
/// unchanged.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Equal but for transition times.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone(), c.observed_generation)
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut conditions = vec![];
        let first = condition(BOUND, false, Reason::PoolExhausted, "wait", Some(1));
        let since = first.last_transition_time.clone();
        set_condition(&mut conditions, first);
        set_condition(&mut conditions, condition(BOUND, false, Reason::PoolExhausted, "still", Some(2)));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, since);
        assert_eq!(conditions[0].message, "still");
        std::thread::sleep(std::time::Duration::from_millis(2));
        set_condition(&mut conditions, condition(BOUND, true, Reason::Allocated, "ok", Some(2)));
        assert_ne!(conditions[0].last_transition_time, since);
        assert!(is_true(&conditions, BOUND));
    }
}
