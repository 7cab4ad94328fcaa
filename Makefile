# Repo Runner: fmt, lint, test, bench, proto-lint.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV ?= .venv
PYTHON ?= python3
CARGO ?= cargo

.PHONY: all run fmt lint test test-rust test-python proto-lint bench clean-venv

all: lint test

## run: build and start every service in one process (embedded mode)
run:
	$(CARGO) run --release -p reporunner -- serve

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

test: proto-lint test-rust test-python

test-rust:
	$(CARGO) nextest run --workspace --no-fail-fast
	$(CARGO) test --workspace --doc

test-python: $(VENV)/.installed
	$(CARGO) build -p reporunner
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/pytest -q tests/python

bench:
	$(CARGO) bench -p reporunner-tests --bench mesh
	$(CARGO) bench -p reporunner-auth --bench auth
	$(CARGO) bench -p reporunner-analyzer --bench analyze
	$(CARGO) bench -p reporunner-dependency --bench install
	$(CARGO) bench -p reporunner-tests --bench run

clean-venv:
	rm -rf $(VENV)
