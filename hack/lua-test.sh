#!/usr/bin/env bash
# Runs the Argo CD resource customization tests of EcsSelfTerminatingWorker with Debian's Lua 5.1,
# the Lua version Argo CD embeds, in Argo CD's own test format:
#   deploy/argocd/resource_customizations/ecsworker.dev/EcsSelfTerminatingWorker/
#     health_test.yaml          health.lua against testdata/
#     actions/action_test.yaml  actions/discovery.lua and actions/<name>/action.lua
# (runner: deploy/argocd/lua_test.lua). Installs the interpreter (package lua5.1) on first use.
#
#   hack/lua-test.sh                  run the tests
#   hack/lua-test.sh --json FILE...   print YAML files as read by the runner, as JSON
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

if [[ "${1:-}" == "--json" ]]; then
  exec lua5.1 "$root/deploy/argocd/lua_test.lua" "$@"
fi
exec lua5.1 "$root/deploy/argocd/lua_test.lua" \
  "$root/deploy/argocd/resource_customizations/ecsworker.dev/EcsSelfTerminatingWorker"
