#!/usr/bin/env bash
# Prints the path of promtool (Prometheus's rule checker and rule unit-test runner), built
# once from the Go module proxy into the versioned tool cache (hack/go-tool.sh). Used by
# `make tools` and tests/integration/monitoring.rs. Built without Prometheus's service
# discovery plugins (build tag `remove_all_sd`, see plugins/ in the Prometheus module): rule
# checks and rule unit tests need none of them, and leaving out their cloud SDKs makes the
# first build several times faster.
set -euo pipefail
exec "$(dirname "$0")/go-tool.sh" promtool github.com/prometheus/prometheus/cmd/promtool v0.316.0 remove_all_sd
