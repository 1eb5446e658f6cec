#!/usr/bin/env bash
# Installs everything meshlet's demo and tests need on a fresh Debian machine with Node >= 20.19:
# pnpm 12.4.2, the Debian packages the real-part tests use, and the workspace's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null)" != "12.4.2" ]; then
  npm install -g pnpm@12.4.2 >/dev/null
fi

if [ "${1:-}" = "--with-test-tools" ]; then
  need=()
  command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

pnpm install --frozen-lockfile
