#!/usr/bin/env bash
# Registry transfer bench: kiln vs `skopeo copy`, side by side, on one
# loopback docker-registry. Images (built once by prepare.sh):
#   debian  debootstrap minbase bookworm, one gzip layer
#   big     ~1 GiB in 8 gzip layers
# For each: push (each run into a new, empty registry, so nothing is skipped
# or mounted) and pull (into a fresh store / OCI dir), median of 3 runs, MB/s of blob
# bytes moved, peak RSS from /usr/bin/time -v. Prints a markdown table.
#
# Env: KILN (binary; default: build release), KILN_BENCH_DIR, RUNS (3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
B=${KILN_BENCH_DIR:-/var/tmp/kiln-bench}
RUNS=${RUNS:-3}
"$HERE/prepare.sh" >/dev/null

KILN="${KILN:-${KILN_BIN:-}}"
if [ -z "$KILN" ]; then
  (cd "$ROOT" && cargo build --release -q -p kiln)
  KILN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kiln"
fi

W=$(mktemp -d "$B/run.XXXXXX")
REG_PID=
SEED_PID=
cleanup() {
  for p in $REG_PID $SEED_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# Starts a registry with empty storage in $W/reg-$1; sets REG and REG_PID.
start_registry() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REG=127.0.0.1:$port
  mkdir -p "$W/reg-$1"
  cat >"$W/reg-$1/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/reg-$1/data
http:
  addr: $REG
YML
  docker-registry serve "$W/reg-$1/config.yml" >"$W/reg-$1/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
}
stop_registry() {
  kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; REG_PID=
  rm -rf "$W/reg-$1"
}

export KILN_ROOT="$W/store"
export HOME="$W/home"; mkdir -p "$HOME"   # no stray credentials

# Runs a command under /usr/bin/time; prints "seconds max_rss_kib".
measure() {
  /usr/bin/time -v -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]}
              /Maximum resident set size/ {r=$2} END {print s, r}' "$W/time"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

blob_bytes() {  # sum of config + layer sizes of the layout's image
  python3 - "$1" <<'PY'
import json, os, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = idx["manifests"][0]["digest"].split(":")[1]
man = json.load(open(os.path.join(d, "blobs/sha256", m)))
print(man["config"]["size"] + sum(l["size"] for l in man["layers"]))
PY
}

echo "| image | op | tool | MB/s (median of $RUNS) | seconds | peak RSS MB |"
echo "|---|---|---|---:|---:|---:|"
for img in debian big; do
  layout="$B/$img"
  bytes=$(blob_bytes "$layout")
  # The pull source: a registry seeded by skopeo; kiln's store seeded from it.
  start_registry seed; SEED=$REG; SEED_PID=$REG_PID
  skopeo copy -q --dest-tls-verify=false "oci:$layout:$img" "docker://$SEED/seed/$img:1" >/dev/null
  "$KILN" pull "$SEED/seed/$img:1" >/dev/null
  REG_PID=
  for op in push pull; do
    for tool in kiln skopeo; do
      : >"$W/secs"; : >"$W/rss"
      for i in $(seq "$RUNS"); do
        sync
        case $op/$tool in
          # Each push goes to a new, empty registry: nothing to skip or
          # mount (skopeo's blob-info cache would mount from the seed).
          push/kiln) start_registry "p$i"; r=$(measure "$KILN" push "$SEED/seed/$img:1" "$REG/kiln/$img:1"); stop_registry "p$i" ;;
          push/skopeo) start_registry "p$i"; r=$(measure skopeo copy -q --dest-tls-verify=false "oci:$layout:$img" "docker://$REG/skopeo/$img:1"); stop_registry "p$i" ;;
          pull/kiln) rm -rf "$W/pull"; r=$(measure "$KILN" pull --root "$W/pull" "$SEED/seed/$img:1") ;;
          pull/skopeo) rm -rf "$W/pull"; r=$(measure skopeo copy -q --src-tls-verify=false "docker://$SEED/seed/$img:1" "oci:$W/pull:$img") ;;
        esac
        echo "${r% *}" >>"$W/secs"; echo "${r#* }" >>"$W/rss"
      done
      s=$(median <"$W/secs"); rss=$(sort -n "$W/rss" | tail -1)
      mbs=$(awk -v b="$bytes" -v s="$s" 'BEGIN {printf "%.0f", (s > 0 ? b / s / 1e6 : 0)}')
      echo "| $img ($((bytes / 1000000)) MB) | $op | $tool | $mbs | $s | $((rss / 1024)) |"
    done
  done
  REG_PID=$SEED_PID; stop_registry seed
done
