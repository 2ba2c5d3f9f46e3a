#!/usr/bin/env bash
# Lints the GitHub Actions workflows in .github/workflows with the pinned actionlint, built from
# the Go module proxy on first use (hack/go-tool.sh). `--path` only prints the binary's path.
set -euo pipefail
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
bin="$("$(dirname "$0")/go-tool.sh" actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION")"
[[ "${1:-}" == --path ]] && { echo "$bin"; exit 0; }
cd "$(dirname "$0")/.."
exec "$bin" "$@"
