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
here="$(cd "$(dirname "$0")" && pwd)"
KILN_BIN="${KILN_BIN:-$here/../../target/release/kiln}"
W="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/build"
N="${BENCH_N:-3}"
NET_N="${BENCH_NET_N:-3}"
PROJECTS="${BENCH_PROJECTS:-multistage apt pip copy20k metadata}"
mkdir -p "$W"
log() { echo "[bench/build] $*" >&2; }

# ------------------------------------------------------------ base images
# Made once and reused: busybox from busybox-static, Debian bookworm
# minbase (the tests' cache if present, else debootstrap here).
BUSYBOX=kiln-test/busybox:1
DEBIAN=kiln-test/debian:bookworm
bases() {
  if [ ! -f "$W/busybox.tar" ]; then
    local r="$W/busybox-rootfs"; rm -rf "$r"
    mkdir -p "$r"/{bin,etc,tmp,root,home/app,var,dev,proc,sys}
    chmod 1777 "$r/tmp"; cp /bin/busybox "$r/bin/"
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' > "$r/etc/passwd"
    printf 'root:x:0:\napp:x:1000:\n' > "$r/etc/group"
    tar --numeric-owner -cf "$W/busybox.tar.tmp" -C "$r" . && mv "$W/busybox.tar.tmp" "$W/busybox.tar"
  fi
  local deb=/var/tmp/kiln-test-debian/rootfs.tar
  if [ ! -f "$deb" ]; then
    log "debootstrap (once)"
    # The host's mirror: a deb line or a deb822 URIs field, not a comment.
    local m; m=$( { grep -hE '^(deb|URIs:)[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | grep -oE 'https?://[^ ]+' | grep -v security | head -1 || true)
    local b="$W/debootstrap"; rm -rf "$b"
    debootstrap --variant=minbase bookworm "$b" "${m:-http://deb.debian.org/debian}" >&2
    mkdir -p /var/tmp/kiln-test-debian
    tar --numeric-owner -cpf "$deb.tmp" --exclude='./dev/*' -C "$b" . && mv "$deb.tmp" "$deb"; rm -rf "$b"
  fi
  # docker-archives of both, through kiln (import works without build).
  if [ ! -f "$W/busybox.docker.tar" ] || [ ! -f "$W/debian.docker.tar" ]; then
    local s="$W/seed-store"; rm -rf "$s"
    "$KILN_BIN" --root "$s" import "$W/busybox.tar" "$BUSYBOX" >&2
    "$KILN_BIN" --root "$s" import "$deb" "$DEBIAN" >&2
    "$KILN_BIN" --root "$s" save "$BUSYBOX" -o "$W/busybox.docker.tar" --format docker-archive
    "$KILN_BIN" --root "$s" save "$DEBIAN" -o "$W/debian.docker.tar" --format docker-archive
  fi
}

# ------------------------------------------------------------ projects
# Each project: a context dir with a Dockerfile, and `change` edits one file.
hostconf() { # the host's apt sources and CAs, for RUNs that fetch
  local c="$1/hostconf"; mkdir -p "$c/etc/ssl/certs" "$c/usr/local/share/ca-certificates" "$c/etc/apt/sources.list.d"
  cp /etc/ssl/certs/ca-certificates.crt "$c/etc/ssl/certs/"
  cp -r /usr/local/share/ca-certificates/. "$c/usr/local/share/ca-certificates/" 2>/dev/null || true
  cp /etc/apt/sources.list.d/* "$c/etc/apt/sources.list.d/" 2>/dev/null || true
  [ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list "$c/etc/apt/" || true
}

make_project() { # name dir
  local p="$1" d="$2"; rm -rf "$d"; mkdir -p "$d"
  case "$p" in
  multistage)
    mkdir -p "$d/cmd/app" "$d/internal/lib"
    echo 'module example.com/app' > "$d/go.mod"; echo 'dep v1 h1:x=' > "$d/go.sum"
    for i in $(seq 1 200); do echo "package lib // $i" > "$d/internal/lib/f$i.go"; done
    echo 'package main // v1' > "$d/cmd/app/main.go"
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/busybox:1 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN mkdir -p /go/pkg && for i in $(seq 1 300); do echo "module $i" > /go/pkg/m$i; done
COPY . .
RUN mkdir -p /out && cat $(find . -name '*.go' | sort) | sha256sum > /out/app && sleep 1

FROM kiln-test/busybox:1 AS test
COPY --from=build /out/app /app
RUN test -s /app

FROM kiln-test/busybox:1
COPY --from=build /out/app /usr/local/bin/app
USER 65534
ENTRYPOINT ["/usr/local/bin/app"]
DF
    ;;
  apt)
    hostconf "$d"; echo 'echo v1' > "$d/app.sh"
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/debian:bookworm
COPY hostconf/ /
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends hello && rm -rf /var/lib/apt/lists/*
COPY app.sh /usr/local/bin/app.sh
CMD ["hello"]
DF
    ;;
  pip)
    hostconf "$d"; mkdir -p "$d/src"; echo 'six==1.16.0' > "$d/requirements.txt"; echo 'print("v1")' > "$d/src/main.py"
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/debian:bookworm
COPY hostconf/ /
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
COPY requirements.txt /app/
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install --no-cache-dir -q -r /app/requirements.txt
COPY src/ /app/src/
CMD ["/opt/venv/bin/python", "/app/src/main.py"]
DF
    ;;
  copy20k)
    mkdir -p "$d/tree"
    # 20,000 small files in 200 dirs.
    python3 - "$d/tree" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(200):
    d = os.path.join(root, f"d{i:03}")
    os.makedirs(d, exist_ok=True)
    for j in range(100):
        with open(os.path.join(d, f"f{j:03}.txt"), "w") as f:
            f.write(f"file {i} {j}\n" * 8)
PY
    cat > "$d/Dockerfile" <<'DF'
FROM kiln-test/busybox:1
COPY tree/ /data/
RUN find /data -type f | wc -l > /count
DF
    ;;
  metadata)
    { echo 'FROM kiln-test/busybox:1'
      for i in $(seq 1 17); do echo "ENV VAR_$i=value-$i"; done
      for i in $(seq 1 17); do echo "LABEL org.example.l$i=\"label $i\""; done
      for i in $(seq 1 16); do echo "EXPOSE $((8000 + i))"; done
      echo 'COPY version /version'
    } > "$d/Dockerfile"
    echo v1 > "$d/version"
    ;;
  esac
}

change_project() { # name dir: edit one file that a late COPY uses
  case "$1" in
  multistage) echo "package main // $RANDOM$RANDOM" > "$2/cmd/app/main.go" ;;
  apt) echo "echo $RANDOM$RANDOM" > "$2/app.sh" ;;
  pip) echo "print($RANDOM$RANDOM)" > "$2/src/main.py" ;;
  copy20k) echo "changed $RANDOM$RANDOM" > "$2/tree/d100/f050.txt" ;;
  metadata) echo "$RANDOM$RANDOM" > "$2/version" ;;
  esac
}

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
kiln_reset() { rm -rf "$KS"; "$KILN_BIN" --root "$KS" load -i "$W/busybox.docker.tar" >&2
  "$KILN_BIN" --root "$KS" load -i "$W/debian.docker.tar" >&2
  "$KILN_BIN" --root "$KS" run --rm $BUSYBOX true >&2
  "$KILN_BIN" --root "$KS" run --rm $DEBIAN true >&2; }
kiln_build() { "$KILN_BIN" --root "$KS" build --progress=plain -t bench:latest "$1" >"$W/last.log" 2>&1; }

BD="${BENCH_BUILDAH_DRIVER:-overlay}"
buildah_() { buildah --root "$W/buildah/$BD/root" --runroot "$W/buildah/$BD/run" --storage-driver "$BD" "$@"; }
buildah_init() { # the bases, from kiln's docker-archives, under the tests' names
  local id
  if ! id=$(buildah_ pull -q "docker-archive:$W/busybox.docker.tar" 2>/dev/null); then
    log "buildah storage driver $BD failed; falling back to vfs"; BD=vfs
    id=$(buildah_ pull -q "docker-archive:$W/busybox.docker.tar")
  fi
  buildah_ tag "$id" $BUSYBOX
  id=$(buildah_ pull -q "docker-archive:$W/debian.docker.tar")
  buildah_ tag "$id" $DEBIAN
}
buildah_reset() { # forget every image and layer, then the bases again (untimed)
  buildah_ rm --all >/dev/null 2>&1 || true
  buildah_ rmi --all --force >/dev/null 2>&1 || true
  buildah_init
}
buildah_build() { buildah_ build --runtime runc --layers --pull=never --format docker \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -t bench:latest "$1" >"$W/last.log" 2>&1; }

DOCKER_OK=0
DSOCK="$W/dockerd/docker.sock"
docker_() { DOCKER_HOST="unix://$DSOCK" DOCKER_BUILDKIT=1 /usr/bin/docker "$@"; }
docker_init() {
  [ -n "${BENCH_NO_DOCKER:-}" ] && { log "BENCH_NO_DOCKER set: no BuildKit column"; return; }
  [ -x /usr/sbin/dockerd ] || { log "no dockerd (apt-get install docker.io): no BuildKit column"; return; }
  mkdir -p "$W/dockerd"
  if ! docker_ version >/dev/null 2>&1; then
    # Our own daemon: no bridge, no iptables, data under the bench dir.
    setsid /usr/sbin/dockerd --bridge=none --iptables=false --ip6tables=false \
      --data-root "$W/dockerd/data" --exec-root "$W/dockerd/exec" -H "unix://$DSOCK" \
      --pidfile "$W/dockerd/pid" >"$W/dockerd/log" 2>&1 < /dev/null &
    for _ in $(seq 1 60); do docker_ version >/dev/null 2>&1 && break; sleep 0.5; done
    STARTED_DOCKERD=1
  fi
  if docker_ version >/dev/null 2>&1; then
    docker_ load -i "$W/busybox.docker.tar" >/dev/null && docker_ load -i "$W/debian.docker.tar" >/dev/null && DOCKER_OK=1
  fi
  [ "$DOCKER_OK" = 1 ] || log "dockerd did not come up (see $W/dockerd/log): no BuildKit column"
}
docker_reset() { docker_ rmi -f bench:latest >/dev/null 2>&1 || true; docker_ builder prune -af >/dev/null 2>&1 || true; }
docker_build() { docker_ build --network host --progress=plain -t bench:latest "$1" >"$W/last.log" 2>&1; }
cleanup() {
  if [ -n "${STARTED_DOCKERD:-}" ] && [ -f "$W/dockerd/pid" ]; then kill "$(cat "$W/dockerd/pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT

# ------------------------------------------------------------ timing
# After a reset: deletes written back and the page cache dropped (see the
# header), where the bench may; else a warning, once.
settle() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches
  elif [ -z "${SETTLE_WARNED:-}" ]; then
    log "cannot drop the page cache (not root): cold builds follow the previous reset's deletes"; SETTLE_WARNED=1
  fi
}
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else print a[int((NR+1)/2)]}'; }
# time_one TOOL DIR -> seconds on stdout, "fail" if the build failed
time_one() {
  local t0 t1; t0=$(now)
  if "$1_build" "$2"; then t1=$(now); echo "$t1 - $t0" | bc -l | xargs printf '%.2f\n'
  else log "$1 build failed in $2:"; tail -20 "$W/last.log" >&2; echo fail; fi
}

# measure TOOL PROJECT -> "cold nochange onefile"
measure() {
  local tool="$1" p="$2" d="$W/ctx/$2" n cold=() noch=() one=()
  n=$N; case "$p" in apt|pip) n=$NET_N ;; esac
  for _ in $(seq 1 "$n"); do
    make_project "$p" "$d"; "${tool}_reset"; settle
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

ratio() { # kiln peer
  case "$1$2" in *n/a*|*fail*) echo "n/a" ;; *) echo "$1 / $2" | bc -l | xargs printf '%.2f×\n' ;; esac
}

# ------------------------------------------------------------ run
bases
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
