# lockguard — `make demo` and `make test` do all the set-up on a fresh Debian machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_SECONDS ?=
export PATH := $(CURDIR)/bin:$(PATH)

.PHONY: help deps tools build lint test bench bench-lock demo clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

deps: ## Install what a fresh machine lacks (protoc for etcd-client's build)
	@command -v protoc >/dev/null || { echo "installing protobuf-compiler"; \
	  $(SUDO) apt-get install -y -qq protobuf-compiler >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq protobuf-compiler; }; }
	@command -v go >/dev/null || { echo "Go is required to build kube-apiserver and etcd (hack/)"; exit 1; }

tools: ## Build kube-apiserver, kubectl, etcd, etcdctl into bin/ (cached in ~/.cache/lockguard)
	@hack/tools.sh

build: deps ## Build lockguard and the devenv harness
	$(CARGO) build --workspace --all-targets

lint: deps ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps tools lint ## Run every test, including those against real kube-apiserver and etcd
	$(CARGO) test --workspace
	@$(CARGO) run -q -p devenv -- sweep
	@if pgrep -af 'lockguard-devenv/[0-9]+-' ; then echo "processes left behind by the tests" >&2; exit 1; fi

bench-lock: deps tools ## Lock latency benchmark (prints a table)
	$(CARGO) bench --bench lock

bench: bench-lock ## All benchmarks

demo: deps tools ## Local control plane + lock etcd (Ctrl-C stops; DEMO_SECONDS=N stops by itself)
	$(CARGO) build -q --workspace --bins
	target/debug/devenv up $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS))

clean: ## Remove build outputs and bin/ (the Go tool cache in ~/.cache/lockguard stays)
	$(CARGO) clean
	rm -rf bin
