# Run by the harness in a scratch copy of this case, before building.
set -eu
mkdir -p context/secrets context/web/node_modules/x
echo key > context/secrets/key.pem
echo m > context/web/node_modules/x/m.js
echo log > context/debug.log
