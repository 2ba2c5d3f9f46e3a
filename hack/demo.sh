#!/usr/bin/env bash
# make demo: runs the demo binary of the test support crate (see tests/support/src/bin/demo.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run -q -p testbed --bin demo
