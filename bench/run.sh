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
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
cargo build --release --locked --bin popularity
# Row (s) holds 10,000 streams: a socket each in the bench and in the replica.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "${CARGO_TARGET_DIR:-target}/release/popularity" bench "$@"
