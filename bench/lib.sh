# Shared helpers of the bench suites (sourced, not run): the base images,
# a private dockerd with BuildKit, settling the disk before a cold run, and
# timing, median and ratio helpers.
#
# A suite sets, before sourcing:
#   W          its scratch directory (under $KILN_BENCH_DIR)
#   BENCH_NAME its name, for the progress lines on stderr
# and gets KILN_BIN (bench/run.sh exports it; else this checkout's release
# build). Every cold run of every suite starts the same way: its tool's
# store deleted, then `bench_settle`.

KILN_BIN="${KILN_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/kiln}"
BENCH_DIR="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}"
mkdir -p "$W"

log() { echo "[bench/${BENCH_NAME:-?}] $*" >&2; }

# ------------------------------------------------------------ base images
# Made once per machine and shared by the suites (each file is written to a
# temporary name and renamed, so two suites may race to make it):
#   $BASES/busybox.tar         busybox-static rootfs, users root and app
#   $DEBIAN_ROOTFS_TAR         Debian bookworm minbase (the tests' cache if
#                              present: host apt sources and CAs inside;
#                              else debootstrap from the host's mirror)
#   $BASES/{busybox,debian}.docker.tar  both as docker-archives named
#                              $BUSYBOX and $DEBIAN (through `kiln import`)
BUSYBOX=kiln-test/busybox:1
DEBIAN=kiln-test/debian:bookworm
BASES="$BENCH_DIR/bases"
DEBIAN_ROOTFS_TAR=/var/tmp/kiln-test-debian/rootfs.tar

# The host's apt mirror: a deb line or a deb822 URIs field, not security.
host_mirror() {
  local m
  m=$( { grep -hE '^(deb|URIs:)[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | grep -oE 'https?://[^ ]+' | grep -v security | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

bench_bases() {
  mkdir -p "$BASES"
  if [ ! -f "$BASES/busybox.tar" ]; then
    local r; r=$(mktemp -d "$BASES/busybox-rootfs.XXXXXX")
    mkdir -p "$r"/{bin,etc,tmp,root,home/app,var,dev,proc,sys}
    chmod 1777 "$r/tmp"; chmod 755 "$r"; cp /bin/busybox "$r/bin/"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' > "$r/etc/passwd"
    printf 'root:x:0:\napp:x:1000:\n' > "$r/etc/group"
    tar --numeric-owner -cf "$r.tar" -C "$r" . && mv "$r.tar" "$BASES/busybox.tar"; rm -rf "$r"
  fi
  if [ ! -f "$DEBIAN_ROOTFS_TAR" ]; then
    log "debootstrap (once)"
    local b; b=$(mktemp -d "$BASES/debootstrap.XXXXXX")
    debootstrap --variant=minbase bookworm "$b" "$(host_mirror)" >&2
    mkdir -p "$(dirname "$DEBIAN_ROOTFS_TAR")"
    tar --numeric-owner -cpf "$b.tar" --exclude='./dev/*' -C "$b" . && mv "$b.tar" "$DEBIAN_ROOTFS_TAR"; rm -rf "$b"
  fi
  # docker-archives of both, through kiln (import works without build).
  if [ ! -f "$BASES/busybox.docker.tar" ] || [ ! -f "$BASES/debian.docker.tar" ]; then
    local s; s=$(mktemp -d "$BASES/seed-store.XXXXXX")
    "$KILN_BIN" --root "$s" import "$BASES/busybox.tar" "$BUSYBOX" >&2
    "$KILN_BIN" --root "$s" import "$DEBIAN_ROOTFS_TAR" "$DEBIAN" >&2
    "$KILN_BIN" --root "$s" save "$BUSYBOX" -o "$s/b.tar" --format docker-archive
    "$KILN_BIN" --root "$s" save "$DEBIAN" -o "$s/d.tar" --format docker-archive
    mv "$s/b.tar" "$BASES/busybox.docker.tar"; mv "$s/d.tar" "$BASES/debian.docker.tar"; rm -rf "$s"
  fi
}

# The host's apt sources and CAs as a context directory `hostconf/`, for
# RUNs that fetch through the host's mirror and proxy.
hostconf() {
  local c="$1/hostconf"; mkdir -p "$c/etc/ssl/certs" "$c/usr/local/share/ca-certificates" "$c/etc/apt/sources.list.d"
  cp /etc/ssl/certs/ca-certificates.crt "$c/etc/ssl/certs/"
  cp -r /usr/local/share/ca-certificates/. "$c/usr/local/share/ca-certificates/" 2>/dev/null || true
  cp /etc/apt/sources.list.d/* "$c/etc/apt/sources.list.d/" 2>/dev/null || true
  [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$c/etc/apt/" || true
}

# ------------------------------------------------------------ dockerd
# BuildKit is Debian's docker.io: a dockerd of our own on a private socket
# and data root under $W (no bridge, no iptables), DOCKER_BUILDKIT=1.
# bench_dockerd_start sets DOCKER_OK=1 when it answers; bench_cleanup
# (the suites' EXIT trap) stops it if we started it.
DOCKER_OK=0
DSOCK="$W/dockerd/docker.sock"
docker_() { DOCKER_HOST="unix://$DSOCK" DOCKER_BUILDKIT=1 /usr/bin/docker "$@"; }
docker_version() { /usr/bin/docker --version | awk '{print $3}' | tr -d ,; }
bench_dockerd_start() {
  [ -n "${BENCH_NO_DOCKER:-}" ] && { log "BENCH_NO_DOCKER set: no BuildKit column"; return 0; }
  [ -x /usr/sbin/dockerd ] || { log "no dockerd (apt-get install docker.io): no BuildKit column"; return 0; }
  mkdir -p "$W/dockerd"
  if ! docker_ version >/dev/null 2>&1; then
    setsid /usr/sbin/dockerd --bridge=none --iptables=false --ip6tables=false \
      --data-root "$W/dockerd/data" --exec-root "$W/dockerd/exec" -H "unix://$DSOCK" \
      --pidfile "$W/dockerd/pid" >"$W/dockerd/log" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker_ version >/dev/null 2>&1 && break; sleep 0.5; done
    STARTED_DOCKERD=1
  fi
  if docker_ version >/dev/null 2>&1; then DOCKER_OK=1
  else log "dockerd did not come up (see $W/dockerd/log): no BuildKit column"; fi
}
bench_cleanup() {
  if [ -n "${STARTED_DOCKERD:-}" ] && [ -f "$W/dockerd/pid" ]; then
    local pid; pid=$(cat "$W/dockerd/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
}

# ------------------------------------------------------------ timing
# After a reset: deletes written back and the page cache dropped, where the
# bench may (root); else a warning, once. Without it, on ext4 without a
# journal (this machine's disk), every file created in the next ~30 s scans
# the inodes just deleted (`recently_deleted` in the inode allocator), and
# cold runs swing with how much the previous reset deleted; with it, each
# cold run reads its inputs from disk, as on a fresh CI machine.
bench_settle() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches
  elif [ -z "${SETTLE_WARNED:-}" ]; then
    log "cannot drop the page cache (not root): cold runs follow the previous reset's deletes"; SETTLE_WARNED=1
  fi
}
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else print a[int((NR+1)/2)]}'; }
# time_cmd CMD... -> seconds (2 decimals) on stdout, "fail" if it failed;
# its output goes to $W/last.log, shown on stderr on failure.
time_cmd() {
  local t0 t1; t0=$(now)
  if "$@" >"$W/last.log" 2>&1; then t1=$(now); echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n'
  else log "failed: $*"; tail -20 "$W/last.log" >&2; echo fail; fi
}
# median_of VALUES... -> their median, "fail" if any failed, n/a if none.
median_of() {
  if [ $# -eq 0 ]; then echo n/a
  elif printf '%s\n' "$@" | grep -q fail; then echo fail
  else printf '%s\n' "$@" | median; fi
}
ratio() { # a b -> a/b as "0.42×", n/a when either is not a number
  case "$1$2" in *n/a*|*fail*) echo "n/a" ;; *) echo "$1 / $2" | bc -l | xargs printf '%.2f×\n' ;; esac
}
