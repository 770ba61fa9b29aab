#!/usr/bin/env bash
# Bench suite "isolation" (issue 15): what each RUN isolation mode costs,
# same builds, same machine, one run:
#   userns   kiln as an unprivileged user (kilntest, a subuid range),
#            `--isolation rootless`: user, mount, pid, ipc, uts namespaces,
#            overlay snapshots (the baseline of every ratio)
#   root     kiln as root, `--isolation root`: the same namespaces but the
#            user namespace, overlay snapshots
#   chroot   kiln as root inside a podman container as a default Kubernetes
#            pod runs one (runc, default seccomp and capabilities, not
#            privileged; the pod image is busybox plus kiln's libraries,
#            as crates/kiln/tests/build_in_pod.rs makes it): no `unshare`
#            and no `mount` there, so kiln uses chroot without a mount
#            namespace on the copy snapshotter (this host cannot force
#            that mode outside a container: its own chroot mode has a
#            mount namespace). The container shares the host's network
#            (the pod's network), so its RUNs do too.
#   traced   the ptrace mode (ptrace + seccomp, no namespaces, no
#            privilege), kiln as kilntest on the host, `--isolation
#            traced --snapshotter copy` (it runs on a directory rootfs);
#            a column once `kiln info` lists it for that user, n/a until
# Each mode uses kiln's default RUN network for it: a private slirp4netns
# network for userns and root, the pod's (here the host's) for chroot,
# the host's for traced (it makes no network namespace).
#
# Rows: bench/build's apt and pip projects, cold (an empty store with the
# Debian base loaded and unpacked, untimed; then `sync` and a dropped page
# cache), median of $BENCH_N (default 3); and a 100,000-file base image
# with one `RUN echo x > /f`: the whole `kiln build --no-cache` of that
# one step (median of $BENCH_STEP_N, default $BENCH_N; each after `sync` and a dropped page cache:
# without the sync, files created right after the previous run deleted
# 100,000 (its container's copy) scan those deleted inodes, see lib.sh).
# kaniko snapshots by walking the whole filesystem after every step; it is
# not installable here, so the reference rows are such walks of the same
# 100,000-file rootfs: `find -newer` (a stat of every file, kaniko's
# time/redo snapshot modes) and a read and hash of every file (its default
# full mode), each after `sync` and a dropped page cache too.
# Markdown on stdout, progress on stderr, scratch in $KILN_BENCH_DIR/isolation.
set -euo pipefail
W="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/isolation"
BENCH_NAME=isolation
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../projects.sh"
N="${BENCH_N:-3}"
STEP_N="${BENCH_STEP_N:-$N}"       # the 100k row: minutes a run in chroot mode
USER_="${BENCH_USER:-kilntest}"
POD_IMAGE=localhost/kiln-bench-pod:1
FILES100K=kiln-bench/files100k:1
S="$W/share"                       # the pod's /share: contexts and stores
KB="$W/kiln"                       # a copy the unprivileged user may run
cleanup() { podman rmi -f "$POD_IMAGE" >/dev/null 2>&1 || true; bench_cleanup; }
trap cleanup EXIT

# ------------------------------------------------------------ inputs
# busybox plus 100,000 small files in 1,000 directories, once.
files100k_base() {
  [ -f "$BASES/files100k.docker.tar" ] && return
  log "making the 100,000-file base (once)"
  local r; r=$(mktemp -d "$BASES/files100k.XXXXXX")
  tar -xf "$BASES/busybox.tar" -C "$r"
  python3 - "$r/data" <<'PY'
import os, sys
for i in range(1000):
    d = os.path.join(sys.argv[1], f"d{i:03}")
    os.makedirs(d)
    for j in range(100):
        with open(os.path.join(d, f"f{j:02}"), "w") as f:
            f.write(f"file {i} {j}\n")
PY
  local s="$r.store"
  "$KILN_BIN" --root "$s" import "$r" "$FILES100K" >&2
  "$KILN_BIN" --root "$s" save "$FILES100K" -o "$r.tar" --format docker-archive
  mv "$r.tar" "$BASES/files100k.docker.tar"; rm -rf "$r" "$s"
}

# busybox + the shared libraries kiln links, as a podman image.
pod_image() {
  local r; r=$(mktemp -d "$W/pod-rootfs.XXXXXX")
  tar -xf "$BASES/busybox.tar" -C "$r"
  local lib
  for lib in $(ldd "$KB" | grep -oE '/[^ ]+'); do
    mkdir -p "$r$(dirname "$lib")"; cp -L "$lib" "$r$lib"
  done
  mkdir -p "$r/usr/local/bin"; : > "$r/usr/local/bin/kiln"
  tar --numeric-owner -cf "$r.tar" -C "$r" .
  podman import -q "$r.tar" "$POD_IMAGE" >/dev/null
  rm -rf "$r" "$r.tar"
}

# ------------------------------------------------------------ modes
# kiln_in MODE STORE ARGS...: kiln as that mode runs it, on the host.
kiln_in() {
  local mode="$1" store="$2"; shift 2
  case "$mode" in
    userns) runuser -u "$USER_" -- "$KB" --root "$store" "$@" ;;
    traced) runuser -u "$USER_" -- "$KB" --root "$store" "$@" ;;
    root) "$KB" --root "$store" "$@" ;;
  esac
}
# pod SCRIPT: sh -c SCRIPT in a default pod (kiln at /usr/local/bin/kiln).
pod() {
  podman run --rm --runtime runc --network host \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    -v "$KB:/usr/local/bin/kiln:ro" -v "$S:/share" -v "$BASES:/bases:ro" \
    "$POD_IMAGE" sh -c "$1"
}
isolation_flag() { case "$1" in userns) echo rootless ;; *) echo "$1" ;; esac; }
# snapshotter_args MODE: traced runs on a directory rootfs, so the copy
# snapshotter (as a kilntest, kiln would pick overlay); the others default.
snapshotter_args() { [ "$1" = traced ] && echo "--snapshotter copy" || true; }

# reset MODE BASE_ARCHIVE BASE_REF: an empty store holding that base,
# unpacked by one `run true` (untimed for the rows, as a pull or load
# unpacks; on the copy snapshotter it also makes the tree that later RUNs
# over that base start from). That first run is timed after `sync` and a
# dropped page cache, into $W/first-MODE-ARCHIVE, for its own row.
reset() {
  local mode="$1" archive="$2" ref="$3" st="$S/store-$1" iso; iso=$(isolation_flag "$1")
  local first; first="$W/first-$mode-$(basename "$archive")"
  rm -rf "$st"
  if [ "$mode" = chroot ]; then
    pod "kiln --root /share/store-chroot load -i /bases/$(basename "$archive") >/dev/null" >&2
    bench_settle
    pod "t0=\$(cut -d' ' -f1 /proc/uptime); kiln --root /share/store-chroot run --rm --isolation chroot $ref true; \
      t1=\$(cut -d' ' -f1 /proc/uptime); echo \"\$t0 \$t1\" > /share/time" >&2
    local t0 t1; read -r t0 t1 < "$S/time"; echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n' > "$first"
    return
  fi
  mkdir -p "$st"
  case "$mode" in userns|traced) chown "$USER_:" "$st" ;; esac
  kiln_in "$mode" "$st" load -i "$archive" >/dev/null
  bench_settle
  # shellcheck disable=SC2046
  time_cmd kiln_in "$mode" "$st" run --rm --isolation "$iso" $(snapshotter_args "$mode") "$ref" true > "$first"
}

# build MODE CONTEXT [ARGS...] -> seconds of one `kiln build`, or "fail"
build() {
  local mode="$1" ctx="$2"; shift 2
  local iso; iso=$(isolation_flag "$mode")
  if [ "$mode" = chroot ]; then
    # Timed inside the container: its start is no part of the build
    # (busybox's date has no %N: /proc/uptime counts hundredths).
    local rel="${ctx#"$S"/}"
    pod "t0=\$(cut -d' ' -f1 /proc/uptime); kiln --root /share/store-chroot build --isolation chroot --progress=plain \
      -t bench:latest $* /share/$rel >/share/last.log 2>&1; rc=\$?; t1=\$(cut -d' ' -f1 /proc/uptime); \
      echo \"\$t0 \$t1 \$rc\" > /share/time" >&2 || true
    local t0 t1 rc; read -r t0 t1 rc < "$S/time"; cp "$S/last.log" "$W/last.log"
    if [ "$rc" = 0 ]; then echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n'
    else log "chroot build of $ctx failed:"; tail -20 "$W/last.log" >&2; echo fail; fi
    return
  fi
  # shellcheck disable=SC2046
  time_cmd kiln_in "$mode" "$S/store-$mode" build --isolation "$iso" $(snapshotter_args "$mode") \
    --progress=plain -t bench:latest "$@" "$ctx"
}

cold_runs() { # MODE PROJECT
  local t=()
  for _ in $(seq 1 "$N"); do
    reset "$1" "$BASES/debian.docker.tar" "$DEBIAN"; bench_settle
    t+=("$(build "$1" "$S/ctx/$2")")
  done
  median_of "${t[@]}"
}
step100k_runs() { # MODE
  local t=()
  reset "$1" "$BASES/files100k.docker.tar" "$FILES100K"
  for _ in $(seq 1 "$STEP_N"); do bench_settle; t+=("$(build "$1" "$S/ctx/step100k" --no-cache)"); done
  median_of "${t[@]}"
}

# The reference: walks of the same rootfs, after `sync` and a dropped page
# cache as the steps they compare with.
walk_runs() { # stat|hash
  local r="$W/walk-rootfs" t=()
  if [ ! -d "$r/data" ]; then
    rm -rf "$r"; mkdir -p "$r"
    "$KILN_BIN" --root "$W/walk-store" load -i "$BASES/files100k.docker.tar" >/dev/null
    "$KILN_BIN" --root "$W/walk-store" export "$FILES100K" -o "$W/walk.tar"
    tar -xf "$W/walk.tar" -C "$r"; rm -rf "$W/walk.tar" "$W/walk-store"
    touch "$W/walk-stamp"; echo x > "$r/f"
  fi
  local cmd
  case "$1" in
    stat) cmd=(find "$r" -newer "$W/walk-stamp") ;;
    hash) cmd=(sh -c "find '$r' -type f -print0 | xargs -0 sha256sum") ;;
  esac
  for _ in $(seq 1 "$STEP_N"); do bench_settle; t+=("$(time_cmd "${cmd[@]}")"); done
  median_of "${t[@]}"
}

# ------------------------------------------------------------ run
bench_bases
files100k_base
mkdir -p "$S/ctx"; chmod 755 "$W" "$S"
install -m 755 "$KILN_BIN" "$KB"
make_project apt "$S/ctx/apt"; make_project pip "$S/ctx/pip"
mkdir -p "$S/ctx/step100k"; printf 'FROM %s\nRUN echo x > /f\n' "$FILES100K" > "$S/ctx/step100k/Dockerfile"

MODES=(userns root chroot traced)
declare -A OK
OK[userns]=0; OK[root]=0; OK[chroot]=0; OK[traced]=0
# (`kiln info` into files first: grep -q closing a pipe early fails it.)
"$KB" info > "$W/info-root.txt" 2>&1 || true
: > "$W/info-user.txt"
if id "$USER_" >/dev/null 2>&1; then runuser -u "$USER_" -- "$KB" info > "$W/info-user.txt" 2>&1 || true; fi
if grep -q '^isolation rootless: *yes' "$W/info-user.txt"; then OK[userns]=1
else log "no rootless mode for $USER_ (the tests' harness makes that user): no userns column"; fi
grep -q '^isolation root: *yes' "$W/info-root.txt" && OK[root]=1 || log "no root mode: no root column"
if command -v podman >/dev/null && command -v runc >/dev/null; then
  pod_image
  pod "kiln info" > "$W/pod-info.txt" 2>&1 || true
  if grep -q '^isolation chroot: *yes (chroot without a mount namespace' "$W/pod-info.txt"; then OK[chroot]=1
  else log "kiln in the pod does not offer chroot without a mount namespace:"; cat "$W/pod-info.txt" >&2; fi
else log "no podman or runc: no chroot column"; fi
if grep -q '^isolation traced: *yes' "$W/info-user.txt"; then OK[traced]=1
else log "kiln info lists no usable traced mode yet: its column is n/a"; fi

declare -A R
for m in "${MODES[@]}"; do
  for row in apt pip step100k first first100k; do R[$m,$row]=n/a; done
  [ "${OK[$m]}" = 1 ] || continue
  for p in apt pip; do log "$p: $m"; R[$m,$p]=$(cold_runs "$m" "$p"); log "$p: $m: ${R[$m,$p]}"; done
  R[$m,first]=$(cat "$W/first-$m-debian.docker.tar")
  log "step100k: $m"; R[$m,step100k]=$(step100k_runs "$m"); log "step100k: $m: ${R[$m,step100k]}"
  R[$m,first100k]=$(cat "$W/first-$m-files100k.docker.tar")
  rm -rf "$S/store-$m"
done
log "walks"
WALK_STAT=$(walk_runs stat); WALK_HASH=$(walk_runs hash)
rm -rf "$W/walk-rootfs" "$W/walk-stamp"

echo "What each RUN isolation mode costs on the same builds: userns (kiln as an unprivileged user with a subuid range, the baseline), root, chroot without a mount namespace (kiln as root in a default podman/runc container, as in a Kubernetes pod, on the copy snapshotter) and traced (ptrace + seccomp, no privilege at all: kiln as the same unprivileged user, \`--isolation traced --snapshotter copy\`; n/a where \`kiln info\` does not list it); goals: chroot ≤ 1.2×, traced ≤ 1.5× userns, and a one-file step on a 100,000-file image far below kaniko's whole-filesystem walk."
echo
echo "Seconds, median of $N (the 100k row and its references: $STEP_N). apt and pip: bench/build's projects, cold (an empty store with the Debian base loaded and unpacked, then \`sync\` and a dropped page cache), each mode with its default RUN network (slirp4netns for userns and root, the pod's, here the host's, for chroot, the host's for traced). 100k: the whole \`kiln build --no-cache\` of \`RUN echo x > /f\` on a base of 100,000 small files, each after \`sync\` and a dropped page cache. In the copy-snapshotter modes (chroot, traced) a RUN starts from the tree kiln keeps for the base (made by the store's first run over it: the \"first\" rows, 1 run each, cold) and the diff compares the directories inotify saw touched. kaniko is not installable here: the reference rows walk the same 100,000-file rootfs as its snapshotter does after every step (a stat of every file, as its time/redo modes; a read and SHA-256 of every file, as its default full mode), each after \`sync\` and a dropped page cache too."
echo
echo "| build | userns | root | chroot (pod) | traced | root / userns | chroot / userns | traced / userns |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for row in apt pip step100k first first100k; do
  label=$row
  case "$row" in
    step100k) label="100k-file rootfs, one-file RUN step" ;;
    first) label="first \`run --rm true\` on Debian after \`load\` (unpacks; copy modes make the kept tree)" ;;
    first100k) label="first \`run --rm true\` on the 100k-file base after \`load\`" ;;
  esac
  u=${R[userns,$row]}
  echo "| $label | $u | ${R[root,$row]} | ${R[chroot,$row]} | ${R[traced,$row]} | $(ratio "${R[root,$row]}" "$u") | $(ratio "${R[chroot,$row]}" "$u") | $(ratio "${R[traced,$row]}" "$u") |"
done
echo "| 100k step / \`find -newer\` walk | $(ratio "${R[userns,step100k]}" "$WALK_STAT") | $(ratio "${R[root,step100k]}" "$WALK_STAT") | $(ratio "${R[chroot,step100k]}" "$WALK_STAT") | $(ratio "${R[traced,step100k]}" "$WALK_STAT") | | | |"
echo
echo "Reference (kaniko's snapshot of the same 100,000-file rootfs, by hand): \`find -newer\` walk $WALK_STAT s; read + SHA-256 of every file $WALK_HASH s."
