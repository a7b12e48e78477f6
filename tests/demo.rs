//! `make demo` runs to the end by itself with DEMO_SECONDS, tells the story, draws it as a
//! lock timeline, and leaves nothing running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_demo_tells_the_story_and_tears_down() {
    let lockguard = PathBuf::from(env!("CARGO_BIN_EXE_lockguard"));
    let devenv = lockguard.with_file_name("devenv");
    // Always: an older devenv binary may lack `devenv timeline`.
    let built = Command::new(env!("CARGO")).args(["build", "-q", "-p", "devenv", "--bin", "devenv"]).status();
    assert!(built.is_ok_and(|s| s.success()), "build the devenv binary");
    let timeline =
        std::env::temp_dir().join(format!("lockguard-demo-test-{}/lock-timeline.svg", std::process::id()));
    let _ = std::fs::remove_file(&timeline);
    let output = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/demo.sh"))
        .env("DEMO_SECONDS", "1")
        .env("LOCKGUARD_BIN", &lockguard)
        .env("DEVENV_BIN", &devenv)
        .env("LOCKGUARD_DEMO_OUT", &timeline)
        .output()
        .expect("run hack/demo.sh");
    let out = String::from_utf8_lossy(&output.stdout);
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed\n{out}\n{err}");
    for expected in [
        "allocated claim=",  // interleaved replica logs …
        "backend=\"etcd\"",  // … for both backends,
        "backend=\"lease\"", //
        "wait_ms=",          // with lock waits
        "token=",            // and fencing tokens
        "failpoint stop-before-ledger-write",
        "fenced ledger write rejected", // the thawed holder's stale write
        "PoolExhausted",
        "NamespaceNotAllowed", // the shared pool refuses team-d …
        "namespace team-d may not claim from pool demo-ids",
        "NamespaceLimitReached",         // … and team-a's claim past its limit
        "pool.lockguard.dev/demo-ports", // the summary
        "lockguard_lock_acquire_wait_seconds_count",
        "devenv: lock timeline (",
        "tearing down",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in the demo output:\n{out}\n{err}");
    }
    assert!(
        out.contains(&timeline.display().to_string()),
        "the demo does not say where the timeline is:\n{out}"
    );
    let svg = std::fs::read_to_string(&timeline)
        .unwrap_or_else(|e| panic!("no lock timeline at {timeline:?}: {e}\n{out}"));
    let _ = std::fs::remove_dir_all(timeline.parent().expect("a directory"));
    the_timeline_tells_the_split_brain(&svg);
    let left = Command::new("pgrep")
        .args(["-f", "--identity replica-[0-9] --metrics-addr"])
        .output()
        .expect("pgrep");
    assert!(left.stdout.is_empty(), "replicas left running: {}", String::from_utf8_lossy(&left.stdout));
}

/// The picture has a lane for each pool, a refused write, and on that pool at least two
/// fencing tokens (the stale holder's and the newer one).
fn the_timeline_tells_the_split_brain(svg: &str) {
    let svg = svg.trim();
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "not an SVG document:\n{svg}");
    let lanes: BTreeSet<_> =
        elements(svg, "lane").iter().filter_map(|a| a.get("data-pool").copied()).collect();
    assert!(lanes.contains("demo-ports") && lanes.contains("demo-vlans"), "lanes {lanes:?}:\n{svg}");
    let rejected = elements(svg, "rejected");
    assert!(!rejected.is_empty(), "no refused write marked:\n{svg}");
    assert!(svg.contains("fenced write rejected, token"), "the refused write is not labelled:\n{svg}");
    for mark in &rejected {
        let pool = mark["data-pool"];
        let tokens: BTreeSet<_> = elements(svg, "hold")
            .iter()
            .filter(|a| a.get("data-pool") == Some(&pool))
            .filter_map(|a| a.get("data-token").copied())
            .collect();
        assert!(tokens.len() >= 2, "pool {pool} of a refused write shows tokens {tokens:?}:\n{svg}");
        assert!(tokens.contains(mark["data-token"]), "the refused token is not among {pool}'s holds:\n{svg}");
    }
}

/// The attributes of each element with `class="CLASS"`.
fn elements<'a>(svg: &'a str, class: &str) -> Vec<BTreeMap<&'a str, &'a str>> {
    let needle = format!(r#"class="{class}""#);
    svg.match_indices(&needle)
        .map(|(at, _)| {
            let tag = &svg[at..at + svg[at..].find('>').unwrap_or(svg.len() - at)];
            tag.split(r#"" "#)
                .filter_map(|pair| pair.split_once(r#"=""#))
                .map(|(k, v)| (k.trim(), v.trim_end_matches(['"', '/'])))
                .collect()
        })
        .collect()
}
