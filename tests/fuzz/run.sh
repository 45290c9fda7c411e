#!/usr/bin/env bash
# Property-based fuzzing of the HTTP API from its own contract: starts a dev
# broker and `popularity serve --role all` (memory store) on free ports, then
# runs schemathesis over /openapi.json with every check on. A failure means
# the document and the code disagree (a bound the code enforces that the
# document does not declare, or the other way round), or a 5xx.
#
#   tests/fuzz/run.sh [PATH_TO_POPULARITY_BINARY]
#
# Installs schemathesis from PyPI into a virtualenv cached in
# ${XDG_CACHE_HOME:-~/.cache}/popularity-fuzz. FUZZ_MAX_EXAMPLES (default 25)
# and FUZZ_SEED (default fixed, so that a run can be replayed) tune it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/popularity}
[ -x "$BIN" ] || { echo "no popularity binary at $BIN (cargo build first)" >&2; exit 2; }
CACHE=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/popularity-fuzz
SCHEMATHESIS="schemathesis==4.32.5"
if [ ! -x "$CACHE/venv/bin/schemathesis" ]; then
  command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
  python3 -m venv "$CACHE/venv" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$CACHE/venv"
  }
  "$CACHE/venv/bin/pip" install -q "$SCHEMATHESIS"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
API_PORT=$(free_port)
WORK=$(mktemp -d)
cleanup() {
  # The service first, while its broker still answers.
  kill "$SERVE_PID" 2>/dev/null || true
  wait "$SERVE_PID" 2>/dev/null || true
  kill "$BROKER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" dev-broker --port "$KAFKA_PORT" > "$WORK/broker.log" 2>&1 &
BROKER_PID=$!
# The fuzzer sends hundreds of requests a second from one address, with no
# Origin: the per-address limit and the site's quota are raised, and the
# site takes events from any page, so that it tests the routes, not the
# limiter and the origin check (which their own tests cover).
POPULARITY__KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT \
POPULARITY__STORE__BACKEND=memory \
POPULARITY__API__LISTEN=127.0.0.1:$API_PORT \
POPULARITY__API__ADMIN_LISTEN=127.0.0.1:0 \
POPULARITY__API__CORS_ALLOWED_ORIGINS='*' \
POPULARITY__COLLECTOR__REQUESTS_PER_SECOND_PER_IP=1000000 \
POPULARITY__COLLECTOR__BURST=1000000 \
POPULARITY__COLLECTOR__EVENTS_PER_SECOND_PER_SITE=1000000 \
RUST_LOG=warn \
  "$BIN" serve --role all > "$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$API_PORT") 2>/dev/null; then break; fi
  sleep 0.2
done

set +e
# From the scratch directory: schemathesis keeps a cache of what it found
# in the working directory, which is not to be the source tree.
cd "$WORK"
"$CACHE/venv/bin/schemathesis" run "http://127.0.0.1:$API_PORT/openapi.json" \
  --checks all \
  --max-examples "${FUZZ_MAX_EXAMPLES:-25}" \
  --seed "${FUZZ_SEED:-20261202}" \
  --request-timeout 5 \
  --no-color
status=$?
set -e
if [ $status -ne 0 ]; then
  echo "--- service log"; tail -50 "$WORK/serve.log"
fi
exit $status
