#!/usr/bin/env bash
# Prints the path of promtool (Prometheus's rule checker and rule unit-test runner), built
# once from the Go module proxy into the versioned tool cache (hack/go-tool.sh). Used by
# `make tools` and tests/integration/monitoring.rs.
set -euo pipefail
exec "$(dirname "$0")/go-tool.sh" promtool github.com/prometheus/prometheus/cmd/promtool v0.316.0
