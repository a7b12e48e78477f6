//! The operator end to end: CRDs and RBAC applied with kubectl, three `lockguard run`
//! replicas under the operator's ServiceAccount, all active at once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use kube::api::{Api, DeleteParams};
use lockguard::api::{Claim, Pool};
use support::{
    Operator, Replicas, apply, audit, bound_exactly, claims_in, create_claim, event_reasons, eventually,
    install, kube_client, kubectl, kubectl_ok, lock_etcd, namespace, pool_yaml, unique,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_bind_300_claims_uniquely_and_free_them_on_delete() {
    let mut op = Operator::start(3, "claims").await;
    let (ports, vlans) = (&op.pool, unique("vlans"));
    op.apply_pool("{range: {start: 30000, end: 30499}}", "Etcd");
    let names: Vec<String> = (0..400).map(|i| format!("vlan-{i}")).collect();
    apply(&pool_yaml(&vlans, &format!("{{list: [{}]}}", names.join(",")), "Lease"));

    let mut namespaces = vec![op.ns.clone()];
    for _ in 1..5 {
        namespaces.push(namespace("claims").await);
    }
    // 300 claims: 60 per namespace, alternating pools, 1 or 2 items each.
    for i in 0..300 {
        let pool = if i % 2 == 0 { ports } else { &vlans };
        create_claim(&namespaces[i % 5], &format!("c{i}"), pool, 1 + (i % 2) as i32).await;
    }
    op.replicas
        .eventually(Duration::from_secs(120), "not all 300 claims bound in time", || {
            bound_exactly(&namespaces, 300)
        })
        .await;
    assert_eq!(audit(&[ports, &vlans]).await, Ok(150 + 300));
    assert!(op.replicas.all_alive(), "a replica died\n{}", op.replicas.tails());
    // Every replica says it is ready (the Deployment's readinessProbe) once its caches synced.
    for i in 0..3 {
        let addr = op.replicas.metrics_addr(i).expect("the replica logs its metrics address");
        for path in ["/healthz", "/readyz"] {
            let answer = devenv::http_get(&addr, path);
            assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "replica {i} {path}: {answer:?}");
        }
    }

    // The pools were divided: each pool's claims were given their items by the replica that
    // serves it (another may have served it for a moment while the members settled).
    let members: Vec<String> = (0..3).map(|i| op.replicas.identity(i).to_string()).collect();
    for pool in [ports.as_str(), vlans.as_str()] {
        let needle = format!("pool={pool} ");
        let by: Vec<usize> = (0..3)
            .map(|i| {
                op.replicas
                    .log(i)
                    .lines()
                    .filter(|l| l.contains("allocated claim=") && l.contains(&needle))
                    .count()
            })
            .collect();
        let owner = lockguard::controller::pool_owner(pool, &members).expect("an owner");
        let served = members.iter().position(|m| m == owner).expect("a member");
        assert!(
            2 * by[served] > by.iter().sum::<usize>(),
            "pool {pool}: allocations per replica {by:?}, served by replica {served}"
        );
    }
    let items: HashSet<String> = claims_in(&namespaces)
        .await
        .iter()
        .flat_map(|c| c.status.clone().unwrap_or_default().items)
        .collect();
    assert_eq!(items.len(), 450, "every item held once across both pools");

    // Delete 100 claims (20 per namespace): their items return to the pools.
    for i in 0..100 {
        let api: Api<Claim> = Api::namespaced(kube_client().await, &namespaces[i % 5]);
        api.delete(&format!("c{i}"), &DeleteParams::default()).await.expect("delete claim");
    }
    op.replicas
        .eventually(Duration::from_secs(60), "items of deleted claims not freed", || async {
            let remaining = claims_in(&namespaces).await.len();
            let pools: Api<Pool> = Api::all(kube_client().await);
            let free_ports = pools.get(ports).await.ok()?.status?.free;
            let free_vlans = pools.get(&vlans).await.ok()?.status?.free;
            (remaining == 200 && free_ports == 500 - 100 && free_vlans == 400 - 200).then_some(())
        })
        .await;
    assert_eq!(audit(&[ports, &vlans]).await, Ok(100 + 200));
    assert!(op.replicas.all_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_binds_the_waiting_claim_once_items_are_freed() {
    let op = Operator::start(2, "exhausted").await;
    op.apply_pool("{list: [a, b, c]}", "Etcd");
    op.claim("first", 2).await;
    op.bound("first", Duration::from_secs(30), "the first claim binds").await;

    // The hold that refuses it tells the claim at once: without that it would learn it only
    // from its safety-net recheck (PLANNED_RECHECK, 10 s).
    op.claim("second", 2).await;
    op.reports(
        "second",
        "PoolExhausted",
        Duration::from_secs(5),
        "the second claim reports PoolExhausted at once",
    )
    .await;
    let events = kubectl_ok(&["get", "events", "-n", &op.ns, "-o", "jsonpath={.items[*].reason}"], None);
    assert!(events.contains("PoolExhausted"), "an Event says why: {events}");

    let claims: Api<Claim> = Api::namespaced(kube_client().await, &op.ns);
    claims.delete("first", &DeleteParams::default()).await.expect("delete first");
    op.bound("second", Duration::from_secs(30), "the waiting claim binds once items are freed").await;
    assert_eq!(audit(&[&op.pool]).await, Ok(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_too_small_pool_is_reported_and_bound_once_fixed() {
    let op = Operator::start(1, "missing").await;
    op.claim("early", 3).await;
    op.claim("huge", 50).await;
    op.reports("early", "PoolNotFound", Duration::from_secs(30), "PoolNotFound").await;
    op.apply_pool("{range: {start: 1, end: 10}}", "Lease");
    op.bound("early", Duration::from_secs(30), "bound once the pool exists").await;
    op.reports("huge", "PoolTooSmall", Duration::from_secs(30), "PoolTooSmall").await;
}

/// Each invalid input is refused by `kubectl apply` with its own message.
#[tokio::test]
async fn invalid_input_is_rejected_at_admission_with_a_clear_message() {
    install().await;
    let ns = namespace("invalid").await;
    let pool = |spec: &str| {
        format!(
            "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {}}}\nspec: {spec}\n",
            unique("bad")
        )
    };
    let claim = |name: &str, spec: &str| {
        format!(
            "apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
        )
    };
    let cases = [
        (pool("{items: {range: {start: 10, end: 5}}}"), "start must not be greater than"),
        (pool("{items: {range: {start: 0, end: 70000}}}"), "at most 65536 items"),
        (pool("{items: {range: {start: 1, end: 2}, list: [a]}}"), "exactly one of items.range or items.list"),
        (pool("{items: {}}"), "exactly one of items.range or items.list"),
        (pool("{items: {list: [a, a]}}"), "Duplicate value"),
        (pool("{items: {list: [\"\"]}}"), "at least 1 chars long"),
        (
            pool("{items: {list: [a]}, lock: {ttlSeconds: 1}}"),
            "ttlSeconds in body should be greater than or equal to 2",
        ),
        (
            pool("{items: {list: [a]}, lock: {ttlSeconds: 301}}"),
            "ttlSeconds in body should be less than or equal to 300",
        ),
        (
            pool("{items: {list: [a]}, lock: {acquireTimeoutSeconds: 0}}"),
            "acquireTimeoutSeconds in body should be greater than or equal to 1",
        ),
        (pool("{items: {list: [a]}, lock: {backend: Zookeeper}}"), "supported values: \"Etcd\", \"Lease\""),
        (
            pool("{items: {list: [a]}, allowedNamespaces: {from: Selector}}"),
            "allowedNamespaces.selector is required with from: Selector",
        ),
        (
            pool("{items: {list: [a]}, allowedNamespaces: {selector: {matchLabels: {a: b}}}}"),
            "allowedNamespaces.selector is required with from: Selector, and allowed only with it",
        ),
        (
            pool("{items: {list: [a]}, allowedNamespaces: {from: Some}}"),
            "supported values: \"All\", \"Selector\"",
        ),
        (
            pool("{items: {list: [a]}, limits: {maxItemsPerNamespace: 0}}"),
            "maxItemsPerNamespace in body should be greater than or equal to 1",
        ),
        (
            pool("{items: {list: [a]}, limits: {maxClaimsPerNamespace: -1}}"),
            "maxClaimsPerNamespace in body should be greater than or equal to 1",
        ),
        (claim("zero", "{poolRef: p, count: 0}"), "count in body should be greater than or equal to 1"),
        (
            claim("toomany", "{poolRef: p, count: 65537}"),
            "count in body should be less than or equal to 65536",
        ),
        (claim("nopool", "{count: 1}"), "spec.poolRef: Required value"),
        (claim(&"x".repeat(64), "{poolRef: p, count: 1}"), "at most 63 characters"),
        (
            claim("mismatch", r#"{poolRef: p, count: 2, items: ["a"]}"#),
            "spec.items must name exactly spec.count items",
        ),
        (claim("twice", r#"{poolRef: p, count: 2, items: ["a", "a"]}"#), "Duplicate value"),
    ];
    for (yaml, message) in &cases {
        let out = kubectl(&["apply", "-f", "-"], Some(yaml));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted but must be rejected:\n{yaml}");
        assert!(stderr.contains(message), "expected {message:?} in:\n{stderr}\nfor:\n{yaml}");
    }

    // Transition rules: poolRef is immutable; backend is immutable while items are allocated.
    kubectl_ok(&["apply", "-f", "-"], Some(&claim("fixed", "{poolRef: p, count: 1}")));
    let out = kubectl(&["apply", "-f", "-"], Some(&claim("fixed", "{poolRef: q, count: 1}")));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.poolRef is immutable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let name = unique("busy");
    // A TTL far longer than the test, so that no replica of another test takes this pool
    // over by opening a new lock epoch.
    let busy = format!(
        "apiVersion: lockguard.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\nspec: {{items: {{list: [a, b]}}, lock: {{ttlSeconds: 300}}}}\n"
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&busy));
    let high: i64 = 1 << 50;
    let status = format!(
        r#"{{"status":{{"capacity":2,"allocated":1,"free":1,"lockBackend":"Etcd","lockService":"etcd:1","lockEpoch":5,"fencingToken":{high},"ledger":[{{"claim":"x/y","uid":"u","items":"0"}}]}}}}"#
    );
    kubectl_ok(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", &status], None);
    // Items allocated, and still the backend may change: a new lock epoch fences the old one.
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&busy.replace("lock: {ttlSeconds: 300}", "lock: {ttlSeconds: 300, backend: Lease}")),
    );

    // The fence, by the API server: within an epoch the token may not go down, an epoch may
    // not go back, a new lock service must open a new epoch, and no field may be dropped.
    let refused = [
        (format!(r#"{{"status":{{"fencingToken":{}}}}}"#, high - 1), "stale fencing token"),
        (r#"{"status":{"lockEpoch":4,"fencingToken":1}}"#.to_string(), "stale lock epoch"),
        (r#"{"status":{"lockService":"lease:u2"}}"#.to_string(), "another lock service in the same epoch"),
        (r#"{"status":{"lockEpoch":null}}"#.to_string(), "must carry lockBackend, lockService, lockEpoch"),
    ];
    for (patch, message) in &refused {
        let out =
            kubectl(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", patch], None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{patch}: expected {message:?} in {stderr}");
    }
    let newer = format!(r#"{{"status":{{"fencingToken":{}}}}}"#, high + 1);
    kubectl_ok(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", &newer], None);
    let next_epoch =
        r#"{"status":{"lockEpoch":6,"lockService":"lease:u2","lockBackend":"Lease","fencingToken":1}}"#;
    kubectl_ok(&["patch", "pool", &name, "--subresource=status", "--type=merge", "-p", next_epoch], None);
}

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = lockguard::api::crds_yaml().expect("render");
    let checked_in = std::fs::read_to_string(support::repo().join("crds/lockguard.dev.yaml"))
        .expect("crds/lockguard.dev.yaml");
    assert!(generated == checked_in, "crds/ is stale: run `make crds` and commit the result");
}

#[tokio::test]
async fn deploy_kustomization_is_accepted_by_the_api_server_under_restricted_pod_security() {
    install().await;
    let deploy = support::repo().join("deploy");
    let out = kubectl(&["apply", "--dry-run=server", "-k", deploy.to_str().expect("utf8")], None);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    for kind in [
        "customresourcedefinition.apiextensions.k8s.io/pools.lockguard.dev",
        "deployment.apps/lockguard",
        "statefulset.apps/lockguard-etcd",
        "flowschema",
        "networkpolicy.networking.k8s.io/lockguard-operator",
        "networkpolicy.networking.k8s.io/lockguard-etcd",
        "service/lockguard-metrics",
        "clusterrole.rbac.authorization.k8s.io/lockguard-claim-editor",
        "clusterrole.rbac.authorization.k8s.io/lockguard-claim-viewer",
        "clusterrole.rbac.authorization.k8s.io/lockguard-pool-viewer",
    ] {
        assert!(stdout.contains(kind), "{kind} missing from:\n{stdout}");
    }
    assert!(!stderr.contains("violate PodSecurity"), "the namespace enforces restricted:\n{stderr}");
    // Both forms users type work for the CRDs: `-k crds/` (install above) and plain `-f crds/`
    // (the kustomization file is named `Kustomization`, which `-f` does not read).
    let crds = support::repo().join("crds");
    let plain = kubectl(&["apply", "--dry-run=server", "-f", crds.to_str().expect("utf8")], None);
    assert!(plain.status.success(), "kubectl apply -f crds/: {}", String::from_utf8_lossy(&plain.stderr));
    // The samples are applied for real: they are valid under the CRDs' admission rules.
    let samples = support::repo().join("deploy/samples");
    kubectl_ok(&["apply", "-f", samples.to_str().expect("utf8")], None);
}

/// `kubectl kustomize DIR` (no server needed), as YAML documents.
fn kustomize(dir: &std::path::Path) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let out = std::process::Command::new(devenv::binary("kubectl").expect("bin/kubectl"))
        .args(["kustomize", dir.to_str().expect("utf8")])
        .output()
        .expect("run kubectl kustomize");
    assert!(out.status.success(), "kubectl kustomize {dir:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_norway::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|doc| serde_json::Value::deserialize(doc).expect("a YAML document"))
        .collect()
}

/// `to` as a path relative to directory `from` (kustomize takes no absolute directories).
fn up_to(from: &std::path::Path, to: &std::path::Path) -> String {
    let up = from.components().skip(1).map(|_| "..").collect::<Vec<_>>().join("/");
    format!("{up}{}", to.display())
}

/// The value of env `name` of the lockguard container of the Deployment in `docs`.
fn operator_env(docs: &[serde_json::Value], name: &str) -> Option<String> {
    let deployment =
        docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "lockguard")?;
    let container = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "lockguard")?;
    let var = container["env"].as_array()?.iter().find(|e| e["name"] == name)?;
    var["value"].as_str().map(str::to_string)
}

#[test]
fn the_lock_etcd_is_a_component_that_one_line_switches_off_and_one_patch_replaces() {
    let deploy = support::repo().join("deploy");
    let with_etcd = kustomize(&deploy);
    let kinds = |docs: &[serde_json::Value]| -> Vec<String> {
        docs.iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    };
    assert!(
        with_etcd.iter().any(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == "lockguard-etcd"),
        "{:?}",
        kinds(&with_etcd)
    );
    assert_eq!(
        operator_env(&with_etcd, "LOCKGUARD_ETCD_ENDPOINTS").as_deref(),
        Some("https://lockguard-etcd-client.lockguard-system.svc:2379"),
        "the etcd component points the operator at its Service"
    );
    for (name, file) in [
        ("LOCKGUARD_ETCD_CA", "ca.crt"),
        ("LOCKGUARD_ETCD_CERT", "tls.crt"),
        ("LOCKGUARD_ETCD_KEY", "tls.key"),
    ] {
        assert_eq!(
            operator_env(&with_etcd, name),
            Some(format!("/etc/lockguard/etcd/{file}")),
            "over mutual TLS, with the client certificate mounted"
        );
    }

    // What default/kustomization.yaml tells a user with an etcd of their own: delete the
    // component's line, uncomment the patch (and set the endpoints in it).
    let default = std::fs::read_to_string(deploy.join("default/kustomization.yaml")).expect("default");
    let dir = devenv::run_dir("own-etcd").expect("run dir");
    let mut own = String::new();
    let (mut removed, mut in_patch, mut uncommented) = (false, false, 0);
    for line in default.lines() {
        if line == "- ../etcd" {
            removed = true;
            continue;
        }
        in_patch = line == "#patches:" || (in_patch && line.starts_with('#'));
        let line = if in_patch {
            uncommented += 1;
            &line[1..]
        } else {
            line
        };
        let line = line.replace("- ../", &format!("- {}/", up_to(&dir, &deploy)));
        own.push_str(&line);
        own.push('\n');
    }
    assert!(removed && uncommented >= 2, "default/kustomization.yaml lost its instructions:\n{default}");
    std::fs::write(dir.join("kustomization.yaml"), &own).expect("write kustomization");
    let without_etcd = kustomize(&dir);
    let etcd_parts: Vec<String> = kinds(&without_etcd).into_iter().filter(|k| k.contains("etcd")).collect();
    assert!(etcd_parts.is_empty(), "the etcd component left {etcd_parts:?}");
    assert!(!without_etcd.iter().any(|d| d["kind"] == "StatefulSet"), "{:?}", kinds(&without_etcd));
    let endpoints = operator_env(&without_etcd, "LOCKGUARD_ETCD_ENDPOINTS").unwrap_or_default();
    assert!(endpoints.starts_with("https://"), "the patch sets the user's endpoints: {endpoints:?}\n{own}");
    // Everything else is still there.
    for part in ["Deployment/lockguard", "ClusterRole/lockguard-claim-editor", "Namespace/lockguard-system"] {
        assert!(kinds(&without_etcd).iter().any(|k| k == part), "{part} missing: {:?}", kinds(&without_etcd));
    }
}

#[tokio::test]
async fn the_claim_roles_aggregate_into_edit_admin_and_view_and_grant_claims_only() {
    // install() applied deploy/rbac for real.
    install().await;
    let labels_of = |role: &str| -> serde_json::Map<String, serde_json::Value> {
        let json = kubectl_ok(&["get", "clusterrole", role, "-o", "json"], None);
        let role: serde_json::Value = serde_json::from_str(&json).expect("json");
        role["metadata"]["labels"].as_object().cloned().unwrap_or_default()
    };
    // No controller-manager runs here, so the built-in roles are not filled in: check that
    // their aggregation selectors pick our roles, as the aggregation controller would.
    let selects = |builtin: &str, role: &str| -> bool {
        let json = kubectl_ok(&["get", "clusterrole", builtin, "-o", "json"], None);
        let builtin: serde_json::Value = serde_json::from_str(&json).expect("json");
        let labels = labels_of(role);
        builtin["aggregationRule"]["clusterRoleSelectors"].as_array().into_iter().flatten().any(|selector| {
            selector["matchLabels"].as_object().is_some_and(|wanted| {
                !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
    };
    assert!(selects("edit", "lockguard-claim-editor"), "edit does not aggregate lockguard-claim-editor");
    assert!(selects("admin", "lockguard-claim-editor"), "admin does not aggregate lockguard-claim-editor");
    assert!(selects("view", "lockguard-claim-viewer"), "view does not aggregate lockguard-claim-viewer");
    assert!(!selects("view", "lockguard-claim-editor"), "view must not get the editor's verbs");

    // What they grant, to people bound to them in one namespace.
    let (ns, other) = (namespace("claim-roles").await, namespace("claim-roles-other").await);
    let (alice, bob) = (unique("alice"), unique("bob"));
    for (binding, role, user) in
        [("editor", "lockguard-claim-editor", &alice), ("viewer", "lockguard-claim-viewer", &bob)]
    {
        let role = format!("--clusterrole={role}");
        kubectl_ok(&["create", "rolebinding", binding, &role, "--user", user, "-n", &ns], None);
    }
    // `resource/sub` asks about a subresource (in kubectl's own syntax it would name an object).
    let can = |user: &str, verb: &str, resource: &str, namespace: &str| -> bool {
        let (resource, sub) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
        let sub = sub.map(|s| format!("--subresource={s}"));
        let mut args = vec!["auth", "can-i", verb, resource, "--as", user, "-n", namespace];
        args.extend(sub.as_deref());
        let out = kubectl(&args, None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for verb in ["create", "update", "patch", "delete", "get", "list", "watch"] {
        assert!(can(&alice, verb, "claims.lockguard.dev", &ns), "the editor may {verb} claims");
    }
    for verb in ["get", "list", "watch"] {
        assert!(can(&bob, verb, "claims.lockguard.dev", &ns), "the viewer may {verb} claims");
    }
    for (user, verb, resource, namespace) in [
        (&alice, "create", "claims.lockguard.dev", &other),
        (&alice, "update", "claims.lockguard.dev/status", &ns),
        (&alice, "create", "pools.lockguard.dev", &ns),
        (&alice, "delete", "pools.lockguard.dev", &ns),
        (&alice, "update", "pools.lockguard.dev/status", &ns),
        (&bob, "create", "claims.lockguard.dev", &ns),
        (&bob, "delete", "claims.lockguard.dev", &ns),
        (&bob, "get", "claims.lockguard.dev", &other),
    ] {
        assert!(!can(user, verb, resource, namespace), "{user} may not {verb} {resource} in {namespace}");
    }
    // Pools are not theirs to read (a ledger names every tenant's claims), not even in a
    // ClusterRoleBinding of these roles: lockguard-pool-viewer is for the platform team.
    let (carol, dave) = (unique("carol"), unique("dave"));
    for (user, role) in [(&carol, "lockguard-claim-editor"), (&dave, "lockguard-pool-viewer")] {
        let role = format!("--clusterrole={role}");
        kubectl_ok(&["create", "clusterrolebinding", user, &role, "--user", user], None);
    }
    let lists_pools = |user: &str| {
        let out = kubectl(&["auth", "can-i", "list", "pools.lockguard.dev", "--as", user], None);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for user in [&alice, &bob, &carol] {
        assert!(!lists_pools(user), "{user} lists pools");
    }
    assert!(lists_pools(&dave), "the pool viewer lists pools");
    assert!(!can(&dave, "update", "pools.lockguard.dev/status", "default"), "the pool viewer writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hold_serves_many_claims_and_a_burst_binds_uniquely() {
    use futures::{StreamExt, stream};
    let op = Operator::start(3, "burst").await;
    op.apply_pool("{range: {start: 1, end: 1000}}", "Etcd");
    // 200 claims at once, as `kubectl apply -f` of a directory does.
    let op = &op;
    stream::iter(0..200)
        .map(|i| async move { op.claim(&format!("c{i}"), 1 + i % 3).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    op.bound_exactly(200, Duration::from_secs(90), "not all 200 claims bound").await;
    assert_eq!(audit(&[&op.pool]).await, Ok((0..200).map(|i| 1 + i % 3).sum::<usize>()));

    // Each ledger write served many claims: far fewer writes than claims.
    let writes = op.replicas.metric_sum("lockguard_ledger_writes_total");
    assert!(writes >= 1.0, "the metric counts ledger writes\n{}", op.replicas.tails());
    assert!(
        writes <= 50.0,
        "{writes} ledger writes for 200 claims: holds are not batched\n{}",
        op.replicas.tails()
    );
    // The pool's Event counts the claims of each write.
    let events = event_reasons(&op.pool);
    assert!(events.contains("Allocated"), "the pool has Allocated Events: {events}");
}

/// A replica answers `/healthz` at once and `/readyz` with 200 once its caches synced: the
/// kubelet's readiness probe, without which a Deployment never finishes rolling out.
#[tokio::test]
async fn a_replica_turns_ready_once_its_caches_synced() {
    let kubeconfig = install().await;
    let replicas = Replicas::start(1, &kubeconfig, &lock_etcd());
    let addr = eventually(Duration::from_secs(30), || async { replicas.metrics_addr(0) })
        .await
        .expect("the replica logs its metrics address");
    let status = |path: &'static str| {
        let addr = addr.clone();
        async move { devenv::http_get(&addr, path).map(|(status, _)| status) }
    };
    assert_eq!(status("/healthz").await, Some(200));
    let ready = eventually(Duration::from_secs(30), || async {
        (status("/readyz").await == Some(200)).then_some(())
    });
    assert!(ready.await.is_some(), "/readyz never answered 200:\n{}", replicas.log(0));
    assert!(replicas.log(0).contains("caches synced; ready"), "{}", replicas.log(0));
}

/// The cert-manager Component, switched on as its kustomization says, makes the same four
/// Secrets `lockguard certs` makes, with the same users and the same names for the members,
/// and turns the Job into one that waits for them. (No cert-manager runs here: what it does
/// with these objects is not tested.)
#[test]
fn the_cert_manager_component_makes_the_secrets_lockguard_certs_would() {
    let deploy = support::repo().join("deploy");
    let default = std::fs::read_to_string(deploy.join("default/kustomization.yaml")).expect("default");
    assert!(default.lines().any(|l| l == "- ../etcd"), "{default}");
    let dir = devenv::run_dir("cert-manager").expect("run dir");
    let on = default
        .replace("- ../etcd\n", "- ../etcd\n- ../etcd-cert-manager\n")
        .replace("- ../", &format!("- {}/", up_to(&dir, &deploy)));
    std::fs::write(dir.join("kustomization.yaml"), on).expect("write");
    let docs = kustomize(&dir);
    let certificates: Vec<&serde_json::Value> = docs.iter().filter(|d| d["kind"] == "Certificate").collect();
    let secret = |name: &str| {
        certificates
            .iter()
            .find(|c| c["spec"]["secretName"] == name)
            .unwrap_or_else(|| panic!("no Certificate makes Secret {name}"))
    };
    assert_eq!(secret("lockguard-etcd-ca")["spec"]["isCA"], true);
    assert_eq!(
        secret("lockguard-etcd-client")["spec"]["commonName"],
        "lockguard",
        "the operator's etcd user"
    );
    assert_eq!(secret("lockguard-etcd-root")["spec"]["commonName"], "root");
    let member = secret("lockguard-etcd-member");
    let mut names: Vec<String> = ["dnsNames", "ipAddresses"]
        .iter()
        .flat_map(|k| member["spec"][k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let mut expected = lockguard::certs::member_names("lockguard-etcd", "lockguard-system");
    names.sort();
    expected.sort();
    assert_eq!(names, expected, "the members' names as lockguard certs gives them");
    let usages = member["spec"]["usages"].to_string();
    assert!(usages.contains("server auth") && usages.contains("client auth"), "{usages}");
    let job = docs.iter().find(|d| d["kind"] == "Job").expect("the Job");
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--external") && args.contains("--etcd-endpoints=https://"), "{args}");
}
