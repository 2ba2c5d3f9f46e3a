#!/usr/bin/env bash
# make demo: runs the demo binary of the test support crate (see tests/support/src/bin/demo.rs),
# as built by `cargo build --workspace --bins` (a `cargo run -p testbed` would resolve features
# for that crate alone and rebuild its dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${CARGO_TARGET_DIR:-target}/debug/demo"
