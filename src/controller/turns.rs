//! Turns to hold a pool's lock. Each hold keeps API requests (and their connections) in
//! flight: 200 pools held at once made a replica slower, not faster. The API server is shared,
//! so the replicas share [`HOLDS_AT_ONCE`] between them, each in proportion to the pools it
//! serves: an even split gave the replica with the most pools (73 of 200 among three) the
//! longest wait between two holds of a pool (9.8 s, against 7.5–8.2 s for one replica alone),
//! and its claims the longest wait for items.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::{Semaphore, SemaphorePermit};

use super::policy::HOLDS_AT_ONCE;

/// How many pools a replica that serves `served` of `known` pools holds at once: its share of
/// [`HOLDS_AT_ONCE`], to the nearest turn, so that the replicas hold about as many pools at
/// once between them as one replica alone (more holds at once make smaller batches: more
/// ledger writes for the same claims); at least one; with no pools known (or not sharded),
/// all of them.
pub fn holds_at_once(served: usize, known: usize) -> usize {
    if known == 0 {
        return HOLDS_AT_ONCE;
    }
    let share = HOLDS_AT_ONCE * served.min(known);
    ((share + known / 2) / known).clamp(1, HOLDS_AT_ONCE)
}

/// At most `limit` holds at once, where each taker says the limit it wants now: a lower one
/// takes effect as holds end (a hold under way is never cut short), a higher one at once.
pub struct Turns {
    free: Semaphore,
    size: Mutex<Size>,
}

struct Size {
    limit: usize,
    /// Turns to drop as the holds that have them end, once the limit went down.
    owed: usize,
}

/// One pool's hold may run while this lives.
pub struct Turn<'a> {
    turns: &'a Turns,
    permit: Option<SemaphorePermit<'a>>,
}

impl Default for Turns {
    fn default() -> Self {
        Self { free: Semaphore::new(HOLDS_AT_ONCE), size: Mutex::new(Size { limit: HOLDS_AT_ONCE, owed: 0 }) }
    }
}

impl Turns {
    /// Waits for a turn, with at most `limit` (at least one) taken at once.
    pub async fn take(&self, limit: usize) -> Option<Turn<'_>> {
        self.resize(limit.max(1));
        let permit = self.free.acquire().await.ok()?;
        Some(Turn { turns: self, permit: Some(permit) })
    }

    fn resize(&self, limit: usize) {
        let mut size = self.size();
        if limit > size.limit {
            let grow = limit - size.limit;
            let cancelled = grow.min(size.owed);
            size.owed -= cancelled;
            self.free.add_permits(grow - cancelled);
        } else if limit < size.limit {
            let shrink = size.limit - limit;
            size.owed += shrink - self.free.forget_permits(shrink);
        }
        size.limit = limit;
    }

    fn size(&self) -> MutexGuard<'_, Size> {
        self.size.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut size = self.turns.size();
        if let Some(permit) = self.permit.take()
            && size.owed > 0
        {
            size.owed -= 1;
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_replica_holds_its_share_of_the_pools() {
        // One replica, or not divided: every turn.
        assert_eq!(holds_at_once(200, 200), HOLDS_AT_ONCE);
        assert_eq!(holds_at_once(0, 0), HOLDS_AT_ONCE);
        // Three replicas as rendezvous hashing divided 200 pools in two benchmark runs: 16
        // turns between them, as one replica alone has, and each within a few per cent of one
        // replica's pools per turn (200/16 = 12.5): the larger share, the more turns.
        for division in [[73, 62, 65], [70, 50, 80]] {
            let turns = division.map(|served| holds_at_once(served, 200));
            assert_eq!(turns.iter().sum::<usize>(), HOLDS_AT_ONCE, "{division:?}: {turns:?}");
            for (served, turns) in division.iter().zip(turns) {
                let per_turn = *served as f64 / turns as f64;
                assert!((11.5..=13.5).contains(&per_turn), "{served} pools, {turns} turns");
            }
        }
        assert_eq!(holds_at_once(73, 200), 6);
        assert_eq!(holds_at_once(62, 200), 5);
        // Serving none yet, or a few of many pools: still one at a time.
        assert_eq!(holds_at_once(0, 200), 1);
        assert_eq!(holds_at_once(1, 10_000), 1);
        // A pool known to this replica only (its listing is newer): never above all turns.
        assert_eq!(holds_at_once(300, 200), HOLDS_AT_ONCE);
    }

    /// Turns taken at once with `limit`, holding `held` already.
    async fn take_all<'a>(turns: &'a Turns, limit: usize, held: &mut Vec<Turn<'a>>) -> usize {
        let before = held.len();
        while let Ok(Some(turn)) = tokio::time::timeout(Duration::from_millis(20), turns.take(limit)).await {
            held.push(turn);
        }
        held.len() - before
    }

    #[tokio::test]
    async fn a_lower_limit_takes_effect_as_holds_end_a_higher_one_at_once() {
        let turns = Turns::default();
        let mut held = Vec::new();
        assert_eq!(take_all(&turns, HOLDS_AT_ONCE, &mut held).await, HOLDS_AT_ONCE);
        // Down to 5 while 16 hold: no hold is cut short, and none starts until 11 ended.
        assert_eq!(take_all(&turns, 5, &mut held).await, 0);
        held.truncate(5);
        assert_eq!(take_all(&turns, 5, &mut held).await, 0);
        held.truncate(4);
        assert_eq!(take_all(&turns, 5, &mut held).await, 1);
        // Up to 6: one more at once.
        assert_eq!(take_all(&turns, 6, &mut held).await, 1);
        // Down to 2 with nobody holding: the free turns go at once.
        held.clear();
        assert_eq!(take_all(&turns, 2, &mut held).await, 2);
        // Down to 1 and up to 3 before any hold ended: what was owed is cancelled first.
        assert_eq!(take_all(&turns, 1, &mut held).await, 0);
        assert_eq!(take_all(&turns, 3, &mut held).await, 1);
        held.clear();
        assert_eq!(take_all(&turns, 3, &mut held).await, 3);
    }
}
