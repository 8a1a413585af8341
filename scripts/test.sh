#!/usr/bin/env bash
# Sets up and runs every check and test: formatting, lints, unit and integration tests
# against real servers (tansu broker, Redis, Prometheus) and Flink's planner, and checks
# of the docker-compose file, Prometheus configuration and rules, and dashboards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --with-flink
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freshet/target}"
export FRESHET_REQUIRE_FLINK=1   # the Flink planner check must run, not skip
echo "test: deployment and monitoring configuration"
docker-compose -f deployment/docker-compose.yml config -q
promtool check config monitoring/prometheus.yml
promtool check rules monitoring/rules.yml
for dashboard in monitoring/grafana/dashboards/*.json; do
  python3 -m json.tool "$dashboard" > /dev/null || { echo "test: $dashboard is not valid JSON" >&2; exit 1; }
done
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test: cargo test"
cargo test --workspace
