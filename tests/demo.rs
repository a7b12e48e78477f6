//! `make demo` runs to the end by itself with DEMO_SECONDS, tells the story, and leaves
//! nothing running.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_demo_tells_the_story_and_tears_down() {
    let lockguard = PathBuf::from(env!("CARGO_BIN_EXE_lockguard"));
    let devenv = lockguard.with_file_name("devenv");
    if !devenv.exists() {
        let built =
            Command::new(env!("CARGO")).args(["build", "-q", "-p", "devenv", "--bin", "devenv"]).status();
        assert!(built.is_ok_and(|s| s.success()), "build the devenv binary");
    }
    let output = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hack/demo.sh"))
        .env("DEMO_SECONDS", "1")
        .env("LOCKGUARD_BIN", &lockguard)
        .env("DEVENV_BIN", &devenv)
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
        "pool.lockguard.dev/demo-ports", // the summary
        "lockguard_lock_acquire_wait_seconds_count",
        "tearing down",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in the demo output:\n{out}\n{err}");
    }
    let left = Command::new("pgrep")
        .args(["-f", "--identity replica-[0-9] --metrics-addr"])
        .output()
        .expect("pgrep");
    assert!(left.stdout.is_empty(), "replicas left running: {}", String::from_utf8_lossy(&left.stdout));
}
