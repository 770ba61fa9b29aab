# Run by the harness in a scratch copy of this case, before building.
set -eu
chmod 755 context/exec.sh
