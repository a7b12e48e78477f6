#!/usr/bin/env bash
# `make demo`: the article's story on a local control plane.
#   1. kube-apiserver + etcd, and a separate lock etcd (hack/devenv)
#   2. CRDs and RBAC installed with kubectl; three operator replicas under that RBAC
#   3. a contended Etcd pool and a Lease pool with many claims: lock waits, tokens, allocations
#   4. split brain made visible: one replica stops itself (SIGSTOP) while holding a pool's
#      lock; after the TTL another takes over; thawed, its stale write is rejected
#   5. a pool shared by teams: one namespace it does not admit, one past its limit
#   6. a summary (kubectl get lockguard), then it runs until Ctrl-C or DEMO_SECONDS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lockguard=${LOCKGUARD_BIN:-$root/target/debug/lockguard}
devenv=${DEVENV_BIN:-$root/target/debug/devenv}
seconds=${DEMO_SECONDS:-}
export PATH="$root/bin:$PATH" NO_COLOR=1
run=$(mktemp -d "${TMPDIR:-/tmp}/lockguard-demo.XXXXXX")
pids=()

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
cleanup() {
  trap - EXIT INT TERM
  say "tearing down"
  for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

say "starting kube-apiserver + etcd and a lock etcd (hack/devenv)"
"$devenv" up --env-file "$run/env" >"$run/devenv.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do [ -s "$run/env" ] && break; sleep 0.2; done
[ -s "$run/env" ] || { cat "$run/devenv.log"; echo "demo: the control plane did not start" >&2; exit 1; }
# shellcheck disable=SC1091
source "$run/env"
grep -E '^devenv: (kube-apiserver|up)' "$run/devenv.log" || true

say "installing the CRDs, then namespace and RBAC from deploy/"
kubectl apply -k "$root/crds"
kubectl wait --for=condition=Established --timeout=60s crd/pools.lockguard.dev crd/claims.lockguard.dev
kubectl apply -f "$root/deploy/manager/namespace.yaml"; kubectl apply -k "$root/deploy/rbac"

# The replicas run as the lockguard ServiceAccount, with a token from the TokenRequest API.
server=$(awk '/server:/ {print $2; exit}' "$KUBECONFIG")
ca=$(awk '/certificate-authority:/ {print $2; exit}' "$KUBECONFIG")
token=$(kubectl create token lockguard -n lockguard-system --duration=24h)
cat >"$run/operator.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: $server, certificate-authority: $ca}}]
users: [{name: lockguard, user: {token: $token}}]
contexts: [{name: demo, context: {cluster: demo, user: lockguard}}]
current-context: demo
KUBECONFIG

say "starting 3 operator replicas (pools divided between them); replica-2 carries a failpoint"
for i in 0 1 2; do
  failpoint=""
  [ "$i" = 2 ] && failpoint=stop-before-ledger-write
  KUBECONFIG="$run/operator.kubeconfig" LOCKGUARD_FAILPOINT=$failpoint RUST_LOG=info,kube=warn \
    "$lockguard" run --identity "replica-$i" --metrics-addr 127.0.0.1:0 --member-lease-seconds 3 \
    >"$run/replica-$i.log" 2>&1 &
  pids+=($!)
  eval "replica_$i=$!"
done
# Interleaved replica logs, the lines that tell the story (stopping tail ends the filter).
tail -q -n +1 -F "$run"/replica-{0,1,2}.log 2>/dev/null > >(grep --line-buffered -E \
    'allocated|freed|not bound|fenced|lost|failpoint|elected|LockUnavailable' \
  | sed -u -E 's/^[0-9T:.-]+Z +//; s/lockguard::controller::(claim|pool|context): //') &
pids+=($!)
for i in 0 1 2; do
  for _ in $(seq 100); do grep -q "controllers started" "$run/replica-$i.log" && break; sleep 0.1; done
done

say "a contended Etcd pool (100 ports) and a Lease pool (6 VLANs), TTL 5 s; 40 claims in 4 namespaces"
kubectl apply -f - <<'YAML'
apiVersion: lockguard.dev/v1alpha1
kind: Pool
metadata: {name: demo-ports}
spec: {items: {range: {start: 30000, end: 30099}}, lock: {backend: Etcd, ttlSeconds: 5, acquireTimeoutSeconds: 20}}
---
apiVersion: lockguard.dev/v1alpha1
kind: Pool
metadata: {name: demo-vlans}
spec: {items: {list: [vlan-100, vlan-101, vlan-102, vlan-103, vlan-104, vlan-105]}, lock: {backend: Lease, ttlSeconds: 5, acquireTimeoutSeconds: 20}}
YAML
{
  for ns in team-a team-b team-c team-d; do
    printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n' "$ns"
    for i in 1 2 3 4 5 6 7 8; do
      printf 'apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {name: svc-%s, namespace: %s}\nspec: {poolRef: demo-ports, count: 2}\n---\n' "$i" "$ns"
    done
    for i in 1 2; do
      printf 'apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {name: net-%s, namespace: %s}\nspec: {poolRef: demo-vlans, count: 1}\n---\n' "$i" "$ns"
    done
  done
} | kubectl apply -f - >/dev/null

say "split brain: waiting for replica-2 to stop itself while it holds a lock"
for _ in $(seq 200); do grep -q "failpoint" "$run/replica-2.log" && break; sleep 0.1; done
if grep -q "failpoint" "$run/replica-2.log"; then
  echo "replica-2 is frozen (SIGSTOP) inside its critical section. Its member Lease lapses after 3 s"
  echo "and another replica takes its pools; its lock keeps no keep-alive: after the 5 s TTL the"
  echo "other replica takes the lock with a higher fencing token."
  sleep 7
  say "thawing replica-2 (SIGCONT): it still believes it holds the lock and writes its ledger"
  kill -CONT "$replica_2"
  for _ in $(seq 100); do grep -q "fenced ledger write rejected" "$run/replica-2.log" && break; sleep 0.1; done
  grep -h -m1 "fenced ledger write rejected" "$run/replica-2.log" | sed -E 's/^[0-9T:.-]+Z +//' || echo "(no rejected write seen)"
else
  echo "(replica-2 never held a lock with work to do; no split brain this run)"
fi

say "a pool shared by teams: it admits namespaces labelled tenant=approved, 4 items each"
kubectl label namespace team-a team-b team-c tenant=approved >/dev/null
kubectl apply -f - <<'YAML'
apiVersion: lockguard.dev/v1alpha1
kind: Pool
metadata: {name: demo-ids}
spec:
  items: {range: {start: 1, end: 50}}
  allowedNamespaces: {from: Selector, selector: {matchLabels: {tenant: approved}}}
  limits: {maxItemsPerNamespace: 4}
  lock: {backend: Etcd, ttlSeconds: 5, acquireTimeoutSeconds: 20}
YAML
{
  for ns in team-a team-b team-c team-d; do
    printf 'apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {name: id-1, namespace: %s}\nspec: {poolRef: demo-ids, count: 2}\n---\n' "$ns"
  done
  printf 'apiVersion: lockguard.dev/v1alpha1\nkind: Claim\nmetadata: {name: id-2, namespace: team-a}\nspec: {poolRef: demo-ids, count: 3}\n'
} | kubectl apply -f - >/dev/null

say "waiting until 41 claims are bound, 2 wait for a VLAN (PoolExhausted), 1 is refused (NamespaceNotAllowed), 1 is past its limit"
reasons() { kubectl get claims -A -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Bound")].reason}{"\n"}{end}'; }
for _ in $(seq 120); do
  [ "$(reasons | grep -c '^Allocated$')" = 41 ] && [ "$(reasons | grep -c '^PoolExhausted$')" = 2 ] \
    && [ "$(reasons | grep -c '^NamespaceNotAllowed$')" = 1 ] && [ "$(reasons | grep -c '^NamespaceLimitReached$')" = 1 ] && break
  sleep 0.5
done
kubectl get claims -A | grep -v ' True ' || true
say "freeing team-a's VLANs: the waiting claims bind"
kubectl delete claims -n team-a net-1 net-2 --wait=true --timeout=60s
sleep 3

say "summary: kubectl get lockguard -A"
kubectl get lockguard -A
echo
echo "Claims that wait, and why:"
kubectl get claims -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,POOL:.spec.poolRef,REASON:.status.conditions[?(@.type=="Bound")].reason,MESSAGE:.status.conditions[?(@.type=="Bound")].message' \
  | awk 'NR == 1 || $4 != "Allocated"'
echo
echo "Events by reason:"
kubectl get events -A -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' | sort | uniq -c | sort -rn
echo
addr=$(grep -h -o -m1 'metrics=[0-9.:]*' "$run/replica-0.log" | cut -d= -f2 || true)
if [ -n "$addr" ]; then
  echo "Lock metrics of replica-0 (http://$addr/metrics):"
  { exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3; } 2>/dev/null \
    | grep -E '^lockguard_(lock_acquire_wait_seconds_(count|sum)|lock_hold_seconds_count|fenced_writes_rejected_total|locks_lost_total|reconciles_total)' || true
fi

# The story as one picture, from the replicas' logs (LOCKGUARD_DEMO_OUT: where to write it).
say "the lock timeline: which replica held which pool's lock, and when"
timeline=${LOCKGUARD_DEMO_OUT:-$root/target/demo/lock-timeline.svg}
if "$devenv" timeline --out "$timeline" "$run"/replica-{0,1,2}.log; then
  echo "open it in a browser: a lane per pool and replica, bars labelled with their fencing tokens"
else
  echo "demo: the lock timeline could not be drawn" >&2
fi

if [ -n "$seconds" ]; then
  say "DEMO_SECONDS=$seconds: stopping by itself"
  sleep "$seconds"
else
  say "running; Ctrl-C stops and tears everything down"
  wait "${pids[0]}"
fi
