#!/usr/bin/env bash
# The test suite: unit tests, the allocation test, and the integration tests (which
# need root: they create network namespaces and attach XDP programs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# The integration tests run the podswitchd binary, so build it first.
cargo build --locked --workspace --bins
cargo test --locked --workspace --all-targets
