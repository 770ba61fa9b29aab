# Run by the harness in a scratch copy of this case, before building.
set -eu
mkdir -p t/lib t/share a/static
echo lib > t/lib/libx.so; chmod 755 t/lib/libx.so
echo data > t/share/data.txt; chmod 600 t/share/data.txt
echo 'body{}' > a/static/app.css; chmod 644 a/static/app.css
tar --numeric-owner --owner=123 --group=456 --mtime=@1700000000 -cf context/vendor.tar -C t ./lib ./share
tar --numeric-owner --owner=0 --group=0 --mtime=@1700000000 -cf - -C a static | gzip -n > context/assets.tar.gz
echo notes | gzip -n > context/notes.gz
rm -rf t a
