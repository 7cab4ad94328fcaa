#!/usr/bin/env bash
# Installs what `make test` needs and a fresh machine may lack, from the
# package registries: cargo-nextest (crates.io), buf (npm), and the system
# tools the tests drive (apt): bubblewrap and prlimit for the sandbox, git for
# the source agent, promtool for the alert rules, tmux for the terminal tests,
# chromium for the dashboard's browser test (playwright-core drives it).
# Idempotent: what is there already is left alone. `make test` and `.ci/run`
# both call it.
set -euo pipefail

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "--- installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if ! command -v buf >/dev/null 2>&1; then
  echo "--- installing buf (npm @bufbuild/buf)"
  npm install -g @bufbuild/buf@1.75.0
fi

missing=()
for tool in bwrap:bubblewrap prlimit:util-linux git:git promtool:prometheus tmux:tmux chromium:chromium; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "--- installing ${missing[*]} (apt)"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo -n); fi
  if ! "${SUDO[@]}" apt-get update -qq ||
     ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}"; then
    echo "cannot install ${missing[*]}: install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi
