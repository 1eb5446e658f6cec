#!/usr/bin/env bash
# The consumer test (test/consumer/README.md): builds, packs every package, installs the tarballs
# with plain npm into fresh applications outside the workspace and checks them on Node 20, 24 and
# 26. Options: --skip-build (dist is current), --node 20,24 (a subset), --keep (keep the apps).
set -euo pipefail
cd "$(dirname "$0")/.."
node test/consumer/run.mjs "$@"
