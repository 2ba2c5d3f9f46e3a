#!/usr/bin/env bash
# Fetches the Prometheus Operator's CustomResourceDefinitions (ServiceMonitor, PrometheusRule)
# of one pinned release from the Go module proxy (they ship in the module's
# example/prometheus-operator-crd/) and caches them by version outside the repository; prints
# the directory. The chart's tests install them on the local API server so that a server-side
# dry run validates the chart's ServiceMonitor and PrometheusRule against the real schema.
#
#   hack/prometheus-operator-crds.sh     # fetch if needed, print the directory
set -euo pipefail

VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
source "$(dirname "$0")/lib.sh"
dir="$CACHE_ROOT/prometheus-operator-crds-$VERSION"
files=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
present() { for f in "${files[@]}"; do [[ -s "$dir/$f" ]] || return 1; done; }
present && { echo "$dir"; exit 0; }

command -v go >/dev/null || { echo "go is required to fetch the Prometheus Operator CRDs" >&2; exit 1; }
with_lock "prometheus-operator-crds-$VERSION"
present && { echo "$dir"; exit 0; }

partial="$(mktemp -d "$CACHE_ROOT/.prometheus-operator-crds-$VERSION.XXXXXX")"
trap 'rm -rf "$partial"' EXIT
module=github.com/prometheus-operator/prometheus-operator
# `go mod download` verifies the module against the checksum database.
src="$(cd "$partial" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$module@$VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$src/example/prometheus-operator-crd" ]] || { echo "no CRDs in $module@$VERSION" >&2; exit 1; }
for f in "${files[@]}"; do cp "$src/example/prometheus-operator-crd/$f" "$partial/$f"; done
chmod 755 "$partial"
chmod 644 "$partial"/*.yaml
rm -rf "$dir" && mv "$partial" "$dir"
echo "$dir"
