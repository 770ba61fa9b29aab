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
  rm -rf "$B/big" "$B/big.tmp"; mkdir -p "$B/big.tmp"
  args=()
  for i in 0 1 2 3 4 5 6 7; do
    python3 - "$B/big.layer$i" "$i" <<'PY'
import os, sys, random
# Half random, half repetitive: compresses to about half, like real layers.
random.seed(int(sys.argv[2]))
with open(sys.argv[1], "wb") as f:
    for _ in range(128 * 16):  # 128 MiB in 64 KiB blocks
        f.write(os.urandom(32768))
        f.write(bytes([random.randrange(256)]) * 32768)
PY
    args+=("$B/big.layer$i")
  done
  python3 "$HERE/mklayout.py" "$B/big.tmp" big application/vnd.oci.image.layer.v1.tar "${args[@]}" >/dev/null
  mv "$B/big.tmp" "$B/big"
fi
du -sh "$B/debian" "$B/big"
