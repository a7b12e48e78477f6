#!/usr/bin/env bash
# Builds the Go-built tools (kube-apiserver, kubectl, kube-controller-manager, etcd, etcdctl,
# etcdutl, promtool, and kube-apiserver and kubectl of each older supported Kubernetes) from
# the wrapper modules in hack/ into a cache outside the clone, then links them into bin/.
# `hack/tools.sh node` builds instead what the one-node cluster adds (`make node-tools`):
# kubelet, kube-scheduler, kube-proxy (hack/kube-node, like kube-controller-manager), CoreDNS
# (hack/coredns) and the pause binary of the sandbox image (gcc -static of the k8s module's
# build/pause/linux/pause.c).
# A cache entry is keyed by the pinned version and go.sum, so it is rebuilt only when a
# pin changes, and a fresh clone on the same machine reuses it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${LOCKGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lockguard}
mkdir -p "$root/bin"

pinned() { # module dir, module path -> version required in go.mod
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$root/hack/$1/go.mod"
}

# build DIR MODULE_FOR_VERSION BIN:PKG... ; extra go build flags come from LDFLAGS_<bin>
build() {
  local dir=$1 mod=$2; shift 2
  local version sum out
  version=$(pinned "$dir" "$mod")
  [ -n "$version" ] || { echo "tools: no version of $mod in hack/$dir/go.mod" >&2; exit 1; }
  sum=$(sha256sum "$root/hack/$dir/go.sum" | cut -c1-12)
  out="$cache/$dir-$version-$sum"
  for spec in "$@"; do
    local name=${spec%%:*} pkg=${spec#*:}
    if [ ! -x "$out/$name" ]; then
      echo "tools: building $name $version (cache: $out)" >&2
      mkdir -p "$out"
      local ldflags="" tags=""
      if [[ "$dir" == kube || "$dir" == kube-* ]]; then
        local minor=${version#v1.}; minor=${minor%%.*}
        ldflags="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
      fi
      if [ "$dir" = prometheus ]; then
        # Module v0.316.0 is Prometheus 3.16.0. promtool only checks and tests rule files
        # here: the service discovery plugins (cloud SDKs) are left out of the build.
        local n=${version#v0.} ; local mm=${n%%.*}
        ldflags="-X github.com/prometheus/common/version.Version=$((mm / 100)).$((mm % 100)).${n#*.}"
        tags=remove_all_sd
      fi
      local t0=$SECONDS
      (cd "$root/hack/$dir" && CGO_ENABLED=0 go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
      mv "$out/$name.tmp" "$out/$name"
      echo "tools: built $name in $((SECONDS - t0)) s" >&2
    fi
    ln -sfn "$out/$name" "$root/bin/$name"
  done
}

# The sandbox (pause) binary: static, from the k8s.io/kubernetes module of hack/kube-node.
pause() {
  local version sum out src
  version=$(pinned kube-node k8s.io/kubernetes)
  sum=$(sha256sum "$root/hack/kube-node/go.sum" | cut -c1-12)
  out="$cache/kube-node-$version-$sum"
  if [ ! -x "$out/pause" ]; then
    src=$(cd "$root/hack/kube-node" && go mod download -json k8s.io/kubernetes | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -f "$src/build/pause/linux/pause.c" ] || { echo "tools: no pause.c in $src" >&2; exit 1; }
    command -v gcc >/dev/null || { echo "tools: gcc is needed for the pause binary" >&2; exit 1; }
    echo "tools: building pause (static) from $src" >&2
    mkdir -p "$out"
    gcc -Os -static -Wall -Werror -DVERSION="$version" -o "$out/pause.tmp" "$src/build/pause/linux/pause.c"
    strip "$out/pause.tmp"
    mv "$out/pause.tmp" "$out/pause"
  fi
  ln -sfn "$out/pause" "$root/bin/pause"
}

if [ "${1:-}" = node ]; then
  build kube-node k8s.io/kubernetes kubelet:k8s.io/kubernetes/cmd/kubelet \
    kube-scheduler:k8s.io/kubernetes/cmd/kube-scheduler \
    kube-controller-manager:k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-proxy:k8s.io/kubernetes/cmd/kube-proxy
  build coredns github.com/coredns/coredns coredns:lockguard.dev/hack/coredns
  pause
  exit 0
fi

build etcd go.etcd.io/etcd/server/v3 etcd:go.etcd.io/etcd/server/v3 etcdctl:go.etcd.io/etcd/etcdctl/v3
build etcdutl go.etcd.io/etcd/etcdutl/v3 etcdutl:go.etcd.io/etcd/etcdutl/v3
build kube k8s.io/kubernetes kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver kubectl:k8s.io/kubernetes/cmd/kubectl
# Older supported Kubernetes releases, one hack/kube-<minor> each, for `make test-versions`.
for dir in "$root"/hack/kube-1.*; do
  minor=${dir##*/kube-}
  build "kube-$minor" k8s.io/kubernetes "kube-apiserver-$minor:k8s.io/kubernetes/cmd/kube-apiserver" \
    "kubectl-$minor:k8s.io/kubernetes/cmd/kubectl"
done
# The tenancy tests run a few of its controllers (namespace, quota, role aggregation, GC).
build kube-node k8s.io/kubernetes kube-controller-manager:k8s.io/kubernetes/cmd/kube-controller-manager
build prometheus github.com/prometheus/prometheus promtool:github.com/prometheus/prometheus/cmd/promtool
