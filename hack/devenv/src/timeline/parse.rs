//! Log lines of `lockguard run` → lock events. Both of its formats are read: the text
//! format (`2026-11-29T03:27:25.780795Z  INFO target: message key=value …`, what the demo
//! writes) and `--log-format json` (one flattened JSON object per line).

use std::collections::BTreeMap;

/// One log line: when, what it says, and its fields (string values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Microseconds since the Unix epoch.
    pub at_us: i64,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

impl Line {
    fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn number(&self, key: &str) -> Option<u64> {
        self.field(key)?.parse().ok()
    }
}

/// What a line tells about locks. Lines that tell nothing about them are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `lockguard starting identity=…`: whose log this is.
    Started { identity: String },
    /// `lock acquired` (when the operator logs it): a hold begins.
    Acquired { pool: String, backend: Option<String>, token: u64, wait_ms: Option<u64> },
    /// `ledger written`: a hold that wrote; its start is `hold_ms` before the line.
    Written { pool: String, backend: Option<String>, token: u64, wait_ms: Option<u64>, hold_ms: Option<u64> },
    /// `lock released`, or `lock was lost while held` (`lost`): the replica let go.
    Released { pool: String, token: Option<u64>, lost: bool },
    /// `lock lost`: the keep-alive noticed the lease is gone.
    Lost { pool: String, token: Option<u64> },
    /// The failpoint stops the process (SIGSTOP).
    Frozen,
    /// The failpoint resumed (SIGCONT) and goes on with the hold of `pool`, if it says.
    Thawed { pool: Option<String>, token: Option<u64> },
    /// `fenced ledger write rejected`: a stale holder's write was refused.
    Rejected { pool: String, token: u64, by: Option<String>, newer: Option<u64> },
}

/// Reads one line of either format; `None` for what is not a log line of lockguard.
pub fn parse_line(raw: &str) -> Option<Line> {
    let clean = strip_ansi(raw);
    let line = clean.trim();
    if line.starts_with('{') { parse_json(line) } else { parse_text(line) }
}

/// The lock event a line is about, if any.
pub fn event_of(line: &Line) -> Option<Event> {
    let m = line.message.as_str();
    let pool = || line.field("pool").map(str::to_string).or_else(|| line.field("lock").map(pool_of_lock));
    let backend = || line.field("backend").map(str::to_string);
    let event = if m == "lockguard starting" {
        Event::Started { identity: line.field("identity")?.to_string() }
    } else if m == "lock acquired" {
        Event::Acquired {
            pool: pool()?,
            backend: backend(),
            token: line.number("token")?,
            wait_ms: line.number("wait_ms"),
        }
    } else if m == "ledger written" {
        Event::Written {
            pool: pool()?,
            backend: backend(),
            token: line.number("token")?,
            wait_ms: line.number("wait_ms"),
            hold_ms: line.number("hold_ms"),
        }
    } else if m == "lock released" {
        Event::Released {
            pool: pool()?,
            token: line.number("token"),
            lost: line.field("lost") == Some("true"),
        }
    } else if m == "lock was lost while held" {
        Event::Released { pool: pool()?, token: line.number("token"), lost: true }
    } else if m == "lock lost" {
        Event::Lost { pool: pool()?, token: line.number("token") }
    } else if m.starts_with("failpoint ") && m.contains("stopping this process") {
        Event::Frozen
    } else if m.starts_with("failpoint: resumed") {
        Event::Thawed { pool: line.field("pool").map(str::to_string), token: line.number("token") }
    } else if m.starts_with("fenced ledger write rejected") {
        Event::Rejected {
            pool: pool()?,
            token: line.number("token")?,
            by: line.field("by").map(str::to_string),
            newer: line.number("newer").or_else(|| line.number("stored")),
        }
    } else {
        return None;
    };
    Some(event)
}

/// The pool a lock name belongs to (`lockguard/pools/NAME` on etcd, `lockguard-pool-NAME`
/// as a Lease); other names are kept as they are.
pub fn pool_of_lock(lock: &str) -> String {
    lock.strip_prefix("lockguard/pools/")
        .or_else(|| lock.strip_prefix("lockguard-pool-"))
        .unwrap_or(lock)
        .to_string()
}

/// `TIMESTAMP  LEVEL target: message key=value key="quoted" …`. The target is the first
/// word when it ends with `:` (lockguard's format always has one).
fn parse_text(line: &str) -> Option<Line> {
    let (stamp, rest) = line.split_once(char::is_whitespace)?;
    let at_us = parse_timestamp(stamp)?;
    let rest = rest.trim_start();
    let (level, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !matches!(level, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") {
        return None;
    }
    let (rest, span_fields) = strip_spans(rest.trim_start());
    let rest = match rest.split_once(' ') {
        Some((target, after)) if is_target(target) => after,
        None if is_target(rest) => "",
        _ => rest,
    };
    let (message, mut fields) = split_fields(rest);
    // The event's own fields win over those of its spans.
    for (key, value) in span_fields {
        fields.entry(key).or_insert(value);
    }
    Some(Line { at_us, message, fields })
}

/// Skips the spans a line was logged in (`reconcile{pool=p}:hold{…}: `), returning the rest
/// and the spans' fields.
fn strip_spans(mut rest: &str) -> (&str, BTreeMap<String, String>) {
    let mut fields = BTreeMap::new();
    loop {
        let name_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(0);
        if name_end == 0 || !rest[name_end..].starts_with('{') {
            return (rest, fields);
        }
        let Some(close) = rest[name_end..].find("}:").map(|i| name_end + i) else { return (rest, fields) };
        let (_, span_fields) = split_fields(&format!(" {}", &rest[name_end + 1..close]));
        fields.extend(span_fields);
        rest = rest[close + 2..].trim_start();
    }
}

fn is_target(word: &str) -> bool {
    word.strip_suffix(':').is_some_and(|t| {
        !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    })
}

/// Splits `message key=value …` at the first ` key=`; quoted values are unescaped,
/// unquoted ones run to the next ` key=`.
fn split_fields(s: &str) -> (String, BTreeMap<String, String>) {
    let first = next_key(s, 0);
    let message = s[..first].trim_end().to_string();
    let mut fields = BTreeMap::new();
    let mut i = first;
    while let Some(key_len) = key_at(s, i) {
        let key = &s[i..i + key_len];
        let v = i + key_len + 1;
        let (value, end) = if s[v..].starts_with('"') {
            let (value, used) = unquote(&s[v..]);
            (value, next_key(s, v + used))
        } else {
            let end = next_key(s, v);
            (s[v..end].trim_end().to_string(), end)
        };
        fields.insert(key.to_string(), value);
        i = end;
    }
    (message, fields)
}

/// The length of the field name at `i` when `s[i..]` starts with `name=`.
fn key_at(s: &str, i: usize) -> Option<usize> {
    let rest = s.get(i..)?;
    let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len());
    let starts_well = rest.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    (len > 0 && starts_well && rest[len..].starts_with('=')).then_some(len)
}

/// The start of the next `name=` at or after `from` that follows a space (or starts `s`).
fn next_key(s: &str, from: usize) -> usize {
    (from..s.len())
        .filter(|&j| s.is_char_boundary(j))
        .find(|&j| (j == 0 || s.as_bytes()[j - 1] == b' ') && key_at(s, j).is_some())
        .unwrap_or(s.len())
}

/// A Rust `Debug` string literal at the start of `s` → its value and the bytes it took.
fn unquote(s: &str) -> (String, usize) {
    let mut value = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (value, i + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                Some((_, 'r')) => value.push('\r'),
                Some((_, '0')) => value.push('\0'),
                Some((_, other)) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    (value, s.len())
}

/// One object per line, fields flattened (`--log-format json`) or under `fields`.
fn parse_json(line: &str) -> Option<Line> {
    let serde_json::Value::Object(object) = serde_json::from_str(line).ok()? else { return None };
    let at_us = parse_timestamp(object.get("timestamp")?.as_str()?)?;
    let mut fields = BTreeMap::new();
    let nested = object.get("fields").and_then(|f| f.as_object());
    for (key, value) in object.iter().chain(nested.into_iter().flatten()) {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(_) | serde_json::Value::Array(_) => continue,
            other => other.to_string(),
        };
        fields.insert(key.clone(), text);
    }
    // The current span's fields (`span`), under the event's own.
    if let Some(span) = object.get("span").and_then(|s| s.as_object()) {
        for (key, value) in span {
            if let (Some(text), false) = (value.as_str(), key == "name") {
                fields.entry(key.clone()).or_insert_with(|| text.to_string());
            }
        }
    }
    let message = fields.remove("message").unwrap_or_default();
    Some(Line { at_us, message, fields })
}

/// RFC 3339 (`2026-11-29T03:27:25.780795Z`, or with `+hh:mm`) → microseconds since the
/// Unix epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let at: jiff::Timestamp = s.parse().ok()?;
    Some(at.as_microsecond())
}

fn strip_ansi(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\u{1b}') {
        return s.into();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte (a letter).
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_922_845_780_795; // 2026-11-29T03:27:25.780795Z

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn timestamps() {
        let table: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:01.5Z", Some(1_500_000)),
            ("2026-11-29T03:27:25.780795Z", Some(T)),
            ("2026-11-29T03:27:25.780795123Z", Some(T)),
            ("2026-11-29T04:27:25.780795+01:00", Some(T)),
            ("2026-11-28T23:27:25.780795-04:00", Some(T)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000_000)),
            ("2026-13-01T00:00:00Z", None),
            ("2026-11-29 garbage", None),
            ("INFO", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_timestamp(text), *want, "{text}");
        }
    }

    /// A raw line and what it reads as: its message and fields, or nothing.
    type LineCase<'a> = (&'a str, Option<(&'a str, &'a [(&'a str, &'a str)])>);

    #[test]
    fn text_and_json_lines() {
        let table: &[LineCase] = &[
            (
                r#"2026-11-29T03:27:25.780795Z  INFO lockguard::controller::batch: ledger written pool=demo-ports backend="etcd" token=6 wait_ms=5050 hold_ms=46 claims=32 free=36"#,
                Some((
                    "ledger written",
                    &[
                        ("pool", "demo-ports"),
                        ("backend", "etcd"),
                        ("token", "6"),
                        ("wait_ms", "5050"),
                        ("hold_ms", "46"),
                        ("claims", "32"),
                        ("free", "36"),
                    ],
                )),
            ),
            (
                r#"2026-11-29T03:27:25.780795Z  WARN lockguard::failpoint: failpoint: resumed (SIGCONT); writing the ledger with the old token pool="demo-ports" token=2"#,
                Some((
                    "failpoint: resumed (SIGCONT); writing the ledger with the old token",
                    &[("pool", "demo-ports"), ("token", "2")],
                )),
            ),
            (
                "2026-11-29T03:27:25.780795Z  WARN lockguard_lock::hold: lock lost lock=lockguard/pools/demo-ports reason=no successful keep-alive within 4.5s",
                Some((
                    "lock lost",
                    &[
                        ("lock", "lockguard/pools/demo-ports"),
                        ("reason", "no successful keep-alive within 4.5s"),
                    ],
                )),
            ),
            (
                r#"2026-11-29T03:27:25.780795Z  WARN lockguard::controller::pool_ledger: fenced ledger write rejected: another replica wrote the ledger under a newer lock pool=demo-ports token=2 by="resourceVersion precondition" lost=true"#,
                Some((
                    "fenced ledger write rejected: another replica wrote the ledger under a newer lock",
                    &[
                        ("pool", "demo-ports"),
                        ("token", "2"),
                        ("by", "resourceVersion precondition"),
                        ("lost", "true"),
                    ],
                )),
            ),
            (
                "2026-11-29T03:27:25.780795Z  WARN lockguard::failpoint: failpoint stop-before-ledger-write: stopping this process (SIGSTOP)",
                Some(("failpoint stop-before-ledger-write: stopping this process (SIGSTOP)", &[])),
            ),
            // Logged inside a reconcile's span: the span's fields come with it.
            (
                "2026-11-29T03:27:25.780795Z  WARN reconcile{pool=demo-vlans}: lockguard::failpoint: failpoint stop-before-ledger-write: stopping this process (SIGSTOP)",
                Some((
                    "failpoint stop-before-ledger-write: stopping this process (SIGSTOP)",
                    &[("pool", "demo-vlans")],
                )),
            ),
            (
                r#"2026-11-29T03:27:25.780795Z  WARN reconcile{claim=ns/x pool=p}:hold{pool=q}: lockguard::controller::pool_ledger: fenced ledger write rejected pool=demo-vlans token=3"#,
                Some((
                    "fenced ledger write rejected",
                    &[("claim", "ns/x"), ("pool", "demo-vlans"), ("token", "3")],
                )),
            ),
            (
                r#"{"timestamp":"2026-11-29T03:27:25.780795Z","level":"WARN","fields":{"message":"not bound","reason":"PoolExhausted"},"target":"lockguard::controller::claim","span":{"claim":"ns/x","pool":"p","name":"reconcile"},"spans":[{"claim":"ns/x","pool":"p","name":"reconcile"}]}"#,
                Some((
                    "not bound",
                    &[
                        ("claim", "ns/x"),
                        ("level", "WARN"),
                        ("pool", "p"),
                        ("reason", "PoolExhausted"),
                        ("target", "lockguard::controller::claim"),
                        ("timestamp", "2026-11-29T03:27:25.780795Z"),
                    ],
                )),
            ),
            (
                r#"2026-11-29T03:27:25.780795Z  INFO lockguard::controller::batch: allocated claim="team-a/svc-1" pool=demo-ports backend="etcd" token=6 wait_ms=5050 hold_ms=46 items=2"#,
                Some((
                    "allocated",
                    &[
                        ("claim", "team-a/svc-1"),
                        ("pool", "demo-ports"),
                        ("backend", "etcd"),
                        ("token", "6"),
                        ("wait_ms", "5050"),
                        ("hold_ms", "46"),
                        ("items", "2"),
                    ],
                )),
            ),
            // Escapes in a quoted value, a value with spaces and an `=` inside quotes.
            (
                r#"2026-11-29T03:27:25.780795Z  WARN lockguard::x: note: a b="say \"hi\" x=1" c=one two"#,
                Some(("note: a", &[("b", r#"say "hi" x=1"#), ("c", "one two")])),
            ),
            // Colours on a terminal.
            (
                "\u{1b}[2m2026-11-29T03:27:25.780795Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[2mlockguard::cli::run\u{1b}[0m\u{1b}[2m:\u{1b}[0m lockguard starting \u{1b}[3midentity\u{1b}[0m\u{1b}[2m=\u{1b}[0mreplica-0",
                Some(("lockguard starting", &[("identity", "replica-0")])),
            ),
            (
                r#"{"timestamp":"2026-11-29T03:27:25.780795Z","level":"INFO","message":"ledger written","pool":"demo-ports","backend":"etcd","token":6,"wait_ms":5050,"hold_ms":46,"target":"lockguard::controller::batch"}"#,
                Some((
                    "ledger written",
                    &[
                        ("pool", "demo-ports"),
                        ("backend", "etcd"),
                        ("token", "6"),
                        ("wait_ms", "5050"),
                        ("hold_ms", "46"),
                        ("level", "INFO"),
                        ("target", "lockguard::controller::batch"),
                        ("timestamp", "2026-11-29T03:27:25.780795Z"),
                    ],
                )),
            ),
            (
                r#"{"timestamp":"2026-11-29T03:27:25.780795Z","level":"WARN","fields":{"message":"lock lost","lock":"lockguard-pool-demo-vlans"},"target":"lockguard_lock::hold"}"#,
                Some((
                    "lock lost",
                    &[
                        ("lock", "lockguard-pool-demo-vlans"),
                        ("level", "WARN"),
                        ("target", "lockguard_lock::hold"),
                        ("timestamp", "2026-11-29T03:27:25.780795Z"),
                    ],
                )),
            ),
            ("devenv: up. API server https://127.0.0.1:44467", None),
            ("", None),
            (r#"{"not":"a log line"}"#, None),
        ];
        for (raw, want) in table {
            let got = parse_line(raw);
            let want = want.map(|(message, pairs)| Line {
                at_us: T,
                message: message.to_string(),
                fields: fields(pairs),
            });
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn events_of_lines() {
        let line = |message: &str, pairs: &[(&str, &str)]| Line {
            at_us: T,
            message: message.into(),
            fields: fields(pairs),
        };
        let table: Vec<(Line, Option<Event>)> = vec![
            (
                line("lockguard starting", &[("identity", "replica-1"), ("metrics", "127.0.0.1:1")]),
                Some(Event::Started { identity: "replica-1".into() }),
            ),
            (
                line(
                    "lock acquired",
                    &[("pool", "demo-ports"), ("backend", "etcd"), ("token", "7"), ("wait_ms", "3")],
                ),
                Some(Event::Acquired {
                    pool: "demo-ports".into(),
                    backend: Some("etcd".into()),
                    token: 7,
                    wait_ms: Some(3),
                }),
            ),
            (
                line(
                    "ledger written",
                    &[
                        ("pool", "demo-vlans"),
                        ("backend", "lease"),
                        ("token", "3"),
                        ("wait_ms", "4452"),
                        ("hold_ms", "21"),
                    ],
                ),
                Some(Event::Written {
                    pool: "demo-vlans".into(),
                    backend: Some("lease".into()),
                    token: 3,
                    wait_ms: Some(4452),
                    hold_ms: Some(21),
                }),
            ),
            (line("ledger written", &[("pool", "demo-vlans")]), None), // no token: not usable
            (
                line("lock released", &[("lock", "lockguard/pools/demo-ports"), ("token", "7")]),
                Some(Event::Released { pool: "demo-ports".into(), token: Some(7), lost: false }),
            ),
            (
                line("lock was lost while held", &[("lock", "lockguard-pool-demo-vlans"), ("token", "1")]),
                Some(Event::Released { pool: "demo-vlans".into(), token: Some(1), lost: true }),
            ),
            (
                line(
                    "lock lost",
                    &[
                        ("lock", "lockguard/pools/demo-ports"),
                        ("reason", "no successful keep-alive within 4.5s"),
                    ],
                ),
                Some(Event::Lost { pool: "demo-ports".into(), token: None }),
            ),
            (
                line("failpoint stop-before-ledger-write: stopping this process (SIGSTOP)", &[]),
                Some(Event::Frozen),
            ),
            (
                line(
                    "failpoint: resumed (SIGCONT); writing the ledger with the old token",
                    &[("pool", "demo-ports"), ("token", "2")],
                ),
                Some(Event::Thawed { pool: Some("demo-ports".into()), token: Some(2) }),
            ),
            (
                line("failpoint: resumed (SIGCONT); writing the claim's status", &[("claim", "a/b")]),
                Some(Event::Thawed { pool: None, token: None }),
            ),
            (
                line(
                    "fenced ledger write rejected: another replica wrote the ledger under a newer lock",
                    &[
                        ("pool", "demo-ports"),
                        ("token", "2"),
                        ("by", "resourceVersion precondition"),
                        ("lost", "true"),
                    ],
                ),
                Some(Event::Rejected {
                    pool: "demo-ports".into(),
                    token: 2,
                    by: Some("resourceVersion precondition".into()),
                    newer: None,
                }),
            ),
            (
                line(
                    "fenced ledger write rejected: another replica wrote the ledger under a newer lock",
                    &[("pool", "p"), ("token", "2"), ("newer", "9")],
                ),
                Some(Event::Rejected { pool: "p".into(), token: 2, by: None, newer: Some(9) }),
            ),
            (line("allocated", &[("claim", "a/b"), ("pool", "p"), ("token", "6")]), None),
            (line("controllers started", &[("identity", "replica-1")]), None),
        ];
        for (line, want) in table {
            assert_eq!(event_of(&line), want, "{line:?}");
        }
    }

    #[test]
    fn lock_names_name_their_pool() {
        assert_eq!(pool_of_lock("lockguard/pools/demo-ports"), "demo-ports");
        assert_eq!(pool_of_lock("lockguard-pool-demo-vlans"), "demo-vlans");
        assert_eq!(pool_of_lock("something-else"), "something-else");
    }
}
