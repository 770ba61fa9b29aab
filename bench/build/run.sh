#!/usr/bin/env bash
# Bench suite "build": kiln build side by side with buildah (build --layers,
# private storage) and BuildKit (Debian's docker.io: a dockerd started here
# on a private socket and data root, DOCKER_BUILDKIT=1), on five projects:
#   multistage  a Go-like multi-stage build on busybox
#   apt         apt-get install on Debian
#   pip         pip install of a small pure-Python package from PyPI
#   copy20k     a COPY of a 20,000-file context
#   metadata    50 ENV/LABEL/EXPOSE lines
# For each: the cold build, the no-change rebuild and the rebuild after a
# one-file change, median of $BENCH_N runs (default 3). The cold apt/pip
# builds fetch through the network and its proxy, so they vary most: they
# too run $BENCH_NET_N times (default 3) and the median is reported.
#
# Every cold build starts after a reset that deleted the tool's previous
# store, then `sync` and dropping the page cache (as root). Without that,
# on ext4 without a journal (this machine's disk), every file created in
# the next ~30 s scans the inodes just deleted (`recently_deleted` in the
# inode allocator), and cold copy20k swung 3x with how much the previous
# reset had deleted; with it, each tool's cold build reads its inputs
# from disk, as on a fresh CI machine.
#
# Markdown on stdout, progress on stderr, scratch in $KILN_BENCH_DIR/build.
# Until `kiln build` exists, kiln's column says n/a and the peers still run.
# Env: KILN_BIN (set by bench/run.sh), BENCH_PROJECTS="apt pip" to choose,
# BENCH_BUILDAH_DRIVER (overlay, falls back to vfs), BENCH_NO_DOCKER=1.
set -euo pipefail
W="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/build"
BENCH_NAME=build
. "$(dirname "$0")/../lib.sh"
N="${BENCH_N:-3}"
NET_N="${BENCH_NET_N:-3}"
PROJECTS="${BENCH_PROJECTS:-multistage apt pip copy20k metadata}"

# ------------------------------------------------------------ projects
. "$(dirname "$0")/../projects.sh"

# ------------------------------------------------------------ tools
# Each tool: <tool>_ready, <tool>_reset (forget build cache, keep bases),
# <tool>_build DIR.
KILN_OK=0
if "$KILN_BIN" build --help >/dev/null 2>&1; then KILN_OK=1; else
  log "kiln build is not in $KILN_BIN yet: kiln's column is n/a"; fi
KS="$W/kiln-store"
# Every tool's reset leaves its bases ready to build on: buildah and docker
# unpack layers when they pull or load, kiln when a layer is first used, so
# kiln's reset runs `true` in each base once (untimed, like their pulls).
kiln_reset() { rm -rf "$KS"; "$KILN_BIN" --root "$KS" load -i "$BASES/busybox.docker.tar" >&2
  "$KILN_BIN" --root "$KS" load -i "$BASES/debian.docker.tar" >&2
  "$KILN_BIN" --root "$KS" run --rm $BUSYBOX true >&2
  "$KILN_BIN" --root "$KS" run --rm $DEBIAN true >&2; }
kiln_build() { "$KILN_BIN" --root "$KS" build --progress=plain -t bench:latest "$1"; }

BD="${BENCH_BUILDAH_DRIVER:-overlay}"
buildah_() { buildah --root "$W/buildah/$BD/root" --runroot "$W/buildah/$BD/run" --storage-driver "$BD" "$@"; }
buildah_init() { # the bases, from kiln's docker-archives, under the tests' names
  local id
  if ! id=$(buildah_ pull -q "docker-archive:$BASES/busybox.docker.tar" 2>/dev/null); then
    log "buildah storage driver $BD failed; falling back to vfs"; BD=vfs
    id=$(buildah_ pull -q "docker-archive:$BASES/busybox.docker.tar")
  fi
  buildah_ tag "$id" $BUSYBOX
  id=$(buildah_ pull -q "docker-archive:$BASES/debian.docker.tar")
  buildah_ tag "$id" $DEBIAN
}
buildah_reset() { # forget every image and layer, then the bases again (untimed)
  buildah_ rm --all >/dev/null 2>&1 || true
  buildah_ rmi --all --force >/dev/null 2>&1 || true
  buildah_init
}
buildah_build() { buildah_ build --runtime runc --layers --pull=never --format docker \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -t bench:latest "$1"; }

docker_init() {
  bench_dockerd_start
  if [ "$DOCKER_OK" = 1 ]; then
    docker_ load -i "$BASES/busybox.docker.tar" >/dev/null && docker_ load -i "$BASES/debian.docker.tar" >/dev/null || DOCKER_OK=0
  fi
}
docker_reset() { docker_ rmi -f bench:latest >/dev/null 2>&1 || true; docker_ builder prune -af >/dev/null 2>&1 || true; }
docker_build() { docker_ build --network host --progress=plain -t bench:latest "$1"; }
trap bench_cleanup EXIT

# ------------------------------------------------------------ timing
time_one() { time_cmd "$1_build" "$2"; } # TOOL DIR -> seconds or "fail"

# measure TOOL PROJECT -> "cold nochange onefile"
measure() {
  local tool="$1" p="$2" d="$W/ctx/$2" n cold=() noch=() one=()
  n=$N; case "$p" in apt|pip) n=$NET_N ;; esac
  for _ in $(seq 1 "$n"); do
    make_project "$p" "$d"; "${tool}_reset"; bench_settle
    cold+=("$(time_one "$tool" "$d")")
  done
  for _ in $(seq 1 "$N"); do noch+=("$(time_one "$tool" "$d")"); done
  for _ in $(seq 1 "$N"); do change_project "$p" "$d"; one+=("$(time_one "$tool" "$d")"); done
  local m
  for arr in cold noch one; do
    local -n a=$arr
    if printf '%s\n' "${a[@]}" | grep -q fail; then m=fail; else m=$(printf '%s\n' "${a[@]}" | median); fi
    printf '%s ' "$m"
  done
  echo
}

# ------------------------------------------------------------ run
bench_bases
buildah_init
docker_init
log "buildah storage driver: $BD; BuildKit: $([ $DOCKER_OK = 1 ] && echo yes || echo no); kiln build: $([ $KILN_OK = 1 ] && echo yes || echo no)"

declare -A R
for p in $PROJECTS; do
  for tool in kiln buildah docker; do
    case $tool in
      kiln) [ $KILN_OK = 1 ] || { R[$tool,$p]="n/a n/a n/a"; continue; } ;;
      docker) [ $DOCKER_OK = 1 ] || { R[$tool,$p]="n/a n/a n/a"; continue; } ;;
    esac
    log "$p: $tool"
    R[$tool,$p]="$(measure $tool "$p")"
    log "$p: $tool: ${R[$tool,$p]}"
  done
done

echo "Seconds, median of $N (cold apt/pip: $NET_N). buildah $(buildah --version | awk '{print $3}') \`build --layers\`, $BD storage; BuildKit: Debian docker.io $([ $DOCKER_OK = 1 ] && /usr/bin/docker --version | awk '{print $3}' | tr -d , || echo '(not running)'). Each cold build starts from the bases alone, after \`sync\` and a dropped page cache. Goals for kiln: cold ≤ 0.8× buildah, no-change ≤ 0.1×, one-file ≤ 0.5×."
[ $KILN_OK = 1 ] || echo "**kiln build is not implemented yet in this kiln: its columns are n/a.**"
echo
echo "| project | build | kiln | buildah | BuildKit | kiln/buildah | kiln/BuildKit |"
echo "|---|---|---:|---:|---:|---:|---:|"
for p in $PROJECTS; do
  read -r kc kn ko <<<"${R[kiln,$p]}"; read -r bc_ bn bo <<<"${R[buildah,$p]}"; read -r dc dn do_ <<<"${R[docker,$p]}"
  echo "| $p | cold | $kc | $bc_ | $dc | $(ratio "$kc" "$bc_") | $(ratio "$kc" "$dc") |"
  echo "| $p | no change | $kn | $bn | $dn | $(ratio "$kn" "$bn") | $(ratio "$kn" "$dn") |"
  echo "| $p | one file changed | $ko | $bo | $do_ | $(ratio "$ko" "$bo") | $(ratio "$ko" "$do_") |"
done
