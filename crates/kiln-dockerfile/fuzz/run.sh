#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 60); exits
# non-zero if any target finds a crash. Seeds come from corpus/<target>;
# new inputs go to a temporary directory so the committed corpus stays small.
set -euo pipefail
secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2
    exit 2
fi
# cargo-fuzz needs nightly flags; use a nightly toolchain when there is one,
# otherwise let stable accept them.
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for target in parse_expand ignore_match; do
    mkdir -p "$work/$target"
    echo "== fuzzing $target for ${secs}s"
    if ! cargo "${toolchain[@]}" fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "!! $target failed (see artifacts/$target)" >&2
        status=1
    fi
done
exit "$status"
