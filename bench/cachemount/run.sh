#!/usr/bin/env bash
# Bench suite "cachemount": a cold apt build in a fresh store, with and
# without the cache mounts a previous build exported through the registry
# cache (`--cache-to type=registry,…,mode=max,mounts=true`, then
# `--cache-from`, whose restore of the mount is on by default and off with
# `mounts=false`). Both ways the `apt-get update` layer comes from the
# cache; what differs is whether apt finds its archives in
# `RUN --mount=type=cache,target=/var/cache/apt/archives`. The fetch step
# is `apt-get install --download-only` (the install itself, dpkg's work,
# is the same both ways). Reported: apt's own time (from the RUN's first
# line to its end), the whole step's (with the mount: its restore, and
# both ways the rootfs the RUN runs on), the whole build's, and apt's
# "Need to get",
# median of $BENCH_N runs (default 3). Each run: a fresh store with the
# Debian base imported, after `sync` and a dropped page cache.
#
# Markdown on stdout, progress on stderr, scratch in $KILN_BENCH_DIR/cachemount.
# Env: KILN_BIN (set by bench/run.sh), BENCH_N, BENCH_APT_PACKAGES (default
# "python3": ~30 packages, ~7 MB of archives).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KILN_BIN="${KILN_BIN:-$here/../../target/release/kiln}"
W="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/cachemount"
N="${BENCH_N:-3}"
PACKAGES="${BENCH_APT_PACKAGES:-python3}"
DEB=/var/tmp/kiln-test-debian/rootfs.tar
mkdir -p "$W"
log() { echo "[bench/cachemount] $*" >&2; }

if [ ! -f "$DEB" ]; then
  echo "no Debian rootfs at $DEB (bench/build/run.sh or the tests make it)" >&2
  exit 1
fi

# ------------------------------------------------------------ registry
REG_PID=
cleanup() { [ -n "$REG_PID" ] && { kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; }; rm -rf "$W/reg" "$W"/store-*; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
mkdir -p "$W/reg"
cat >"$W/reg/config.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/reg/data
http:
  addr: $REG
YML
docker-registry serve "$W/reg/config.yml" >"$W/reg/log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
CACHE="$REG/bench/cachemount:1"

# ------------------------------------------------------------ project
ctx="$W/ctx"; rm -rf "$ctx"; mkdir -p "$ctx"
cat > "$ctx/Dockerfile" <<DF
FROM kiln-test/debian:bookworm
RUN apt-get update -q
ARG ROUND
RUN --mount=type=cache,id=apt-archives,target=/var/cache/apt/archives,sharing=locked \\
    echo round \$ROUND && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --download-only --no-install-recommends $PACKAGES
DF

fresh_store() { # dir
  rm -rf "$1"; mkdir -p "$1"
  SOURCE_DATE_EPOCH=1700000000 "$KILN_BIN" --root "$1" import "$DEB" kiln-test/debian:bookworm >/dev/null 2>&1
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
}

# One build; prints "apt-seconds step-seconds whole-seconds need-to-get".
build() { # store round cache-flags...
  local s="$1" round="$2"; shift 2
  local out="$W/last.log" t0 t1
  t0=$(date +%s.%N)
  "$KILN_BIN" --root "$s" build --progress=plain --build-arg "ROUND=$round" "$@" "$ctx" >"$out" 2>&1 \
    || { cat "$out" >&2; return 1; }
  t1=$(date +%s.%N)
  python3 - "$out" "$t0" "$t1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
step = None
for line in text.splitlines():
    m = re.match(r"#(\d+) \[.*\] RUN --mount=type=cache", line)
    if m:
        step = m.group(1)
done = re.search(rf"^#{step} DONE ([0-9.]+)s", text, re.M) if step else None
first = re.search(rf"^#{step} ([0-9.]+) round ", text, re.M) if step else None
need = re.search(r"Need to get ([^ ]+ [^ ]+?)( of archives|/)", text)
tool = f"{float(done.group(1)) - float(first.group(1)):.1f}" if done and first else "fail"
print(tool, done.group(1) if done else "fail",
      f"{float(sys.argv[3]) - float(sys.argv[2]):.1f}",
      (need.group(1) if need else "?").replace(" ", "\u00a0"))
PY
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else print a[int((NR+1)/2)]}'; }

log "seed: one build exports its steps and its cache mount"
fresh_store "$W/store-seed"
build "$W/store-seed" seed --cache-to "type=registry,ref=$CACHE,mode=max,mounts=true" >/dev/null
restored=$(grep -o 'restored [0-9]* cache mounts ([^)]*)' "$W/last.log" || true)

declare -A tool step whole need
for i in $(seq 1 "$N"); do
  for way in without with; do
    log "run $i: $way restored mounts"
    fresh_store "$W/store-$way"
    flag="type=registry,ref=$CACHE"
    [ "$way" = without ] && flag="$flag,mounts=false"
    read -r a s w g < <(build "$W/store-$way" "$i" --cache-from "$flag")
    [ "$way" = with ] && restored=$(grep -o 'restored cache mount [^:]*: .*' "$W/last.log" | head -1 || true)
    tool[$way]+="$a "; step[$way]+="$s "; whole[$way]+="$w "; need[$way]="$g"
  done
done

med() { printf '%s\n' $1 | median; }
aw=$(med "${tool[without]}"); am=$(med "${tool[with]}")
sw=$(med "${step[without]}"); sm=$(med "${step[with]}")
ww=$(med "${whole[without]}"); wm=$(med "${whole[with]}")
ratio() { python3 -c "print(f'{$1/$2:.2f}×' if $2 > 0 else 'n/a')" 2>/dev/null || echo n/a; }

echo "Seconds, median of $N; a fresh store each time, the Debian base imported, \`apt-get update\` from the registry cache both ways. Fetch step: \`apt-get install --download-only --no-install-recommends $PACKAGES\` with its archives in a cache mount. With: ${restored:-?}."
echo
echo "| fresh store | apt's fetch | fetch step | whole build | apt: Need to get |"
echo "|---|---|---|---|---|"
echo "| without restored mounts (\`mounts=false\`) | $aw | $sw | $ww | ${need[without]} |"
echo "| with restored mounts | $am ($(ratio "$am" "$aw")) | $sm ($(ratio "$sm" "$sw")) | $wm | ${need[with]} |"
