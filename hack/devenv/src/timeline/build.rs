//! Lock events of several replicas → holds (intervals per pool and replica), freezes and
//! refused writes.

use std::collections::{BTreeSet, HashMap};

use super::parse::Event;

/// An event of one replica at one time (microseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub at_us: i64,
    pub replica: String,
    pub event: Event,
}

/// One replica's hold of one pool's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub pool: String,
    pub replica: String,
    pub token: Option<u64>,
    pub start_us: i64,
    /// False when no line tells when the hold began: it starts at the first evidence
    /// (the start of the freeze it was held through, or the first line about it).
    pub start_known: bool,
    /// The last line about this hold: its release, or else its last evidence.
    pub end_us: i64,
    /// When it began to wait for the lock, if a line says how long it waited.
    pub waited_from_us: Option<i64>,
    /// When the replica noticed the lock was lost (or let go of it lost).
    pub lost_at_us: Option<i64>,
    /// A release line ended it (else it ends at its last evidence).
    pub released: bool,
    /// Its ledger writes.
    pub writes_us: Vec<i64>,
}

/// A replica stopped (SIGSTOP) from `from_us` to `to_us` (its next line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub replica: String,
    pub from_us: i64,
    pub to_us: i64,
}

/// A ledger write the fence refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub pool: String,
    pub replica: String,
    pub at_us: i64,
    pub token: u64,
    /// The newer token that had been taken, from the line or from another replica's hold.
    pub newer: Option<u64>,
    /// Which replica held the newer token.
    pub newer_by: Option<String>,
    pub by: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    pub holds: Vec<Hold>,
    pub freezes: Vec<Freeze>,
    pub rejections: Vec<Rejection>,
    /// Every replica that logged, sorted.
    pub replicas: Vec<String>,
    /// Every pool some lock event names, sorted, with its backend when a line says.
    pub pools: Vec<(String, Option<String>)>,
}

impl Timeline {
    /// The first and last time of anything drawn.
    pub fn span(&self) -> Option<(i64, i64)> {
        let starts = self.holds.iter().map(|h| h.waited_from_us.unwrap_or(h.start_us).min(h.start_us));
        let starts = starts
            .chain(self.freezes.iter().map(|f| f.from_us))
            .chain(self.rejections.iter().map(|r| r.at_us));
        let ends = self.holds.iter().map(|h| h.end_us).chain(self.freezes.iter().map(|f| f.to_us));
        let ends = ends.chain(self.rejections.iter().map(|r| r.at_us));
        Some((starts.min()?, ends.max()?))
    }

    /// The distinct tokens held on `pool`.
    pub fn tokens(&self, pool: &str) -> BTreeSet<u64> {
        self.holds.iter().filter(|h| h.pool == pool).filter_map(|h| h.token).collect()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} pools, {} replicas: {} holds, {} freezes, {} refused writes",
            self.pools.len(),
            self.replicas.len(),
            self.holds.len(),
            self.freezes.len(),
            self.rejections.len()
        )
    }
}

/// Builds the timeline from the records of all replicas (in any order).
pub fn build(mut records: Vec<Record>) -> Timeline {
    records.sort_by_key(|r| r.at_us);
    let mut b = Builder::default();
    for record in &records {
        b.record(record);
    }
    let last = records.last().map_or(0, |r| r.at_us);
    b.finish(last)
}

#[derive(Default)]
struct Builder {
    timeline: Timeline,
    /// The open hold of (replica, pool).
    open: HashMap<(String, String), usize>,
    /// The freeze a replica is in.
    frozen: HashMap<String, usize>,
    replicas: BTreeSet<String>,
    backends: HashMap<String, Option<String>>,
}

impl Builder {
    fn record(&mut self, r: &Record) {
        let (at, replica) = (r.at_us, r.replica.as_str());
        self.replicas.insert(replica.to_string());
        // A stopped process logs nothing: any line of it ends its freeze.
        if let Some(i) = self.frozen.remove(replica) {
            self.timeline.freezes[i].to_us = at;
        }
        match &r.event {
            Event::Started { .. } => {}
            Event::Acquired { pool, backend, token, wait_ms } => {
                self.pool(pool, backend);
                self.close(replica, pool);
                let i = self.open_hold(replica, pool, Some(*token), at, true);
                self.timeline.holds[i].waited_from_us = wait_ms.map(|w| at - ms(w));
            }
            Event::Written { pool, backend, token, wait_ms, hold_ms } => {
                self.pool(pool, backend);
                let i = match self.open_with(replica, pool, *token) {
                    Some(i) => i,
                    None => {
                        let start = at - hold_ms.map_or(0, ms);
                        let i = self.open_hold(replica, pool, Some(*token), start, hold_ms.is_some());
                        self.timeline.holds[i].waited_from_us = wait_ms.map(|w| start - ms(w));
                        i
                    }
                };
                let hold = &mut self.timeline.holds[i];
                hold.writes_us.push(at);
                hold.end_us = hold.end_us.max(at);
            }
            Event::Released { pool, token, lost } => {
                self.pool(pool, &None);
                let i = self.evidence(replica, pool, *token, at);
                let hold = &mut self.timeline.holds[i];
                hold.released = true;
                if *lost {
                    hold.lost_at_us.get_or_insert(at);
                }
                self.open.remove(&(replica.to_string(), pool.clone()));
            }
            Event::Lost { pool, token } => {
                self.pool(pool, &None);
                let i = self.evidence(replica, pool, *token, at);
                self.timeline.holds[i].lost_at_us.get_or_insert(at);
            }
            Event::Frozen => {
                self.timeline.freezes.push(Freeze { replica: replica.to_string(), from_us: at, to_us: at });
                self.frozen.insert(replica.to_string(), self.timeline.freezes.len() - 1);
            }
            Event::Thawed { pool: Some(pool), token } => {
                self.pool(pool, &None);
                self.evidence(replica, pool, *token, at);
            }
            Event::Thawed { pool: None, .. } => {}
            Event::Rejected { pool, token, by, newer } => {
                self.pool(pool, &None);
                self.evidence(replica, pool, Some(*token), at);
                self.timeline.rejections.push(Rejection {
                    pool: pool.clone(),
                    replica: replica.to_string(),
                    at_us: at,
                    token: *token,
                    newer: *newer,
                    newer_by: None,
                    by: by.clone(),
                });
            }
        }
    }

    fn pool(&mut self, pool: &str, backend: &Option<String>) {
        let known = self.backends.entry(pool.to_string()).or_default();
        if known.is_none() {
            known.clone_from(backend);
        }
    }

    /// The open hold of (replica, pool) if it has `token` (or none yet, which it takes).
    fn open_with(&mut self, replica: &str, pool: &str, token: u64) -> Option<usize> {
        let key = (replica.to_string(), pool.to_string());
        let i = *self.open.get(&key)?;
        let hold = &mut self.timeline.holds[i];
        match hold.token {
            Some(t) if t == token => Some(i),
            None => {
                hold.token = Some(token);
                Some(i)
            }
            Some(_) => {
                self.open.remove(&key);
                None
            }
        }
    }

    /// A line about a hold that may not have been seen beginning: the open hold (with a
    /// matching token) gets it, or one is opened whose start is unknown.
    fn evidence(&mut self, replica: &str, pool: &str, token: Option<u64>, at: i64) -> usize {
        let open = match token {
            Some(t) => self.open_with(replica, pool, t),
            None => self.open.get(&(replica.to_string(), pool.to_string())).copied(),
        };
        let i = open.unwrap_or_else(|| {
            // Held through a freeze that ended just before this line, or else from here.
            let start = self
                .timeline
                .freezes
                .iter()
                .rev()
                .find(|f| f.replica == replica)
                .filter(|f| f.to_us <= at && at - f.to_us <= THAWED_RECENTLY_US)
                .map_or(at, |f| f.from_us);
            self.open_hold(replica, pool, token, start, false)
        });
        let hold = &mut self.timeline.holds[i];
        hold.end_us = hold.end_us.max(at);
        i
    }

    fn open_hold(&mut self, replica: &str, pool: &str, token: Option<u64>, start: i64, known: bool) -> usize {
        self.timeline.holds.push(Hold {
            pool: pool.to_string(),
            replica: replica.to_string(),
            token,
            start_us: start,
            start_known: known,
            end_us: start,
            waited_from_us: None,
            lost_at_us: None,
            released: false,
            writes_us: Vec::new(),
        });
        let i = self.timeline.holds.len() - 1;
        self.open.insert((replica.to_string(), pool.to_string()), i);
        i
    }

    fn close(&mut self, replica: &str, pool: &str) {
        self.open.remove(&(replica.to_string(), pool.to_string()));
    }

    fn finish(mut self, last: i64) -> Timeline {
        for (_, i) in self.frozen.drain() {
            self.timeline.freezes[i].to_us = last;
        }
        let holds = self.timeline.holds.clone();
        for r in &mut self.timeline.rejections {
            // The newest token another replica had taken on this pool by then.
            let newest = holds
                .iter()
                .filter(|h| h.pool == r.pool && h.replica != r.replica && h.start_us <= r.at_us)
                .filter_map(|h| Some((h.token?, &h.replica)))
                .filter(|(t, _)| *t > r.token && r.newer.is_none_or(|n| *t == n))
                .max_by_key(|(t, _)| *t);
            if let Some((token, by)) = newest {
                r.newer = Some(token);
                r.newer_by = Some(by.clone());
            }
        }
        self.timeline
            .holds
            .sort_by(|a, b| (&a.pool, &a.replica, a.start_us).cmp(&(&b.pool, &b.replica, b.start_us)));
        self.timeline.replicas = self.replicas.into_iter().collect();
        let mut pools: Vec<_> = self.backends.into_iter().collect();
        pools.sort();
        self.timeline.pools = pools;
        self.timeline
    }
}

/// A line about a hold that comes this soon after its replica's freeze ended is taken
/// as a hold that went through the freeze: a thawed process notices its lost lease and
/// tries its stale write within milliseconds.
const THAWED_RECENTLY_US: i64 = 2_000_000;

fn ms(ms: u64) -> i64 {
    ms as i64 * 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn at(s: f64, replica: &str, event: Event) -> Record {
        Record { at_us: (s * S as f64).round() as i64, replica: replica.into(), event }
    }

    fn written(pool: &str, token: u64, wait_ms: u64, hold_ms: u64) -> Event {
        Event::Written {
            pool: pool.into(),
            backend: Some("etcd".into()),
            token,
            wait_ms: Some(wait_ms),
            hold_ms: Some(hold_ms),
        }
    }

    fn acquired(pool: &str, token: u64) -> Event {
        Event::Acquired { pool: pool.into(), backend: None, token, wait_ms: Some(100) }
    }

    fn released(pool: &str, token: u64) -> Event {
        Event::Released { pool: pool.into(), token: Some(token), lost: false }
    }

    /// (replica, token, start s, known, end s, lost at s, released)
    type Want<'a> = (&'a str, Option<u64>, f64, bool, f64, Option<f64>, bool);

    fn holds(t: &Timeline) -> Vec<Want<'_>> {
        let s = |us: i64| us as f64 / S as f64;
        t.holds
            .iter()
            .map(|h| {
                (
                    h.replica.as_str(),
                    h.token,
                    s(h.start_us),
                    h.start_known,
                    s(h.end_us),
                    h.lost_at_us.map(s),
                    h.released,
                )
            })
            .collect()
    }

    #[test]
    fn intervals() {
        struct Case<'a> {
            name: &'a str,
            records: Vec<Record>,
            holds: Vec<Want<'a>>,
        }
        let table = vec![
            Case {
                name: "acquire and release",
                records: vec![
                    at(1.0, "r0", acquired("p", 4)),
                    at(1.5, "r0", written("p", 4, 0, 500)),
                    at(1.6, "r0", released("p", 4)),
                ],
                holds: vec![("r0", Some(4), 1.0, true, 1.6, None, true)],
            },
            Case {
                name: "a write without acquire or release lines: start from hold_ms, end at the write",
                records: vec![at(2.0, "r1", written("p", 6, 1000, 250))],
                holds: vec![("r1", Some(6), 1.75, true, 2.0, None, false)],
            },
            Case {
                name: "the next acquisition ends a hold whose release was not logged",
                records: vec![at(1.0, "r0", acquired("p", 4)), at(3.0, "r0", acquired("p", 5))],
                holds: vec![
                    ("r0", Some(4), 1.0, true, 1.0, None, false),
                    ("r0", Some(5), 3.0, true, 3.0, None, false),
                ],
            },
            Case {
                name: "a lock lost without release: noticed, then let go",
                records: vec![
                    at(1.0, "r0", acquired("p", 4)),
                    at(7.0, "r0", Event::Lost { pool: "p".into(), token: None }),
                    at(7.1, "r0", Event::Released { pool: "p".into(), token: Some(4), lost: true }),
                ],
                holds: vec![("r0", Some(4), 1.0, true, 7.1, Some(7.0), true)],
            },
            Case {
                name: "a lock lost and never let go (the process died): ends where it was noticed",
                records: vec![
                    at(1.0, "r0", acquired("p", 4)),
                    at(7.0, "r0", Event::Lost { pool: "p".into(), token: None }),
                ],
                holds: vec![("r0", Some(4), 1.0, true, 7.0, Some(7.0), false)],
            },
            Case {
                name: "a frozen holder without an acquire line: held since the freeze began",
                records: vec![
                    at(1.0, "r2", Event::Frozen),
                    at(9.0, "r2", Event::Thawed { pool: Some("p".into()), token: Some(2) }),
                    at(9.01, "r2", Event::Lost { pool: "p".into(), token: None }),
                    at(9.02, "r2", Event::Rejected { pool: "p".into(), token: 2, by: None, newer: None }),
                    at(9.03, "r2", Event::Released { pool: "p".into(), token: Some(2), lost: true }),
                ],
                holds: vec![("r2", Some(2), 1.0, false, 9.03, Some(9.01), true)],
            },
            Case {
                name: "another pool held through the same freeze: noticed lost first, token from the rejection",
                records: vec![
                    at(1.0, "r2", Event::Frozen),
                    at(9.0, "r2", Event::Thawed { pool: Some("p".into()), token: Some(2) }),
                    at(9.1, "r2", Event::Lost { pool: "q".into(), token: None }),
                    at(9.2, "r2", Event::Rejected { pool: "q".into(), token: 1, by: None, newer: None }),
                ],
                holds: vec![
                    ("r2", Some(2), 1.0, false, 9.0, None, false),
                    ("r2", Some(1), 1.0, false, 9.2, Some(9.1), false),
                ],
            },
            Case {
                name: "a lock lost long after a freeze was not held through it",
                records: vec![
                    at(1.0, "r2", Event::Frozen),
                    at(2.0, "r2", Event::Thawed { pool: None, token: None }),
                    at(9.0, "r2", Event::Lost { pool: "p".into(), token: None }),
                ],
                holds: vec![("r2", None, 9.0, false, 9.0, Some(9.0), false)],
            },
            Case {
                name: "a frozen holder with an acquire line keeps its start",
                records: vec![
                    at(0.5, "r2", acquired("p", 2)),
                    at(1.0, "r2", Event::Frozen),
                    at(9.0, "r2", Event::Thawed { pool: Some("p".into()), token: Some(2) }),
                    at(9.02, "r2", Event::Rejected { pool: "p".into(), token: 2, by: None, newer: None }),
                ],
                holds: vec![("r2", Some(2), 0.5, true, 9.02, None, false)],
            },
            Case {
                name: "lines of replicas arrive in any order",
                records: vec![
                    at(5.0, "r1", released("p", 8)),
                    at(2.0, "r0", released("p", 7)),
                    at(4.0, "r1", acquired("p", 8)),
                    at(1.0, "r0", acquired("p", 7)),
                ],
                holds: vec![
                    ("r0", Some(7), 1.0, true, 2.0, None, true),
                    ("r1", Some(8), 4.0, true, 5.0, None, true),
                ],
            },
        ];
        for case in table {
            let timeline = build(case.records);
            let mut got = holds(&timeline);
            got.sort_by(|a, b| (a.0, a.2).partial_cmp(&(b.0, b.2)).unwrap());
            assert_eq!(got, case.holds, "{}", case.name);
        }
    }

    #[test]
    fn the_split_brain_of_the_demo() {
        // The lines of a real demo run (replica-2 froze holding both pools' locks).
        let records = vec![
            at(20.383, "replica-2", Event::Frozen),
            at(
                25.483,
                "replica-1",
                Event::Written {
                    pool: "demo-vlans".into(),
                    backend: Some("lease".into()),
                    token: 3,
                    wait_ms: Some(4452),
                    hold_ms: Some(21),
                },
            ),
            at(25.780, "replica-1", written("demo-ports", 6, 5050, 46)),
            at(28.845, "replica-2", Event::Thawed { pool: Some("demo-ports".into()), token: Some(2) }),
            at(28.847, "replica-2", Event::Lost { pool: "demo-ports".into(), token: None }),
            at(28.860, "replica-2", Event::Lost { pool: "demo-vlans".into(), token: None }),
            at(
                28.882,
                "replica-2",
                Event::Rejected {
                    pool: "demo-ports".into(),
                    token: 2,
                    by: Some("resourceVersion precondition".into()),
                    newer: None,
                },
            ),
            at(
                28.885,
                "replica-2",
                Event::Released { pool: "demo-ports".into(), token: Some(2), lost: true },
            ),
            at(
                28.998,
                "replica-2",
                Event::Rejected {
                    pool: "demo-vlans".into(),
                    token: 1,
                    by: Some("fencing-token rule".into()),
                    newer: None,
                },
            ),
            at(
                28.999,
                "replica-2",
                Event::Released { pool: "demo-vlans".into(), token: Some(1), lost: true },
            ),
            at(
                29.916,
                "replica-1",
                Event::Written {
                    pool: "demo-vlans".into(),
                    backend: Some("lease".into()),
                    token: 5,
                    wait_ms: Some(43),
                    hold_ms: Some(35),
                },
            ),
            at(30.0, "replica-0", Event::Started { identity: "replica-0".into() }),
        ];
        let t = build(records);
        assert_eq!(t.replicas, ["replica-0", "replica-1", "replica-2"]);
        assert_eq!(
            t.pools,
            [
                ("demo-ports".to_string(), Some("etcd".to_string())),
                ("demo-vlans".to_string(), Some("lease".to_string()))
            ]
        );
        assert_eq!(
            t.freezes,
            [Freeze { replica: "replica-2".into(), from_us: 20_383_000, to_us: 28_845_000 }]
        );
        assert_eq!(t.tokens("demo-ports"), BTreeSet::from([2, 6]));
        assert_eq!(t.tokens("demo-vlans"), BTreeSet::from([1, 3, 5]));
        let refused: Vec<_> =
            t.rejections.iter().map(|r| (r.pool.as_str(), r.token, r.newer, r.newer_by.as_deref())).collect();
        assert_eq!(
            refused,
            [("demo-ports", 2, Some(6), Some("replica-1")), ("demo-vlans", 1, Some(3), Some("replica-1"))]
        );
        let ports2 = t.holds.iter().find(|h| h.pool == "demo-ports" && h.token == Some(2)).unwrap();
        assert_eq!((ports2.start_us, ports2.start_known, ports2.end_us), (20_383_000, false, 28_885_000));
        let ports6 = t.holds.iter().find(|h| h.token == Some(6)).unwrap();
        assert_eq!(
            (ports6.waited_from_us, ports6.start_us, ports6.end_us),
            (Some(20_684_000), 25_734_000, 25_780_000)
        );
        assert_eq!(t.span(), Some((20_383_000, 29_916_000)));
    }

    #[test]
    fn a_rejection_names_the_newest_token_taken_before_it() {
        let records = vec![
            at(1.0, "a", acquired("p", 2)),
            at(2.0, "b", acquired("p", 5)),
            at(2.5, "b", released("p", 5)),
            at(3.0, "c", acquired("p", 7)),
            at(4.0, "a", Event::Rejected { pool: "p".into(), token: 2, by: None, newer: None }),
            at(5.0, "b", acquired("p", 9)), // after the rejection: not the one it lost to
            at(6.0, "c", Event::Rejected { pool: "p".into(), token: 7, by: None, newer: Some(9) }), // said by the line
            at(7.0, "a", Event::Rejected { pool: "q".into(), token: 1, by: None, newer: None }), // nobody else on q
        ];
        let t = build(records);
        let got: Vec<_> = t.rejections.iter().map(|r| (r.token, r.newer, r.newer_by.as_deref())).collect();
        assert_eq!(got, [(2, Some(7), Some("c")), (7, Some(9), Some("b")), (1, None, None)]);
    }
}
