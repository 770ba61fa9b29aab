#!/usr/bin/env bash
# The whole test suite. Runs as root (CI) or as a user; tests that need
# root or an unprivileged user arrange it themselves, and under CI=true a
# test whose prerequisite is missing fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
# Style, lints and docs first: they fail in seconds, the suite in minutes.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --lib --no-deps --locked --quiet
cargo test --workspace --locked
for fuzz in crates/*/fuzz/run.sh; do
  if [ -x "$fuzz" ]; then
    "$fuzz" "${KILN_FUZZ_SECONDS:-60}"
  fi
done
