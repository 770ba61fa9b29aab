#!/usr/bin/env bash
# Bench suite "cache": the shared build cache, against a registry that the
# suite starts (Debian's docker-registry on 127.0.0.1, plain HTTP).
#
# Row 1, a fresh machine with the team's cache: each tool forgets
# everything but the base images, then builds an unchanged project
# (bench/build's multistage and apt) from the registry, (a) into its own
# store and (b) with a push of the result to a new repository. kiln reads
# its registry cache (exported once with --cache-to type=registry,
# mode=max) and, as a second column, the image's inline cache (--cache-to
# type=inline, mode=min: a multi-stage build runs its earlier stages
# again, as kiln's keys are content addresses). BuildKit is Debian's
# docker.io (20.10, BuildKit 0.8, no buildx): its only registry cache is
# the inline one (built with BUILDKIT_INLINE_CACHE=1 and pushed), read
# with `docker build --cache-from IMAGE` after `docker rmi` of everything
# but the bases and `docker builder prune -af`. Bytes: the sum of the
# registry's GET response sizes during the timed build (and push).
#
# Row 2, a 1 GB cache (a RUN writes 4 files of 256 MB from /dev/urandom):
# peak RSS (`/usr/bin/time -f %M`) and seconds of kiln's export (--cache-to
# type=local,mode=max, from a store that has the layer) and import
# (--cache-from into a fresh store). Goal: under 150 MB each.
#
# Markdown on stdout, progress on stderr, scratch in $KILN_BENCH_DIR/cache
# (the 1 GB files are deleted at the end); the bases are bench/lib.sh's
# (bench_bases), the projects bench/projects.sh's.
# Env: KILN_BIN (set by bench/run.sh), BENCH_N (default 3),
# BENCH_PROJECTS ("multistage apt"), BENCH_NO_DOCKER=1, BENCH_CACHE_MB
# (1024).
set -euo pipefail
W="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/cache"
BENCH_NAME=cache
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=../projects.sh
. "$(dirname "$0")/../projects.sh"
N="${BENCH_N:-3}"
PROJECTS="${BENCH_PROJECTS:-multistage apt}"
CACHE_MB="${BENCH_CACHE_MB:-1024}"

# ------------------------------------------------------------ registry
REG_DIR="$W/registry"
start_registry() {
  rm -rf "$REG_DIR"; mkdir -p "$REG_DIR"
  REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REG="127.0.0.1:$REG_PORT"
  cat > "$REG_DIR/config.yml" <<YML
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: $REG
  secret: kiln-bench
YML
  setsid docker-registry serve "$REG_DIR/config.yml" >"$REG_DIR/log" 2>&1 </dev/null &
  REG_PID=$!
  for _ in $(seq 1 100); do curl -fs "http://$REG/v2/" >/dev/null && return; sleep 0.1; done
  log "docker-registry did not start (see $REG_DIR/log)"; exit 1
}
# Lines of the registry's log so far; bytes it sent in GET responses since.
reg_mark() { wc -l < "$REG_DIR/log"; }
reg_bytes_since() {
  tail -n +"$(($1 + 1))" "$REG_DIR/log" \
    | awk '/"GET \/v2\/[^ ]+ HTTP/ { for (i = 1; i < NF; i++) if ($i ~ /HTTP\/1\.[01]"$/) { s += $(i + 2); break } } END { print s + 0 }'
}
stop_all() {
  [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null || true
  bench_cleanup
}
trap stop_all EXIT

# ------------------------------------------------------------ tools
KS="$W/kiln-store"
# The bases come from the registry, as on a CI runner (pushed once by
# dockerd, gzip): a push of the result then sends or mounts their blobs as
# pulled, where a base loaded from a plain archive would be uploaded
# plain (kiln never compresses layers it was given).
publish_bases() {
  docker_ tag "$BUSYBOX" "$REG/base/busybox:1" && docker_ push "$REG/base/busybox:1" >/dev/null
  docker_ tag "$DEBIAN" "$REG/base/debian:bookworm" && docker_ push "$REG/base/debian:bookworm" >/dev/null
}
# The store after a reset: the bases pulled, each run once (untimed, as
# bench/build's: the peers unpack layers when they load them). The
# projects name the bases by their registry names (set after
# publish_bases), so a store without them reads them from the registry.
kiln_fresh() { rm -rf "$KS"
  "$KILN_BIN" --root "$KS" pull "$BUSYBOX" >&2
  "$KILN_BIN" --root "$KS" pull "$DEBIAN" >&2
  "$KILN_BIN" --root "$KS" run --rm "$BUSYBOX" true >&2
  "$KILN_BIN" --root "$KS" run --rm "$DEBIAN" true >&2; }
# An empty store, as on a CI runner's first build: the bases too come
# from the registry (manifest and config; layers only when read).
kiln_empty() { rm -rf "$KS"; }
kiln_() { "$KILN_BIN" --root "$KS" build --progress=plain "$@" >"$W/last.log" 2>&1; }

# Our dockerd (bench/lib.sh), with the bases loaded from their
# docker-archives under the tests' names; publish_bases pushes them.
docker_init() {
  bench_dockerd_start
  if [ "$DOCKER_OK" = 1 ]; then
    docker_ load -i "$BASES/busybox.docker.tar" >/dev/null && docker_ load -i "$BASES/debian.docker.tar" >/dev/null || DOCKER_OK=0
  fi
}
# Every image but the bases, and the build cache, gone.
docker_fresh() {
  local imgs; imgs=$(docker_ images --format '{{.Repository}}:{{.Tag}}' | grep -v -e '^kiln-test/' -e '/base/' || true)
  [ -z "$imgs" ] || docker_ rmi -f $imgs >/dev/null 2>&1 || true
  docker_ builder prune -af >/dev/null 2>&1 || true
}
docker_b() { docker_ build --network host --progress=plain "$@" >"$W/last.log" 2>&1; }

# ------------------------------------------------------------ timing
# run_timed CMD... -> "seconds bytes" (bytes the registry sent), or "fail"
run_timed() {
  local m t0 t1; m=$(reg_mark); t0=$(now)
  if "$@"; then t1=$(now)
    printf '%s %s\n' "$(echo "$t1 - $t0" | bc -l | xargs printf '%.2f')" "$(reg_bytes_since "$m")"
  else log "failed: $*"; tail -20 "$W/last.log" >&2; echo "fail fail"; fi
}
# Medians of "seconds bytes" lines.
medians() {
  local in; in=$(cat)
  if grep -q fail <<<"$in"; then echo "fail fail"; return; fi
  echo "$(awk '{print $1}' <<<"$in" | median) $(awk '{print $2}' <<<"$in" | median)"
}
kb() { case "$1" in fail|n/a) echo "$1" ;; *) echo "$1" | awk '{printf "%.1f", $1 / 1024}' ;; esac; }

# measure_row1 PROJECT -> sets R[tool,mode,p]="seconds bytes"
declare -A R
measure_row1() {
  local p="$1" d="$W/ctx/$1" out i
  make_project "$p" "$d"
  # The bases by their registry names (see kiln_fresh and kiln_empty).
  sed -i -e "s#kiln-test/busybox:1#$BUSYBOX#g" -e "s#kiln-test/debian:bookworm#$DEBIAN#g" "$d/Dockerfile"
  # The caches, once (untimed): each tool's first build, exported.
  log "$p: exporting the caches"
  kiln_fresh
  kiln_ --cache-to "type=registry,ref=$REG/cache/$p:kiln,mode=max" "$d" || { tail -20 "$W/last.log" >&2; exit 1; }
  kiln_ --cache-to type=inline -t "$REG/inline/$p:kiln" --push "$d" || { tail -20 "$W/last.log" >&2; exit 1; }
  if [ "$DOCKER_OK" = 1 ]; then
    docker_fresh
    docker_b --build-arg BUILDKIT_INLINE_CACHE=1 -t "$REG/bk/$p:1" "$d" || { tail -20 "$W/last.log" >&2; exit 1; }
    docker_ push "$REG/bk/$p:1" >/dev/null
  fi
  for mode in store push; do
    local k=() ki=() bk=()
    for i in $(seq 1 "$N"); do
      # store: -t into a store that has the bases; push: from an empty
      # store straight to the registry (buildx's --push without --load).
      local out=(-t "$REG/out-kiln-$i/$p:1") outi=(-t "$REG/out-kinline-$i/$p:1") reset=kiln_fresh
      if [ $mode = push ]; then
        out=(-o "type=registry,name=$REG/out-kiln-$i/$p:1")
        outi=(-o "type=registry,name=$REG/out-kinline-$i/$p:1")
        reset=kiln_empty
      fi
      $reset; bench_settle
      k+=("$(run_timed kiln_ --cache-from "type=registry,ref=$REG/cache/$p:kiln" "${out[@]}" "$d")")
      grep -q '(0 steps run' "$W/last.log" || log "$p $mode: kiln ran steps: $(grep -o '([0-9]* steps run[^)]*)' "$W/last.log")"
      K_LAYERS[$p,$mode]=$(grep -o 'layers: [0-9]* fetched.*stayed remote' "$W/last.log" || echo 'layers: ?')
      $reset; bench_settle
      ki+=("$(run_timed kiln_ --cache-from "$REG/inline/$p:kiln" "${outi[@]}" "$d")")
      KI_RAN[$p]=$(grep -o '([0-9]* steps run[^)]*)' "$W/last.log" || echo '?')
      if [ "$DOCKER_OK" = 1 ]; then
        docker_fresh; bench_settle
        local tag="$REG/out-bk-$mode-$i/$p:1"
        if [ $mode = push ]; then
          bk+=("$(run_timed sh -c "DOCKER_HOST=unix://$DSOCK DOCKER_BUILDKIT=1 /usr/bin/docker build --network host --progress=plain --cache-from $REG/bk/$p:1 -t $tag $d >$W/last.log 2>&1 && DOCKER_HOST=unix://$DSOCK /usr/bin/docker push $tag >>$W/last.log 2>&1")")
        else
          bk+=("$(run_timed docker_b --cache-from "$REG/bk/$p:1" -t "$tag" "$d")")
        fi
        BK_CACHED[$p]=$(grep -c ' CACHED$' "$W/last.log" || true)
      else
        bk+=("n/a n/a")
      fi
    done
    R[kiln,$mode,$p]=$(printf '%s\n' "${k[@]}" | medians)
    R[kinline,$mode,$p]=$(printf '%s\n' "${ki[@]}" | medians)
    R[docker,$mode,$p]=$(if [ "$DOCKER_OK" = 1 ]; then printf '%s\n' "${bk[@]}" | medians; else echo "n/a n/a"; fi)
    log "$p $mode: kiln ${R[kiln,$mode,$p]}; kiln inline ${R[kinline,$mode,$p]}; BuildKit ${R[docker,$mode,$p]}"
  done
}
declare -A KI_RAN BK_CACHED K_LAYERS

# ------------------------------------------------------------ row 2
# "seconds peak-RSS-KB" of kiln_ ARGS under /usr/bin/time.
rss_of() {
  if /usr/bin/time -f '%e %M' -o "$W/time.out" "$KILN_BIN" --root "$KS" build --progress=plain "$@" >"$W/last.log" 2>&1; then
    cat "$W/time.out"
  else log "failed: kiln build $*"; tail -20 "$W/last.log" >&2; echo "fail fail"; fi
}
measure_row2() {
  local d="$W/ctx/big" dest="$W/big-cache" files=4
  rm -rf "$d" "$dest"; mkdir -p "$d"
  cat > "$d/Dockerfile" <<DF
FROM $BUSYBOX
RUN for i in \$(seq 1 $files); do head -c $((CACHE_MB * 1048576 / files)) /dev/urandom > /data\$i; done
DF
  log "row 2: building the ${CACHE_MB} MB layer (untimed)"
  kiln_fresh
  kiln_ "$d" || { tail -20 "$W/last.log" >&2; exit 1; }
  bench_settle
  EXPORT=$(rss_of --cache-to "type=local,dest=$dest,mode=max" "$d")
  log "row 2: export: $EXPORT"
  kiln_fresh; bench_settle
  IMPORT=$(rss_of --cache-from "type=local,src=$dest" "$d")
  grep -q '(0 steps run' "$W/last.log" || log "row 2: the import ran steps"
  log "row 2: import: $IMPORT ($(grep -o 'cache: fetched.*' "$W/last.log" || true))"
  rm -rf "$d" "$dest" "$KS"
}

# ------------------------------------------------------------ run
bench_bases
start_registry
docker_init
[ "$DOCKER_OK" = 1 ] || { log "row 1 needs dockerd (it publishes the bases)"; exit 1; }
publish_bases
BUSYBOX="$REG/base/busybox:1" DEBIAN="$REG/base/debian:bookworm"
log "registry $REG; BuildKit: yes"
for p in $PROJECTS; do measure_row1 "$p"; done
measure_row2

goal() { # kiln BuildKit -> ratio, marked when over 0.5×
  local r; r=$(ratio "$1" "$2")
  case "$r" in n/a) echo "n/a" ;; *) awk -v r="${r%×}" 'BEGIN { exit !(r <= 0.5) }' && echo "$r" || echo "**$r**" ;; esac
}
echo "Seconds (median of $N) for a fresh store that builds an unchanged project from the registry, and kB the registry sent (GET responses) meanwhile. kiln: its registry cache (\`--cache-to type=registry,mode=max\`), and the image's inline cache (\`type=inline\`, mode=min); BuildKit: Debian docker.io $(docker_version) (BuildKit 0.8, no buildx), whose only registry cache is the inline one (\`BUILDKIT_INLINE_CACHE=1\`, then \`--cache-from IMAGE\` after \`docker rmi\` and \`builder prune -af\`). \"push\": the build and a push of the result to a new repository (see below for how the rows differ). Goal: kiln ≤ 0.5× BuildKit (a ratio over it is bold). A registry-cache hit in kiln downloads its layer only when a later step or the output needs it (lazy blobs; the \`layers:\` counts of the last run are below the table)."
echo
echo "| project | to | kiln | kiln inline | BuildKit | kiln/BuildKit | kB: kiln | kB: kiln inline | kB: BuildKit |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for p in $PROJECTS; do
  for mode in store push; do
    read -r ks kb <<<"${R[kiln,$mode,$p]}"; read -r is ib <<<"${R[kinline,$mode,$p]}"; read -r ds db <<<"${R[docker,$mode,$p]}"
    echo "| $p | $mode | $ks | $is | $ds | $(goal "$ks" "$ds") | $(kb "$kb") | $(kb "$ib") | $(kb "$db") |"
  done
done
echo
notes=""
for p in $PROJECTS; do notes+="$p: kiln ${K_LAYERS[$p,store]:-?} (push: ${K_LAYERS[$p,push]:-?}), kiln inline ${KI_RAN[$p]:-?}, BuildKit ${BK_CACHED[$p]:-?} steps CACHED; "; done
echo "Last run of each: ${notes%; }."
echo
echo "The two rows differ in where the bases are. store: \`-t NAME\` into a store that already has them (pulled, untimed), like dockerd with them loaded; the output image's layers are fetched (apt: its three built layers, as BuildKit; multistage: the final stage's one, the build stage's stay remote). push: kiln from an empty store, the bases read from the registry by the Dockerfile's \`FROM REG/base/...\`, and the image pushed without a store copy (\`-o type=registry,name=...\`, buildx's \`--push\` without \`--load\`): every layer is mounted from the cache's or the base's repository and none is downloaded; BuildKit keeps its loaded bases and runs \`build -t\` + \`docker push\`. From the inline cache a multi-stage build runs its earlier stages again (content-address keys need their output, and mode=min holds the final stage's layers only)."
echo
read -r es ek <<<"$EXPORT"; read -r is_ ik <<<"$IMPORT"
rss_mb() { case "$1" in fail) echo fail ;; *) echo "$1" | awk '{printf "%.0f", $1 / 1024}' ;; esac; }
echo "A ${CACHE_MB} MB cache (one layer of 4 files from /dev/urandom), gzip: kiln's peak RSS (\`/usr/bin/time -f %M\`). Goal: < 150 MB."
echo
echo "| cache of ${CACHE_MB} MB | seconds | peak RSS (MB) |"
echo "|---|---:|---:|"
echo "| export: \`--cache-to type=local,mode=max\` (the layer in the store) | $es | $(rss_mb "$ek") |"
echo "| import: \`--cache-from type=local\` into a fresh store | $is_ | $(rss_mb "$ik") |"
