# ecs-worker-operator — the two commands a newcomer needs:
#   make demo   start a local control plane + AWS emulator and watch a worker run its cycle
#   make test   every test (unit, real kube-apiserver + etcd, moto), all set-up included
# Both install what they need on first use (Go-built Kubernetes binaries cached in
# ~/.cache/ecs-worker-operator, the moto venv in .venv) and reuse it afterwards.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test demo tools build lint crd argocd bench clean aws-smoke

tools:
	@hack/k8s-tools.sh >/dev/null
	@hack/moto-venv.sh >/dev/null
	@hack/promtool.sh >/dev/null
	@hack/helm.sh >/dev/null
	@hack/actionlint.sh --path >/dev/null
	@hack/prometheus-operator-crds.sh >/dev/null

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	hack/actionlint.sh

test: tools build lint
	$(CARGO) test --workspace --no-fail-fast
	@hack/check-no-leftovers.sh

demo: tools
	$(CARGO) build --workspace --bins
	@hack/demo.sh

bench: tools
	$(CARGO) build --release --workspace --all-targets
	$(CARGO) bench --workspace --bench drain
	$(CARGO) bench --workspace --bench startup
	$(CARGO) bench --workspace --bench cost
	$(CARGO) bench --workspace --bench latency
	$(CARGO) bench --workspace --bench fleet

# Opt-in, against real AWS with your credentials; never part of `make test`. Needs AWS_REGION and
# SMOKE_IMAGE (README.md, "AWS smoke test"); `hack/aws-smoke.sh --moto` runs it against moto.
aws-smoke:
	@CARGO="$(CARGO)" hack/aws-smoke.sh

crd:
	$(CARGO) run -q -- crd > crds/ecsselfterminatingworkers.ecsworker.dev.yaml

# deploy/argocd/argocd-cm-patch.yaml from the Argo CD customizations (a test fails when stale).
argocd:
	@hack/argocd-cm.sh

clean:
	$(CARGO) clean
	rm -rf .venv
