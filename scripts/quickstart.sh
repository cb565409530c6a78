#!/usr/bin/env bash
# From a fresh clone to a running switch: install what the demo needs, build, and run
# `podswitchd --demo` (three pods in namespaces, pinged through the switch, then
# removed). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --locked --release --workspace --bins
exec ./target/release/podswitchd --demo "$@"
