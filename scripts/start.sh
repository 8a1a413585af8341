#!/usr/bin/env bash
# The front door: installs what is missing, builds Freshet and brings up the local stack
# in the background. Stop it with `scripts/freshet down`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/freshet/target}"
echo "start: building freshet (release; the first build takes several minutes)"
cargo build --release --quiet --workspace --bins
FRESHET="$CARGO_TARGET_DIR/release/freshet"
"$FRESHET" up --detach
echo
"$FRESHET" features list
echo
# Until the serving API lands, show live values straight from Redis.
set -a; . .freshet/stack.env; set +a
redis_port="${FRESHET_REDIS_URL##*:}"
echo "Waiting for the first feature values of user 1 (up to 60 s)..."
for _ in $(seq 1 60); do
  if [ "$(redis-cli -p "$redis_port" exists fv:user_click_stats:1)" = "1" ]; then
    echo "redis-cli -p $redis_port hgetall fv:user_click_stats:1"
    redis-cli -p "$redis_port" hgetall fv:user_click_stats:1 | paste - -
    break
  fi
  sleep 1
done
echo
echo "The stack runs in the background. Addresses: .freshet/stack.env"
echo "  scripts/freshet status    what runs and is healthy"
echo "  scripts/freshet down      stop everything"
