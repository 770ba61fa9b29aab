#!/usr/bin/env bash
# The bench harness: runs one suite or all of them, each against its peers
# side by side in the same run, and writes the tables into the README.
#
#   bench/run.sh              all suites
#   bench/run.sh layer build  just these
#   BENCH_NO_README=1 ...     print only
#
# A suite is bench/<name>/run.sh; it prints a markdown table (medians and
# ratios) on stdout and its progress on stderr. Scratch data lives under
# $KILN_BENCH_DIR (default /var/tmp/kiln-bench) and is reused between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export KILN_BENCH_DIR="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}"
mkdir -p "$KILN_BENCH_DIR" bench/out

cargo build --release --locked -p kiln >&2
export KILN_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/kiln"

suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
  for d in bench/*/; do
    [ -x "$d/run.sh" ] && suites+=("$(basename "$d")")
  done
fi

for s in "${suites[@]}"; do
  echo "== bench: $s" >&2
  out="bench/out/$s.md"
  {
    echo "### $s"
    echo
    echo "_$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)_"
    echo
    "bench/$s/run.sh"
  } > "$out.tmp"
  mv "$out.tmp" "$out"
  cat "$out"
done

if [ -z "${BENCH_NO_README:-}" ]; then
  python3 - "${suites[@]}" <<'PY'
import pathlib, re, sys
readme = pathlib.Path("README.md")
text = readme.read_text()
for suite in sys.argv[1:]:
    table = pathlib.Path(f"bench/out/{suite}.md").read_text().strip()
    start, end = f"<!-- bench:{suite}:start -->", f"<!-- bench:{suite}:end -->"
    block = f"{start}\n{table}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("<!-- bench:end -->", block + "\n\n<!-- bench:end -->")
readme.write_text(text)
PY
fi
