#!/usr/bin/env bash
# Creates the project-local Python venv (.venv) with the pinned moto server, once.
# Prints the venv's python. Reinstalls only when hack/moto-requirements.txt changes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/hack/moto-requirements.txt" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
# One install at a time: a second `make` started beside the first waits, then finds the venv.
source "$root/hack/lib.sh"
with_lock "venv-$(echo -n "$root" | sha256sum | cut -c1-12)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/hack/moto-requirements.txt" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
