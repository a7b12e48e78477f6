# lockguard — `make demo` and `make test` do all the set-up on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SECONDS ?=
# The operator image: the name deploy/default/kustomization.yaml gives it.
IMAGE ?= ghcr.io/lockguard/lockguard:0.1.0
IMAGE_ARCHIVE ?= target/image/lockguard.oci.tar
# runc, not Debian's default crun: crun refuses this kind of host (cgroup v1 with a cgroup2
# hierarchy that has a controller: "cgroups in hybrid mode not supported").
OCI_RUNTIME ?= runc
export PATH := $(CURDIR)/bin:$(PATH)

DEPS_PACKAGES := protobuf-compiler iproute2
NODE_PACKAGES := containerd runc containernetworking-plugins nftables busybox-static gcc libc6-dev
IMAGE_PACKAGES := buildah podman runc debootstrap

# $(call apt_install,PACKAGES[,APT OPTIONS]): installs those of PACKAGES that are missing;
# the package lists are updated only when an install fails (a fresh machine has none).
define apt_install
missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
if [ -n "$$missing" ]; then echo "installing" $$missing; \
  $(SUDO) apt-get install -y -qq $(2) $$missing >/dev/null 2>&1 || \
  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(2) $$missing; }; fi
endef

.PHONY: help deps tools node-deps node-tools node-up e2e-cluster build lint test chaos soak audit bench bench-lock demo \
	crds install deploy undeploy test-versions run clean image-deps base-images image image-archive e2e-image image-clean

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

deps: ## Install what a fresh machine lacks (protoc for etcd-client's build, iproute2 for the chaos suite)
	@$(call apt_install,$(DEPS_PACKAGES))
	@command -v go >/dev/null || { echo "Go is required to build kube-apiserver and etcd (hack/)"; exit 1; }

tools: ## Build kube-apiserver, kubectl, kube-controller-manager, etcd, etcdctl, etcdutl, promtool into bin/ (cached in ~/.cache/lockguard)
	@hack/tools.sh

node-deps: ## Debian packages of the one-node cluster (containerd, runc, CNI plugins, nftables, busybox-static, gcc)
	@$(call apt_install,$(NODE_PACKAGES))

node-tools: node-deps tools ## Build kubelet, kube-scheduler, kube-controller-manager, kube-proxy, CoreDNS, pause (cached like the other tools)
	@hack/tools.sh node

node-up: node-tools ## A one-node cluster (kubelet, containerd, CoreDNS, ...) until Ctrl-C or NODE_SECONDS=N; needs root
	$(CARGO) build -q -p devenv
	$(CARGO) run -q -p devenv -- node-up $(if $(NODE_SECONDS),--seconds $(NODE_SECONDS))

e2e-cluster: node-tools image-archive ## One real node: workloads, Services, DNS, then the README's install of lockguard (image from the Dockerfile); needs root
	LOCKGUARD_IMAGE_ARCHIVE=$(abspath $(IMAGE_ARCHIVE)) $(CARGO) test -p devenv --test node_cluster -- --ignored --nocapture --test-threads=1

build: deps ## Build lockguard and the devenv harness
	$(CARGO) build --workspace --all-targets

lint: deps ## rustfmt, clippy and rustdoc, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace -q

test: deps tools lint ## Run every test, against real kube-apiserver and etcd, then the older Kubernetes versions, the chaos suite and the soak
	$(CARGO) test --workspace -- --skip chaos_ --skip soak_
	@$(MAKE) --no-print-directory test-versions
	@$(MAKE) --no-print-directory chaos
	@$(MAKE) --no-print-directory soak
	@$(CARGO) run -q -p devenv -- sweep
	@$(CARGO) run -q -p devenv -- orphans

# The older Kubernetes minors lockguard supports: one hack/kube-<minor> each (hack/tools.sh).
OLDER_KUBERNETES := $(patsubst hack/kube-%,%,$(wildcard hack/kube-1.*))
VERSION_TESTS := --test versions --test upgrade --test operator -- --exact \
	deploy_kustomization_is_accepted_by_the_api_server_under_restricted_pod_security \
	invalid_input_is_rejected_at_admission_with_a_clear_message \
	one_hold_serves_many_claims_and_a_burst_binds_uniquely \
	three_replicas_bind_300_claims_uniquely_and_free_them_on_delete \
	a_frozen_holders_late_ledger_write_is_refused_by_the_api_server \
	a_rolling_upgrade_from_the_newest_release_moves_no_item

test-versions: deps tools ## On each older supported Kubernetes: the CRDs and install, admission, 200 and 300 claims with three replicas on both backends, a frozen holder fenced, the upgrade
	@for v in $(OLDER_KUBERNETES); do echo "== Kubernetes $$v"; \
	  LOCKGUARD_KUBERNETES=$$v $(CARGO) test $(VERSION_TESTS) || exit 1; done

chaos: deps tools ## Faults at random (seed printed; LOCKGUARD_CHAOS_SEED repeats), then the audit; needs root
	$(CARGO) test --test chaos -- --nocapture

soak: deps tools ## Lock churn against a lock etcd compacting every 2 s (LOCKGUARD_SOAK_SECONDS, default 180); prints the figures
	$(CARGO) test --test soak -- --nocapture

audit: ## Check the allocation invariants of the current KUBECONFIG's cluster (read-only)
	$(CARGO) run -q --bin lockguard -- audit

bench-lock: deps tools ## Lock latency benchmark (prints a table)
	$(CARGO) bench --bench lock

bench: bench-lock ## All benchmarks: locks, then claims bound per second, latency, requests and memory (plots in docs/bench)
	$(CARGO) bench --bench throughput

demo: deps tools ## The story on a local control plane (Ctrl-C stops; DEMO_SECONDS=N stops by itself)
	$(CARGO) build -q --workspace --bins --features lockguard/failpoints
	DEMO_SECONDS=$(DEMO_SECONDS) hack/demo.sh

crds: ## Regenerate crds/ from the Rust types
	$(CARGO) run -q --bin lockguard -- crd > crds/lockguard.dev.yaml

install: ## Install the CRDs into the current KUBECONFIG's cluster and wait until Established
	kubectl apply -k crds/
	kubectl wait --for=condition=Established --timeout=60s crd/pools.lockguard.dev crd/claims.lockguard.dev

deploy: install ## Install everything: CRDs, namespace, RBAC, operator, lock etcd (kubectl apply -k deploy/)
	kubectl apply -k deploy/

undeploy: ## Remove claims, then pools (their finalizer needs the operator to see the claims gone), then the rest
	-kubectl delete claims --all --all-namespaces --wait=true --timeout=120s
	-kubectl delete pools --all --wait=true --timeout=60s
	kubectl delete -k deploy/ --ignore-not-found

image-deps: ## Install buildah, podman, runc and debootstrap from Debian when missing
	@$(call apt_install,$(IMAGE_PACKAGES),--no-install-recommends)

base-images: image-deps ## Local stand-ins for the Dockerfile's base images (rust:1.95-bookworm, distroless/cc), if missing or stale
	@$(SUDO) BUILDAH_RUNTIME=$(OCI_RUNTIME) hack/image/base-images.sh

image: base-images ## Build the operator image from the Dockerfile with buildah, as `docker build` reads it (IMAGE=name:tag)
	time $(SUDO) buildah build --runtime $(OCI_RUNTIME) --layers --force-rm --pull=never --network host -t $(IMAGE) .

image-archive: image ## Write the image as an OCI archive for `ctr -n k8s.io images import` (IMAGE_ARCHIVE=file)
	@$(SUDO) hack/image/archive.sh $(IMAGE_ARCHIVE) $(IMAGE)

e2e-image: deps tools image ## Run the image as the Deployment does (podman, read-only root, uid 65532) against the local control plane
	LOCKGUARD_IMAGE=$(IMAGE) LOCKGUARD_OCI_RUNTIME=$(OCI_RUNTIME) $(CARGO) test --test image -- --ignored --nocapture

image-clean: ## Remove the operator image, the base stand-ins, untagged build layers and buildah's cache mounts
	-$(SUDO) buildah rmi $(IMAGE) docker.io/library/rust:1.95-bookworm gcr.io/distroless/cc-debian12:nonroot
	-$(SUDO) buildah rmi --prune
	$(SUDO) rm -rf /var/tmp/buildah-cache

run: ## Run the operator locally against the current KUBECONFIG
	$(CARGO) run --bin lockguard -- run --metrics-addr 127.0.0.1:8080

clean: ## Remove build outputs and bin/ (the Go tool cache in ~/.cache/lockguard stays)
	$(CARGO) clean
	rm -rf bin
