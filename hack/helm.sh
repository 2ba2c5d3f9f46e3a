#!/usr/bin/env bash
# Prints the path of the pinned helm, built from the Go module proxy on first use
# (hack/go-tool.sh caches it by version). The chart's tests and `make tools` use it.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
exec "$(dirname "$0")/go-tool.sh" helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
