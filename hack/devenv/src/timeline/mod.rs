//! `devenv timeline --out FILE LOG…`: the lock timeline of `make demo` as an SVG picture,
//! from the replicas' logs. Pure steps, each tested on its own: log line → event
//! ([`parse`]), events of all replicas → holds, freezes and refused writes ([`build`]),
//! those → SVG text ([`svg`]).

pub mod build;
pub mod parse;
pub mod svg;

use std::path::Path;

pub use build::{Record, Timeline};

/// The records of one replica's log. Its name is the identity of its `lockguard starting`
/// line, or `fallback` (the file's name) when the log has none.
pub fn records_of(text: &str, fallback: &str) -> Vec<Record> {
    let events: Vec<_> = text
        .lines()
        .filter_map(parse::parse_line)
        .filter_map(|l| Some((l.at_us, parse::event_of(&l)?)))
        .collect();
    let replica = events
        .iter()
        .find_map(|(_, e)| match e {
            parse::Event::Started { identity } => Some(identity.clone()),
            _ => None,
        })
        .unwrap_or_else(|| fallback.to_string());
    events.into_iter().map(|(at_us, event)| Record { at_us, replica: replica.clone(), event }).collect()
}

/// Reads the logs and builds their timeline.
pub fn from_files(logs: &[impl AsRef<Path>]) -> std::io::Result<Timeline> {
    let mut records = Vec::new();
    for log in logs {
        let log = log.as_ref();
        let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
        let name = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        records.extend(records_of(&text, &name));
    }
    Ok(build::build(records))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_is_named_by_its_identity_line() {
        let log = "2026-11-29T03:27:19.941409Z  INFO lockguard::cli::run: lockguard starting identity=replica-2 metrics=127.0.0.1:33935\n\
                   2026-11-29T03:27:20.383848Z  WARN lockguard::failpoint: failpoint stop-before-ledger-write: stopping this process (SIGSTOP)\n\
                   not a log line\n";
        let records = records_of(log, "file");
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.replica == "replica-2"));
        let unnamed = records_of(&log.lines().skip(1).collect::<Vec<_>>().join("\n"), "replica-9");
        assert_eq!(unnamed.iter().map(|r| r.replica.as_str()).collect::<Vec<_>>(), ["replica-9"]);
    }
}
