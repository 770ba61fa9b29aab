# Run by the harness in a scratch copy of this case, before building.
set -eu
tar --mtime=@1700000000 -cf files/archive.tar files/hello.txt
