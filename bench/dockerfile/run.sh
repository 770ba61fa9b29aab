#!/usr/bin/env bash
# Dockerfile frontend benchmark: parse + resolve of a generated 10,000-line
# Dockerfile; prints `dockerfile_parse_10k_ms <median>`.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run --quiet --release --example parse_bench -p kiln-dockerfile -- "${1:-9}"
