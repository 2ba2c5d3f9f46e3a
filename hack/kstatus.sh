#!/usr/bin/env bash
# Builds hack/kstatus (a tiny Go command around sigs.k8s.io/cli-utils' kstatus library) into
# the versioned tool cache, keyed by the hash of its sources; prints the binary's path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/hack/lib.sh"
src="$root/hack/kstatus"
hash="$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)"
bin="$CACHE_ROOT/kstatus-$hash/kstatus"
[[ -x "$bin" ]] && { echo "$bin"; exit 0; }

command -v go >/dev/null || { echo "go is required to build hack/kstatus" >&2; exit 1; }
with_lock "kstatus-$hash"
[[ -x "$bin" ]] && { echo "$bin"; exit 0; }
partial="$(mktemp -d "$CACHE_ROOT/.kstatus-$hash.XXXXXX")"
trap 'rm -rf "$partial"' EXIT
echo "building hack/kstatus from the Go module proxy (first time only)" >&2
(cd "$src" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod \
  go build -trimpath -ldflags "-s -w" -o "$partial/kstatus" .) >&2
chmod 755 "$partial"
rm -rf "$(dirname "$bin")" && mv "$partial" "$(dirname "$bin")"
echo "$bin"
