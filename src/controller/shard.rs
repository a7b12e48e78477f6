//! Which replica serves which pool: each pool goes to one live member by rendezvous hashing
//! (the member with the highest weight for the pool), so that a member joining or leaving moves
//! only its own share of the pools. The pool's lock stays the fence: two replicas that both
//! believe they serve a pool while a move settles are still safe, they only duplicate work.

use std::collections::BTreeSet;

/// The member that serves pool `pool` among `members`.
pub fn owner<'a>(pool: &str, members: &'a [String]) -> Option<&'a str> {
    members.iter().max_by_key(|member| (weight(pool, member), member.as_str())).map(String::as_str)
}

/// The pools of `pools` whose owner is `me` under `now` but was not under `before`.
pub fn gained<'a>(
    pools: impl IntoIterator<Item = &'a str>,
    before: &[String],
    now: &[String],
    me: &str,
) -> Vec<&'a str> {
    pools.into_iter().filter(|pool| owner(pool, now) == Some(me) && owner(pool, before) != Some(me)).collect()
}

/// The pools of `pools` that another of `members` serves (by name, at most `most` of them):
/// those whose claims `me` need not watch.
pub fn served_by_others<'a>(
    pools: impl IntoIterator<Item = &'a str>,
    members: &[String],
    me: &str,
    most: usize,
) -> BTreeSet<String> {
    let others: BTreeSet<&str> =
        pools.into_iter().filter(|pool| owner(pool, members).is_some_and(|o| o != me)).collect();
    others.into_iter().take(most).map(String::from).collect()
}

/// A 64-bit hash of (pool, member) that every replica and every version computes alike (std's
/// hasher makes no such promise): FNV-1a, then splitmix64's finalizer to spread its bits.
fn weight(pool: &str, member: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in pool.bytes().chain([0]).chain(member.bytes()) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn pools(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("pool-{i}")).collect()
    }

    #[test]
    fn every_pool_has_one_owner_and_the_shares_are_even() {
        let three = members(&["lockguard-a1b2", "lockguard-c3d4", "lockguard-e5f6"]);
        let pools = pools(600);
        for member in &three {
            let share = pools.iter().filter(|p| owner(p, &three) == Some(member.as_str())).count();
            assert!((150..=250).contains(&share), "{member} serves {share} of 600 pools");
        }
        assert_eq!(owner("p", &[]), None);
        assert_eq!(owner("p", &members(&["only"])), Some("only"));
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_members_are_listed_in() {
        let (a, b) = (members(&["x", "y", "z"]), members(&["z", "x", "y"]));
        for pool in pools(100) {
            assert_eq!(owner(&pool, &a), owner(&pool, &b));
        }
    }

    #[test]
    fn a_member_leaving_or_joining_moves_only_its_own_share() {
        let (three, two) = (members(&["a", "b", "c"]), members(&["a", "b"]));
        let pools = pools(300);
        for pool in &pools {
            let before = owner(pool, &three);
            if before != Some("c") {
                assert_eq!(owner(pool, &two), before, "{pool} moved though its owner stayed");
            }
        }
        // Joining: "c" gains exactly the pools it owns among three, nobody else gains any.
        let names = pools.iter().map(String::as_str);
        let gained_by_c = gained(names.clone(), &two, &three, "c");
        let owned_by_c = pools.iter().filter(|p| owner(p, &three) == Some("c")).count();
        assert_eq!(gained_by_c.len(), owned_by_c);
        assert!(gained(names, &two, &three, "a").is_empty());
    }

    #[test]
    fn a_member_leaves_out_exactly_the_pools_the_others_serve() {
        let three = members(&["a", "b", "c"]);
        let pools = pools(90);
        let names = || pools.iter().map(String::as_str);
        let left_out = served_by_others(names(), &three, "a", usize::MAX);
        for pool in &pools {
            assert_eq!(left_out.contains(pool), owner(pool, &three) != Some("a"), "{pool}");
        }
        assert!(served_by_others(names(), &members(&["a"]), "a", usize::MAX).is_empty());
        let few = served_by_others(names(), &three, "a", 5);
        assert_eq!(few.len(), 5);
        assert!(few.is_subset(&left_out), "a shorter list leaves out fewer, never a pool of its own");
    }
}
