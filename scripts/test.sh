#!/usr/bin/env bash
# Sets up and runs every check and test: formatting, lints, unit and integration tests
# against real servers (tansu broker, Redis, Prometheus) and Flink's planner, and checks
# of the docker-compose file, Prometheus configuration and rules, and dashboards.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --with-flink
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freshet/target}"
export FRESHET_REQUIRE_FLINK=1   # the Flink planner check must run, not skip
export FRESHET_REQUIRE_TOOLS=1   # so must the checks with third-party clients (Confluent's Python client)
echo "test: deployment and monitoring configuration"
docker-compose -f deployment/docker-compose.yml config -q
docker-compose -f deployment/docker-compose.yml --profile flink config -q
promtool check config monitoring/prometheus.yml
promtool check rules monitoring/rules.yml
for dashboard in monitoring/grafana/dashboards/*.json; do
  python3 -m json.tool "$dashboard" > /dev/null || { echo "test: $dashboard is not valid JSON" >&2; exit 1; }
done
echo "test: crate boundaries"
# The CLI and the testkit link libraries only; production binaries do not link the
# local-stack crate (they read stack.env through freshet-service).
services="freshet-processor|freshet-producer|freshet-serving|freshet-schema-registry"
for crate in freshet-cli freshet-testkit; do
  if cargo tree -q -p "$crate" -e normal --prefix none | grep -E "^($services) " >/dev/null; then
    echo "test: $crate links a service crate:" >&2
    cargo tree -q -p "$crate" -e normal -i "$(cargo tree -q -p "$crate" -e normal --prefix none | grep -oE "^($services)" | head -n1)" >&2
    exit 1
  fi
done
for service in freshet-processor freshet-producer freshet-serving freshet-schema-registry; do
  if cargo tree -q -p "$service" -e normal --prefix none | grep -E "^freshet-localstack " >/dev/null; then
    echo "test: $service links freshet-localstack" >&2
    exit 1
  fi
done
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "test: cargo test"
# The Flink parity test runs on its own, so its figures (windows compared per kind, and
# how many differ for which documented reason) are in the output.
cargo test --workspace -- --skip flink_and_freshet_close_the_same_windows
cargo test -p freshet-flink-sql --test flink_parity -- --nocapture
