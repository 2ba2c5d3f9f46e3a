#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl for one pinned Kubernetes release from the Go
# module proxy and caches them by version outside the repository. Prints the bin directory.
# Never rebuilds when the cached binaries exist.
#
#   hack/k8s-tools.sh            # build if needed, print the bin dir
#
# k8s.io/kubernetes replaces its staging modules with local paths, so `go install` cannot build
# it directly: a throwaway wrapper module requires it and points each staging module at its
# published v0.MINOR.PATCH tag.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.4}" # the etcd that k8s.io/kubernetes v${K8S_VERSION} requires
source "$(dirname "$0")/lib.sh"
BIN="$CACHE_ROOT/k8s-v$K8S_VERSION/bin"

built() { [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" && -x "$BIN/kubectl" ]]; }
built && { echo "$BIN"; exit 0; }

command -v go >/dev/null || { echo "go is required to build the local control plane" >&2; exit 1; }
# One build at a time; a run that waited finds the other's finished binaries.
with_lock "k8s-v$K8S_VERSION"
built && { echo "$BIN"; exit 0; }

minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"
staging_version="v0.$minor.$patch"
staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

work="$(mktemp -d)"
partial="$(mktemp -d "$CACHE_ROOT/.k8s-v$K8S_VERSION.XXXXXX")"
trap 'rm -rf "$work" "$partial"' EXIT
start=$(date +%s)
echo "building kube-apiserver, etcd and kubectl v$K8S_VERSION into $BIN (first time only)" >&2

{
  echo "module local/k8s-tools"
  echo
  echo "go 1.24.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes v$K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
  echo ")"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m $staging_version"; done
  echo ")"
  echo
  echo "tool ("
  echo "	k8s.io/kubernetes/cmd/kube-apiserver"
  echo "	k8s.io/kubernetes/cmd/kubectl"
  echo "	go.etcd.io/etcd/server/v3"
  echo ")"
} >"$work/go.mod"

export GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
cd "$work"
go mod tidy >&2

build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

go build -trimpath -ldflags "$ldflags" -o "$partial/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build -trimpath -ldflags "$ldflags" -o "$partial/kubectl" k8s.io/kubernetes/cmd/kubectl >&2
go build -trimpath -ldflags "-s -w" -o "$partial/etcd" go.etcd.io/etcd/server/v3 >&2
chmod 755 "$partial"
mkdir -p "$(dirname "$BIN")"
rm -rf "$BIN" && mv "$partial" "$BIN"
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$BIN"
