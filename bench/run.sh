#!/usr/bin/env bash
# One-command benchmark: installs what it needs (redis-server, wrk) when
# missing, builds the release binary, and runs `popularity bench`, which
# starts its own redis-server and dev broker and prints the table recorded in
# docs/benchmarks.md. Arguments pass through (see `popularity bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v wrk >/dev/null || missing+=(wrk)
# Row (k) builds a local cluster with redis-cli --cluster create.
command -v redis-cli >/dev/null || missing+=(redis-tools)
# Row (t) compares the service's CPU per event with kcat consuming only.
command -v kcat >/dev/null || missing+=(kcat)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
# Row (h), the peer a user would write instead, runs in Python with
# confluent-kafka and redis-py from PyPI, in a virtualenv kept in the cache.
PEER_VENV=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/popularity-bench/venv
if [ ! -x "$PEER_VENV/bin/python" ]; then
  python3 -m venv "$PEER_VENV" 2>/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    python3 -m venv "$PEER_VENV"
  }
  "$PEER_VENV/bin/pip" install -q "confluent-kafka==2.12.1" "redis==6.4.0"
fi
export POPULARITY_BENCH_PEER="$PEER_VENV/bin/python $PWD/bench/peer.py"
cargo build --release --locked --bin popularity
# Row (s) holds 10,000 streams: a socket each in the bench and in the replica.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "${CARGO_TARGET_DIR:-target}/release/popularity" bench "$@"
