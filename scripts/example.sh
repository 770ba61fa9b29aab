#!/usr/bin/env bash
# Builds an example image offline from Debian's busybox-static and shows it:
# no registry, no daemon. Uses a private store under target/example-store.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p kiln
kiln="$PWD/target/release/kiln --root $PWD/target/example-store"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A busybox root filesystem: the static binary and its applet links.
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp"
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$work/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/rootfs/etc/group"

$kiln import "$work/rootfs" example/busybox:latest \
  --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/bin'
$kiln images
$kiln history example/busybox:latest
$kiln save example/busybox:latest -o "$PWD/target/example-busybox.tar"
echo "saved target/example-busybox.tar (docker-archive)"
