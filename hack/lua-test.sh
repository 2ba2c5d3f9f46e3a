#!/usr/bin/env bash
# Checks the Argo CD health check (deploy/argocd/health.lua) against every status sample in
# deploy/argocd/samples/ with Debian's Lua 5.1, the Lua version Argo CD embeds. Installs the
# interpreter (package lua5.1) on first use.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v lua5.1 >/dev/null; then
  if [[ "$(id -u)" -ne 0 ]]; then
    echo "lua5.1 is missing: run 'apt-get install -y lua5.1' as root" >&2
    exit 1
  fi
  echo "installing lua5.1 (first time only)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends lua5.1 >&2
fi

shopt -s nullglob
samples=("$root"/deploy/argocd/samples/*.yaml)
if [[ ${#samples[@]} -eq 0 ]]; then
  echo "no samples in deploy/argocd/samples" >&2
  exit 1
fi
exec lua5.1 "$root/deploy/argocd/test_health.lua" "$root/deploy/argocd/health.lua" "${samples[@]}"
