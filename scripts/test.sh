#!/usr/bin/env bash
# One command from a fresh clone to a full test run: set-up, then typecheck, lint, cycles, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-test-tools
pnpm test
