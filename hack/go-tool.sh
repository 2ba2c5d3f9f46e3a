#!/usr/bin/env bash
# Builds one Go command from the Go module proxy and caches it by version outside the
# repository; prints the binary's path. Never rebuilds when the cached binary exists.
#
#   hack/go-tool.sh NAME PACKAGE VERSION [TAGS]
#       e.g. hack/go-tool.sh helm helm.sh/helm/v3/cmd/helm v3.22.0
#   TAGS are Go build tags (comma-separated); the cache keeps each tag set apart.
#
# The build runs under a lock (hack/lib.sh) into a private directory that is moved into place
# only when complete, so concurrent first runs neither race nor leave a half-built tool.
set -euo pipefail
[[ $# -eq 3 || $# -eq 4 ]] || { echo "usage: $0 NAME PACKAGE VERSION [TAGS]" >&2; exit 2; }
name="$1" package="$2" version="$3" tags="${4:-}"
source "$(dirname "$0")/lib.sh"
dir="$CACHE_ROOT/$name-$version${tags:+-${tags//,/-}}"
bin="$dir/bin/$name"
[[ -x "$bin" ]] && { echo "$bin"; exit 0; }

command -v go >/dev/null || { echo "go is required to build $name" >&2; exit 1; }
with_lock "$(basename "$dir")"
[[ -x "$bin" ]] && { echo "$bin"; exit 0; }

partial="$(mktemp -d "$CACHE_ROOT/.$(basename "$dir").XXXXXX")"
trap 'rm -rf "$partial"' EXIT
start=$(date +%s)
echo "building $name $version from the Go module proxy (first time only)" >&2
mkdir -p "$partial/bin"
GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$partial/bin" \
  go install -trimpath -ldflags "-s -w" ${tags:+-tags "$tags"} "$package@$version" >&2
built="$partial/bin/$(basename "$package")"
[[ "$built" == "$partial/bin/$name" ]] || mv "$built" "$partial/bin/$name"
chmod 755 "$partial"
rm -rf "$dir" && mv "$partial" "$dir"
echo "built $name in $(( $(date +%s) - start )) s" >&2
echo "$bin"
