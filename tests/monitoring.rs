//! deploy/monitoring: the Grafana dashboard and the Prometheus alert rules use only metrics
//! the real operator exports (scraped from replicas that bound claims on an Etcd and a Lease
//! pool, had a stale write fenced and an acquisition time out), promtool accepts the rules
//! and their unit tests pass, and the component builds the two ConfigMaps. Its own test
//! binary: the failpoint must stop a replica at this test's ledger write, and replicas of
//! other tests would write first.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use support::{Cli, Operator, apply, create_claim, unique};

fn monitoring() -> PathBuf {
    support::repo().join("deploy/monitoring")
}

/// Every `lockguard_…` metric name in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(at) = rest.find("lockguard_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            into.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
}

/// The PromQL expressions of the dashboard's panels, with Grafana's variables filled in.
fn dashboard_exprs() -> Vec<String> {
    let text = std::fs::read_to_string(monitoring().join("lockguard-dashboard.json")).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            assert!(!expr.trim().is_empty(), "panel {} has an empty query", panel["title"]);
            exprs.push(expr.replace("$__rate_interval", "5m").replace("$__range", "1h"));
        }
    }
    assert!(exprs.len() >= 10, "the dashboard has {} queries", exprs.len());
    exprs
}

/// The alert rules file as YAML.
fn rules() -> Value {
    let text = std::fs::read_to_string(monitoring().join("lockguard-alerts.yaml")).expect("rules");
    serde_norway::from_str(&text).expect("the rules are YAML")
}

fn rule_exprs() -> Vec<String> {
    let mut exprs = Vec::new();
    for group in rules()["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            exprs.push(rule["expr"].as_str().expect("expr").to_string());
        }
    }
    exprs
}

/// The names a scrape lets a query use: each sample's name, and for each declared family
/// the names its type gives it (a counter's `_total`, a histogram's `_bucket`, `_sum` and
/// `_count`, a gauge's own name). prometheus-client leaves a labelled family without samples
/// out altogether: hence the faults the test causes.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else { continue };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

fn promtool() -> PathBuf {
    devenv::binary("promtool").expect("bin/promtool (hack/tools.sh builds it)")
}

/// Runs bin/promtool; its output, or a panic with it.
fn promtool_ok(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alert_rules_use_only_metrics_the_operator_exports() {
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs().iter().chain(&rule_exprs()) {
        metric_names(expr, &mut used);
    }
    for core in [
        "lockguard_locks_lost_total",
        "lockguard_fenced_writes_rejected_total",
        "lockguard_ledger_writes_total",
    ] {
        assert!(used.contains(core), "{core} is neither on the dashboard nor in the rules: {used:?}");
    }

    // Real replicas make every family the dashboard and the rules use show samples:
    // 1. replica 0 stops (failpoint) holding an Etcd pool's lock before its ledger write;
    //    replica 1 takes the lock after the 2 s TTL and binds the claim; thawed, replica 0
    //    writes with its old token and is refused (lost lock, fenced write, reconcile error);
    // 2. a claim on a Lease pool is bound (the Lease backend's lock series);
    // 3. a shell holds an Etcd pool's lock, so acquisitions time out (acquire errors).
    let mut op = Operator::start(0, "monitoring").await;
    op.replicas.add_with(&[("LOCKGUARD_FAILPOINT", "stop-before-ledger-write")]);
    let pool = |name: &str, backend: &str, acquire: u32| {
        format!(
            "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\n\
             spec: {{items: {{range: {{start: 1, end: 10}}}}, \
             lock: {{backend: {backend}, ttlSeconds: 2, acquireTimeoutSeconds: {acquire}}}}}\n"
        )
    };
    // The fixture's pool is the one whose stale write is fenced.
    apply(&pool(&op.pool, "Etcd", 20));
    op.claim("fenced", 2).await;
    op.replicas.until_stopped(0, Duration::from_secs(30)).await;
    op.replicas.add();
    let lease = unique("metrics-lease");
    apply(&pool(&lease, "Lease", 20));
    create_claim(&op.ns, "lease", &lease, 2).await;
    op.bound_exactly(2, Duration::from_secs(60), "the claims were not bound").await;
    op.replicas.signal(0, libc::SIGCONT);
    op.replicas
        .eventually(Duration::from_secs(30), "replica 0's stale write was refused", || async {
            (op.replicas.metric_sum("lockguard_fenced_writes_rejected_total") >= 1.0).then_some(())
        })
        .await;

    let busy = unique("metrics-busy");
    let holder = Cli::lock(&[&format!("lockguard/pools/{busy}"), "--ttl", "30"]);
    holder.held(Duration::from_secs(10));
    apply(&pool(&busy, "Etcd", 1));
    create_claim(&op.ns, "busy", &busy, 1).await;
    op.replicas
        .eventually(Duration::from_secs(30), "an acquisition timed out", || async {
            (op.replicas.metric_sum("lockguard_lock_acquire_errors_total") >= 1.0).then_some(())
        })
        .await;

    let mut scrape = String::new();
    for i in 0..op.replicas.len() {
        let addr = op.replicas.metrics_addr(i).expect("the replica logs its metrics address");
        let (status, body) = devenv::http_get(&addr, "/metrics").expect("scrape /metrics");
        assert_eq!(status, 200, "{body}");
        scrape.push_str(&body);
    }
    for backend in ["etcd", "lease"] {
        let sample = format!("lockguard_lock_acquire_wait_seconds_count{{backend=\"{backend}\"}}");
        assert!(scrape.contains(&sample), "no {backend} lock was taken:\n{scrape}");
    }

    let exported = exported_names(&scrape);
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}\nexported: {exported:?}");
    println!("{} metric names used, all exported", used.len());
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = monitoring();
    let checked = promtool_ok(&["check", "rules", "lockguard-alerts.yaml"], &dir);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool_ok(&["test", "rules", "lockguard-alerts_test.yaml"], &dir);
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every dashboard query is valid PromQL: promtool checks them as recording rules.
    let mut recording = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, expr) in dashboard_exprs().iter().enumerate() {
        recording
            .push_str(&format!("  - record: dashboard:query_{i}\n    expr: {}\n", serde_json::json!(expr)));
    }
    let scratch = devenv::run_dir("dashboard-promql").expect("run dir");
    std::fs::write(scratch.join("dashboard.yaml"), recording).expect("write");
    promtool_ok(&["check", "rules", "dashboard.yaml"], &scratch);

    // The PrometheusRule (for the Prometheus Operator) carries the same rules.
    let text = std::fs::read_to_string(dir.join("prometheusrule.yaml")).expect("prometheusrule.yaml");
    let object: Value = serde_norway::from_str(&text).expect("YAML");
    assert_eq!(object["kind"], "PrometheusRule");
    assert!(
        object["spec"]["groups"] == rules()["groups"],
        "prometheusrule.yaml differs from lockguard-alerts.yaml"
    );
}

#[test]
fn the_monitoring_component_builds_the_dashboard_and_rules_config_maps() {
    // Switched on as default/kustomization.yaml's comment says: uncomment `- ../monitoring`.
    let deploy = support::repo().join("deploy");
    let default = std::fs::read_to_string(deploy.join("default/kustomization.yaml")).expect("default");
    assert!(default.lines().any(|l| l == "#- ../monitoring"), "the commented line is gone:\n{default}");
    let dir = devenv::run_dir("monitoring-on").expect("run dir");
    // kustomize takes no absolute directories: `deploy` relative to `dir`.
    let up = dir.components().skip(1).map(|_| "..").collect::<Vec<_>>().join("/");
    let on = default
        .replace("#- ../monitoring", "- ../monitoring")
        .replace("- ../", &format!("- {up}{}/", deploy.display()));
    std::fs::write(dir.join("kustomization.yaml"), on).expect("write");
    let out = Command::new(devenv::binary("kubectl").expect("bin/kubectl"))
        .args(["kustomize", dir.to_str().expect("utf8")])
        .output()
        .expect("kubectl kustomize");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .collect();
    let maps: BTreeMap<&str, &Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .filter_map(|d| Some((d["metadata"]["name"].as_str()?, d)))
        .collect();
    assert!(docs.iter().any(|d| d["kind"] == "Deployment"), "the rest is still built");

    let dashboard = maps.get("lockguard-grafana-dashboard").expect("the dashboard ConfigMap, no name suffix");
    assert_eq!(dashboard["metadata"]["namespace"], "lockguard-system");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1", "Grafana's sidecar label");
    let json = dashboard["data"]["lockguard-dashboard.json"].as_str().expect("the dashboard file");
    let parsed: Value = serde_json::from_str(json).expect("JSON");
    assert_eq!(parsed["uid"], "lockguard");

    let rules_map = maps.get("lockguard-prometheus-rules").expect("the rules ConfigMap, no name suffix");
    let file = rules_map["data"]["lockguard-alerts.yaml"].as_str().expect("the rule file");
    let parsed: Value = serde_norway::from_str(file).expect("YAML");
    assert!(parsed["groups"] == rules()["groups"]);
}
