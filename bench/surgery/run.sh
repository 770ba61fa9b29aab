#!/usr/bin/env bash
# Image surgery bench (issue #16): kiln mutate/append straight on a
# loopback docker-registry, against doing the same by hand.
#   mutate  a ~1 GB image (8 random 128 MiB layers, gzip), registry to
#           registry, vs skopeo pull to an OCI dir + config edit (python)
#           + skopeo push. Targets: kiln <= 0.5 s and >= 10x faster.
#   append  a 100 MB directory to that image, vs the layer alone:
#           tar | gzip (pigz, both cores, as kiln uses) + a plain upload
#           with curl. Target: kiln within 1.2x.
# Each run writes to a new repository of the same registry, so kiln mounts
# the base layers rather than finding them. Median of $RUNS runs.
#
# Env: KILN (binary; default: build release), KILN_BENCH_DIR, RUNS (3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
B=${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/surgery
RUNS=${RUNS:-3}
mkdir -p "$B"

KILN="${KILN:-${KILN_BIN:-}}"
if [ -z "$KILN" ]; then
  (cd "$ROOT" && cargo build --release -q --locked -p kiln)
  KILN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kiln"
fi

# Inputs, made once: 8 x 128 MiB and one 100 MB directory of random data.
for i in 0 1 2 3 4 5 6 7; do
  if [ ! -f "$B/data$i/blob" ]; then
    mkdir -p "$B/data$i"
    head -c $((128 << 20)) /dev/urandom >"$B/data$i/blob.tmp"
    mv "$B/data$i/blob.tmp" "$B/data$i/blob"
  fi
done
if [ ! -f "$B/add/done" ]; then
  mkdir -p "$B/add"
  for i in $(seq 0 99); do head -c 1000000 /dev/urandom >"$B/add/f$i"; done
  touch "$B/add/done"
fi

W=$(mktemp -d "$B/run.XXXXXX")
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && { kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; }
  rm -rf "$W"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
cat >"$W/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/reg
http:
  addr: $REG
YML
docker-registry serve "$W/config.yml" >"$W/reg.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done

export KILN_ROOT="$W/store"
export HOME="$W/home"; mkdir -p "$HOME"
export SOURCE_DATE_EPOCH=1700000000

# The base image: one small layer, then the eight big ones, pushed.
mkdir -p "$W/empty/etc"; echo base >"$W/empty/etc/base"
"$KILN" import "$W/empty" "$REG/bench/base:0" >/dev/null
args=()
for i in 0 1 2 3 4 5 6 7; do args+=(--dir "$B/data$i" --prefix "/data$i"); done
"$KILN" append "$REG/bench/base:0" -t "docker://$REG/bench/big:1" "${args[@]}" >/dev/null
bytes=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/bench/big/manifests/1" \
  | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["config"]["size"]+sum(l["size"] for l in m["layers"]))')

secs() {  # wall seconds of a command
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# skopeo's way: pull, edit the config in the layout, push.
skopeo_mutate() {
  rm -rf "$W/oci"
  skopeo copy -q --src-tls-verify=false "docker://$REG/bench/big:1" "oci:$W/oci:x"
  python3 - "$W/oci" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
def blob(dg): return os.path.join(d, "blobs", *dg.split(":"))
def put(b):
    dg = "sha256:" + hashlib.sha256(b).hexdigest()
    open(blob(dg), "wb").write(b); return dg
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(blob(idx["manifests"][0]["digest"])))
c = json.load(open(blob(m["config"]["digest"])))
c.setdefault("config", {}).setdefault("Env", []).append("BENCH=1")
cb = json.dumps(c).encode()
m["config"]["digest"], m["config"]["size"] = put(cb), len(cb)
mb = json.dumps(m).encode()
idx["manifests"][0]["digest"], idx["manifests"][0]["size"] = put(mb), len(mb)
json.dump(idx, open(os.path.join(d, "index.json"), "w"))
PY
  skopeo copy -q --dest-tls-verify=false "oci:$W/oci:x" "docker://$REG/bench/skopeo-$1:1"
}

# The layer alone: tar | pigz, then a monolithic upload with curl.
layer_alone() {
  tar -C "$B/add" --sort=name -cf - . | pigz -6 >"$W/layer.gz"
  local dg loc
  dg="sha256:$(sha256sum "$W/layer.gz" | cut -d' ' -f1)"
  loc=$(curl -sfi -X POST "http://$REG/v2/bench/alone-$1/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
  case $loc in http*) ;; *) loc="http://$REG$loc" ;; esac
  curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$W/layer.gz" "$loc&digest=$dg" >/dev/null
}

run() {  # name command...: median seconds over RUNS, each with its run number
  local name=$1; shift
  : >"$W/secs"
  for i in $(seq "$RUNS"); do sync; secs "$@" "$i" >>"$W/secs"; echo >>"$W/secs"; done
  median <"$W/secs"
}
kiln_mutate() { "$KILN" mutate "docker://$REG/bench/big:1" -t "docker://$REG/bench/kiln-$1:1" --env BENCH=1; }
kiln_append() { "$KILN" append "docker://$REG/bench/big:1" -t "docker://$REG/bench/append-$1:1" --dir "$B/add" --prefix /add; }

km=$(run mutate kiln_mutate)
sm=$(run mutate skopeo_mutate)
ka=$(run append kiln_append)
la=$(run append layer_alone)
mb=$((bytes / 1000000))
echo "| op | image | kiln s | peer | peer s | ratio |"
echo "|---|---|---:|---|---:|---:|"
echo "| mutate --env, registry to registry | $mb MB, 9 layers | $km | skopeo pull + edit + push | $sm | $(awk -v a="$sm" -v b="$km" 'BEGIN {printf "%.0fx faster", a / b}') |"
echo "| append --dir (100 MB) | $mb MB, 9 layers | $ka | tar \| pigz + curl upload | $la | $(awk -v a="$ka" -v b="$la" 'BEGIN {printf "%.2fx the layer alone", a / b}') |"
