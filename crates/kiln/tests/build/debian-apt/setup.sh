# Run by the harness in a scratch copy of this case, before building.
set -eu
mkdir -p context/hostconf/etc/ssl/certs context/hostconf/usr/local/share/ca-certificates context/hostconf/etc/apt/sources.list.d
cp /etc/ssl/certs/ca-certificates.crt context/hostconf/etc/ssl/certs/
cp -r /usr/local/share/ca-certificates/. context/hostconf/usr/local/share/ca-certificates/ 2>/dev/null || true
for f in /etc/apt/sources.list.d/*; do [ -f "$f" ] && cp "$f" context/hostconf/etc/apt/sources.list.d/; done
[ -f /etc/apt/sources.list ] && cp /etc/apt/sources.list context/hostconf/etc/apt/ || true
chmod -R u=rwX,go=rX context/hostconf
