#!/usr/bin/env bash
# Sets up and runs every check and test: formatting, lints, unit and integration tests
# against real servers (tansu broker, Redis) and Flink's planner.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --with-flink
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freshet/target}"
export FRESHET_REQUIRE_FLINK=1   # the Flink planner check must run, not skip
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test: cargo test"
cargo test --workspace
