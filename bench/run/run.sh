#!/usr/bin/env bash
# Bench suite "run": `kiln run` side by side with its peers, in one run.
#   1. `true` in the Debian bookworm image: kiln run, buildah run (a working
#      container from the same image via oci-archive, private storage,
#      runc), podman run --rm (private root/runroot, runc). hyperfine,
#      --warmup 3 --runs 15. Goal: kiln <= 0.3x buildah.
#   2. Diffing a step that changes one file in a 100,000-file rootfs (file
#      sizes as in the Debian image, so about 3.7 GB):
#      `kiln run --commit X IMG sh -c 'echo x > /etc/one'` with the overlay
#      and the copy snapshotter, against a full-tree hash walk of the same
#      tree (`tar -c DIR | sha256sum`). Each is reported as a percentage of
#      the walk; goal < 5%. Whole runs are timed by hyperfine. The diff
#      alone comes from kiln's own phase clock: with KILN_TIMINGS=1, `kiln
#      run` prints `kiln-timing: <phase> <ms> ms` to stderr for setup (store,
#      image, snapshotter choice), snapshot (overlay dirs, or the copy of the
#      tree and its stat index), run (the sandboxed command), diff (upper
#      dir walk, or the stat walk against the index, to layer entries),
#      commit (tar + gzip + blob + image + tag) and remove. "diff only" is
#      the median of the diff phase over BENCH_DIFF_RUNS extra runs; "diff +
#      commit" adds the commit phase. The copy snapshotter's whole run also
#      copies the tree in and deletes it, which that design does every run.
#
# Markdown on stdout, progress on stderr, scratch in $KILN_BENCH_DIR/run.
# Env: KILN_BIN (set by bench/run.sh; else a release build is made),
#      BENCH_RUNS (default 15), BENCH_DIFF_RUNS (default 5).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
W="${KILN_BENCH_DIR:-/var/tmp/kiln-bench}/run"
RUNS="${BENCH_RUNS:-15}"
DRUNS="${BENCH_DIFF_RUNS:-5}"
mkdir -p "$W"
log() { echo "[bench/run] $*" >&2; }

if [ -z "${KILN_BIN:-}" ]; then
  (cd "$here/../.." && cargo build --release -p kiln >&2)
  KILN_BIN="${CARGO_TARGET_DIR:-$here/../../target}/release/kiln"
fi
K=("$KILN_BIN" --root "$W/kiln-store")
ULIM=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
DEBIAN=kiln-bench/debian:bookworm
deb=/var/tmp/kiln-test-debian/rootfs.tar
[ -f "$deb" ] || { log "missing $deb: run the Debian tests once (cargo test -p kiln --test run_cli)"; exit 1; }

# ------------------------------------------------------------ images
if ! "${K[@]}" inspect "$DEBIAN" >/dev/null 2>&1; then
  log "kiln import debian"
  "${K[@]}" import "$deb" "$DEBIAN" >&2
fi
if [ ! -f "$W/debian.oci.tar" ]; then
  "${K[@]}" save "$DEBIAN" -o "$W/debian.oci.tar.tmp" --format oci-archive >&2
  mv "$W/debian.oci.tar.tmp" "$W/debian.oci.tar"
fi

driver=overlay
fstype=$(stat -f -c %T "$W")
[ "$fstype" = overlayfs ] && driver=vfs
B=(buildah --root "$W/buildah/root" --runroot "$W/buildah/run" --storage-driver "$driver")
P=(podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver "$driver")
ctr=$("${B[@]}" containers --format '{{.ContainerName}}' 2>/dev/null | grep -x kiln-bench-run || true)
if [ -z "$ctr" ]; then
  log "buildah from oci-archive"
  "${B[@]}" from --name kiln-bench-run "${ULIM[@]}" "oci-archive:$W/debian.oci.tar" >&2
fi
if ! "${P[@]}" image exists localhost/kiln-bench-debian 2>/dev/null; then
  log "podman load"
  "${P[@]}" pull "oci-archive:$W/debian.oci.tar" >&2
  id=$("${P[@]}" images -q | head -1)
  "${P[@]}" tag "$id" localhost/kiln-bench-debian >&2
fi

median() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(" ".join(str(x["median"]) for x in r))' "$1"; }

# ------------------------------------------------------------ part 1
log "part 1: true in Debian"
hyperfine --warmup 3 --runs "$RUNS" --export-json "$W/true.json" -N \
  -n kiln "${K[*]} run --rm $DEBIAN true" \
  -n buildah "${B[*]} run --runtime runc kiln-bench-run true" \
  -n podman "${P[*]} run --rm --runtime runc ${ULIM[*]} localhost/kiln-bench-debian true" >&2
read -r tk tb tp < <(median "$W/true.json")

# ------------------------------------------------------------ part 2
# 100,000 files whose sizes follow a real rootfs: the Debian image's own
# regular files, cycled in order (about 3.7 GB in all). Tiny files would
# make the hash walk, the yardstick, unrealistically cheap.
BIG="$W/big-rootfs"
if [ ! -f "$BIG/.done-v2" ]; then
  log "generating a 100,000-file rootfs with the Debian image's file sizes"
  rm -rf "$BIG"; mkdir -p "$BIG"/{bin,etc,tmp,proc,dev,sys}
  cp /bin/busybox "$BIG/bin/"; ln -s busybox "$BIG/bin/sh"
  python3 - "$BIG" "$deb" <<'PY'
import os, random, sys, tarfile
root, deb = sys.argv[1], sys.argv[2]
sizes = [m.size for m in tarfile.open(deb) if m.isfile()]
block = random.Random(1).randbytes(1 << 20)
n = total = 0
for a in range(100):
    for b in range(10):
        d = os.path.join(root, "data", f"d{a:02}", f"s{b}")
        os.makedirs(d)
        for c in range(100):
            size = sizes[n % len(sizes)]
            with open(os.path.join(d, f"f{c:03}"), "wb") as f:
                left = size
                while left:
                    k = min(left, len(block))
                    f.write(block[:k])
                    left -= k
            n += 1
            total += size
print(f"{n} files, {total / 1e9:.2f} GB", file=sys.stderr)
PY
  touch "$BIG/.done-v2"
  "${K[@]}" rmi kiln-bench/big >/dev/null 2>&1 || true
fi
if ! "${K[@]}" inspect kiln-bench/big >/dev/null 2>&1; then
  log "kiln import big rootfs"
  "${K[@]}" import "$BIG" kiln-bench/big >&2
fi
log "part 2: one-file diff in 100k files"
ONE=(sh -c 'echo x > /etc/one')
hyperfine --warmup 1 --runs "$DRUNS" --export-json "$W/diff.json" -N \
  -n walk "sh -c 'tar -C $BIG -cf - . | sha256sum'" \
  -n overlay "${K[*]} run --rm --snapshotter overlay --commit kiln-bench/x kiln-bench/big sh -c 'echo x > /etc/one'" \
  -n copy "${K[*]} run --rm --snapshotter copy --commit kiln-bench/x kiln-bench/big sh -c 'echo x > /etc/one'" >&2
read -r dw dov dcp < <(median "$W/diff.json")
# Phase times: one line per run, "phase ms" pairs.
for snap in overlay copy; do
  : >"$W/phases-$snap"
  for _ in $(seq "$DRUNS"); do
    KILN_TIMINGS=1 "${K[@]}" run --rm --snapshotter "$snap" --commit kiln-bench/x kiln-bench/big "${ONE[@]}" 2>&1 >/dev/null \
      | awk '/^kiln-timing:/ {printf "%s %s ", $2, $3} END {print ""}' >>"$W/phases-$snap"
  done
done

python3 - "$tk" "$tb" "$tp" "$dw" "$dov" "$dcp" "$W/phases-overlay" "$W/phases-copy" <<'PY'
import statistics, sys
tk, tb, tp, dw, dov, dcp = map(float, sys.argv[1:7])
def phases(path):
    runs = []
    for line in open(path):
        f = line.split()
        runs.append({f[i]: float(f[i + 1]) / 1000 for i in range(0, len(f) - 1, 2)})
    return lambda *names: statistics.median(sum(r.get(n, 0.0) for n in names) for r in runs)
ms = lambda s: f"{s*1000:.1f} ms" if s < 10 else f"{s:.2f} s"
pct = lambda s: f"{100*s/dw:.1f}%"
print("`true` in Debian bookworm (median of hyperfine runs):")
print()
print("| tool | median | kiln / tool |")
print("|---|---|---|")
print(f"| kiln run | {ms(tk)} | 1.00x |")
print(f"| buildah run (runc) | {ms(tb)} | {tk/tb:.2f}x |")
print(f"| podman run --rm (runc) | {ms(tp)} | {tk/tp:.2f}x |")
print()
print("Goal: kiln <= 0.30x buildah: " + ("met" if tk / tb <= 0.3 else "NOT met"))
print()
print("One-file change in a 100,000-file rootfs, vs a full-tree hash walk (`tar -c | sha256sum`):")
print()
print("| what | median | % of walk |")
print("|---|---|---|")
print(f"| full-tree hash walk | {ms(dw)} | 100% |")
for name, label, whole, path in [("overlay", "overlay", dov, sys.argv[7]), ("copy", "copy / stat index", dcp, sys.argv[8])]:
    med = phases(path)
    print(f"| kiln {label}: diff only | {ms(med('diff'))} | {pct(med('diff'))} |")
    print(f"| kiln {label}: diff + commit | {ms(med('diff', 'commit'))} | {pct(med('diff', 'commit'))} |")
    if name == "copy":
        print(f"| kiln {label}: tree copy + index, before the run | {ms(med('snapshot'))} | {pct(med('snapshot'))} |")
        print(f"| kiln {label}: tree removal, after | {ms(med('remove'))} | {pct(med('remove'))} |")
    print(f"| kiln {label}: whole `run --commit` | {ms(whole)} | {pct(whole)} |")
print()
print("Goal: the diff under 5% of the walk for both snapshotters. The diff-only and diff + commit rows are kiln's own phase clock (KILN_TIMINGS=1, medians); whole runs are hyperfine medians, process start to exit.")
PY
