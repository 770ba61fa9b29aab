#!/usr/bin/env bash
# Dockerfile frontend benchmark: parse + resolve of a generated 10,000-line
# Dockerfile (median of N runs), as a markdown table for bench/run.sh.
# There is no offline peer to run beside it: BuildKit's parser ships only
# inside its daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
line=$(cargo run --quiet --release --example parse_bench -p kiln-dockerfile -- "${1:-9}" | grep dockerfile_parse_10k_ms)
ms=${line##* }
echo "| what | median |"
echo "|---|---:|"
echo "| parse + resolve a 10,000-line Dockerfile | ${ms} ms |"
