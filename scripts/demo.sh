#!/usr/bin/env bash
# One command from a fresh clone to the running quickstart demo (no Kubernetes, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pnpm demo -- "$@"
