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
# The front door's promise: live values for user 1 from the serving API.
set -a; . .freshet/stack.env; set +a
echo "Waiting for the first served values of user 1 (up to 60 s)..."
served=0
for _ in $(seq 1 60); do
  if curl -sf "$FRESHET_SERVING_URL/features/1" | grep -q '"status":"found"'; then
    served=1
    break
  fi
  sleep 1
done
echo "curl $FRESHET_SERVING_URL/features/1"
curl -s "$FRESHET_SERVING_URL/features/1" | python3 -m json.tool
if [ "$served" = 0 ]; then
  echo "start: no values stored for user 1 yet; see .freshet/logs/processor.log" >&2
fi
echo
echo "The stack runs in the background. Addresses: .freshet/stack.env"
echo "  curl $FRESHET_SERVING_URL/features/1    live features (run it again: they change)"
echo "  $FRESHET_SERVING_URL/docs                the API, interactive"
echo "  scripts/freshet status    what runs and is healthy"
echo "  scripts/freshet down      stop everything"
