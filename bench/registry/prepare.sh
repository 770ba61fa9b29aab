#!/usr/bin/env bash
# Builds the two bench images once, as OCI layouts under $KILN_BENCH_DIR:
#   debian/  a debootstrap --variant=minbase bookworm rootfs, one tar+gzip layer
#   big/     1 GiB in 8 uncompressed layers of semi-compressible data
set -euo pipefail
B=${KILN_BENCH_DIR:-/var/tmp/kiln-bench}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$B"

if [ ! -f "$B/debian/index.json" ]; then
  mirror=$( { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } \
    | grep -E '^(URIs:|deb )' | grep -o 'http[^ ]*debian' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  if [ ! -x "$B/rootfs/bin/sh" ]; then
    rm -rf "$B/rootfs"
    debootstrap --variant=minbase bookworm "$B/rootfs" "$mirror" >"$B/debootstrap.log" 2>&1
  fi
  rm -rf "$B/debian" "$B/debian.tmp"; mkdir -p "$B/debian.tmp"
  tar -C "$B/rootfs" --numeric-owner --sort=name -cf - . \
    | tee >(sha256sum | cut -d' ' -f1 >"$B/debian.diffid") | gzip -6 >"$B/debian.layer"
  sleep 1
  python3 "$HERE/mklayout.py" "$B/debian.tmp" debian application/vnd.oci.image.layer.v1.tar+gzip \
    "$B/debian.layer:$(cat "$B/debian.diffid")" >/dev/null
  mv "$B/debian.tmp" "$B/debian"
fi

if [ ! -f "$B/big/index.json" ]; then
  # gzip layers, as registries hold them (skopeo would compress plain tar
  # layers on push, which would measure gzip rather than transfer).
  rm -rf "$B/big" "$B/big.tmp"; mkdir -p "$B/big.tmp"
  args=()
  for i in 0 1 2 3 4 5 6 7; do
    python3 - "$i" <<'PY' | tee >(sha256sum | cut -d' ' -f1 >"$B/big.diffid$i") | gzip -1 >"$B/big.layer$i"
import os, sys, random
# Half random, half repetitive: gzip halves it, so 8 x 256 MiB of tar data
# make about 1 GiB of compressed layers.
random.seed(int(sys.argv[1]))
out = sys.stdout.buffer
for _ in range(256 * 16):  # 256 MiB in 64 KiB blocks
    out.write(os.urandom(32768))
    out.write(bytes([random.randrange(256)]) * 32768)
PY
    sleep 0.2
    args+=("$B/big.layer$i:$(cat "$B/big.diffid$i")")
  done
  python3 "$HERE/mklayout.py" "$B/big.tmp" big application/vnd.oci.image.layer.v1.tar+gzip "${args[@]}" >/dev/null
  rm -f "$B"/big.diffid*
  mv "$B/big.tmp" "$B/big"
fi
du -sh "$B/debian" "$B/big"
