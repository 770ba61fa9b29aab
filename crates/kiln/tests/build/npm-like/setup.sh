# Run by the harness in a scratch copy of this case, before building.
set -eu
mkdir -p context/node_modules/stale && echo x > context/node_modules/stale/x.js
echo log > context/npm-debug.log
