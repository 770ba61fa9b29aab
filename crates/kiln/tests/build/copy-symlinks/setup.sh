# Run by the harness in a scratch copy of this case, before building.
set -eu
ln -s real.txt context/tree/rel-link
ln -s /etc/os-release context/tree/abs-link
ln -s tree/real.txt context/top-link
