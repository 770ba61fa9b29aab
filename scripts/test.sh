#!/usr/bin/env bash
# The whole test suite. Runs as root (CI) or as a user; tests that need
# root or an unprivileged user arrange it themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked
for fuzz in crates/*/fuzz/run.sh; do
  if [ -x "$fuzz" ]; then
    "$fuzz" "${KILN_FUZZ_SECONDS:-60}"
  fi
done
