#!/usr/bin/env bash
# Builds and runs an example image offline: a busybox base image made by
# `kiln import` from Debian's busybox-static, then `kiln build` of the
# multi-stage examples/hello, then `kiln run`. No registry, no daemon.
# Uses a private store under target/example-store.
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
printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\napp:x:1000:\n' > "$work/rootfs/etc/group"

$kiln import "$work/rootfs" example/busybox:latest \
  --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/usr/local/bin:/bin'
$kiln build -t example/hello:latest --progress plain examples/hello
$kiln run --rm example/hello:latest
$kiln images
