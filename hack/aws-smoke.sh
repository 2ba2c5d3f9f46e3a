#!/usr/bin/env bash
# make aws-smoke: the operator against real AWS, once, end to end (tests/support/src/bin/aws_smoke.rs;
# README.md, "AWS smoke test"). Opt-in and never part of `make test`: it uses your AWS credentials
# and creates billable resources, all removed at the end.
#
#   AWS_REGION=us-east-1 SMOKE_IMAGE=123456789012.dkr.ecr.us-east-1.amazonaws.com/ecs-worker:smoke make aws-smoke
#   hack/aws-smoke.sh --moto    # the same steps against the local moto emulator: no AWS account
#   hack/aws-smoke.sh --help    # every setting
#
# The settings are checked before anything is built, so a missing one fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${CARGO_TARGET_DIR:-target}/debug/aws_smoke"
moto=false help=false
for arg in "$@"; do
  case "$arg" in
    --moto) moto=true ;;
    -h|--help) help=true ;;
    *) echo "aws-smoke: unknown argument $arg (see hack/aws-smoke.sh --help)" >&2; exit 2 ;;
  esac
done
if $help && [[ -x "$bin" ]]; then exec "$bin" --help; fi

if ! $moto && ! $help; then
  missing=()
  [[ -n "${AWS_REGION:-}" ]] || missing+=("  AWS_REGION   the region to test in, e.g. AWS_REGION=us-east-1")
  [[ -n "${SMOKE_IMAGE:-}" ]] || missing+=("  SMOKE_IMAGE  a worker image ECS can pull (build worker/Dockerfile, push it to your ECR)")
  if ((${#missing[@]})); then
    echo "aws-smoke: missing settings:" >&2
    printf '%s\n' "${missing[@]}" >&2
    echo "The smoke test runs against real AWS with your credentials and creates billable resources: see README.md, \"AWS smoke test\"." >&2
    exit 2
  fi
  command -v aws >/dev/null || echo "aws-smoke: note: the AWS CLI is not installed; it is not needed, but the commands printed for leftovers use it" >&2
fi

hack/k8s-tools.sh >/dev/null
if $moto; then hack/moto-venv.sh >/dev/null; fi
# The workspace build, as `make demo` does (a build of the testbed crate alone resolves features
# for it alone and rebuilds its dependencies).
"${CARGO:-cargo}" build --workspace --bins
exec "$bin" "$@"
