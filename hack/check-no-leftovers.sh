#!/usr/bin/env bash
# Fails when a process or temporary directory started by the tests outlived them.
set -euo pipefail
left=$(pgrep -af 'moto_ext.py|k8s-v[0-9.]+/bin/(etcd|kube-apiserver)|target/(debug|release)/ecs-worker( |$)|ecs-worker-operator run' || true)
dirs=$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'ecs-worker-operator-k8s-*' 2>/dev/null || true)
if [[ -n "$left" || -n "$dirs" ]]; then
  echo "left behind by the tests:" >&2
  [[ -n "$left" ]] && echo "$left" >&2
  [[ -n "$dirs" ]] && echo "$dirs" >&2
  exit 1
fi
echo "no process or temporary directory left behind"
