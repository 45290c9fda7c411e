#!/usr/bin/env bash
# The costliest reads a client can ask for, on two builds and the same data:
# Redis commands and milliseconds per request, mean and 99th percentile of
# REQUESTS (50) sequential requests (the response cache off, so
# that every request reads Redis), for the plain first page and for the
# parameters that make a read scan.
#
#   bench/worst-reads.sh BEFORE_BINARY AFTER_BINARY [EVENTS]
#
# Starts its own redis-server and dev broker on free ports, fills them with
# `loadgen` (10,000 articles, EVENTS events, 300,000 by default) consumed by
# AFTER, then serves the same Redis with each build in turn. Prints a
# Markdown table. Needs redis-server, redis-cli and curl.
set -euo pipefail

before=$(realpath "$1")
after=$(realpath "$2")
events=${3:-300000}
requests=${REQUESTS:-50}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
commands() { redis-cli -p "$rport" INFO stats | tr -d '\r' | sed -n 's/^total_commands_processed://p'; }

rport=$(free_port)
redis-server --port "$rport" --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" --dir "$work" --logfile "$work/redis.log"
kport=$(free_port)
"$after" dev-broker --port "$kport" --partitions 24 >"$work/broker.log" 2>&1 &
pids+=($!)
wait_port "$kport"
export POPULARITY__KAFKA__BROKERS="127.0.0.1:$kport"
export POPULARITY__STORE__REDIS_URL="redis://127.0.0.1:$rport"
export RUST_LOG=warn

echo "filling: 10,000 articles, $events events" >&2
"$after" loadgen --rate 0 --count "$events" --articles 10000 --publish-every 0 2>"$work/loadgen.log"
admin=$(free_port)
POPULARITY__API__LISTEN="127.0.0.1:$(free_port)" POPULARITY__API__ADMIN_LISTEN="127.0.0.1:$admin" \
  "$after" serve --role consumer >"$work/consumer.log" 2>&1 &
consumer=$!
pids+=("$consumer")
wait_port "$admin"
last=-1
while true; do
  sleep 2
  read_now=$(curl -s "http://127.0.0.1:$admin/metrics" | sed -n 's/^popularity_messages_read_total\({[^}]*}\)\{0,1\} //p' | awk '{s+=$1} END {print s+0}')
  [ "$read_now" = "$last" ] && [ "$read_now" != 0 ] && break
  last=$read_now
done
sleep 2
kill "$consumer"
wait "$consumer" 2>/dev/null || true
echo "consumed $last messages; members of the overall ranking: $(redis-cli -p "$rport" --scan --pattern 'pop:{all}:r:trending*' | head -1 | xargs -r redis-cli -p "$rport" ZCARD)" >&2

# One request of each kind first, to learn a section and a tag that exist.
api=$(free_port)
POPULARITY__API__LISTEN="127.0.0.1:$api" POPULARITY__API__ADMIN_LISTEN="127.0.0.1:0" \
  POPULARITY__API__CACHE_TTL=0s "$after" serve --role api >"$work/probe.log" 2>&1 &
probe=$!
wait_port "$api"
top=$(curl -s "http://127.0.0.1:$api/v1/rankings/trending?limit=1")
section=$(printf '%s' "$top" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["section"])')
tag=$(curl -s "http://127.0.0.1:$api/v1/rankings/trending/tags?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["tag"])')
kill "$probe"; wait "$probe" 2>/dev/null || true

queries=(
  "/v1/rankings/trending?limit=10"
  "/v1/rankings/trending?published_within=15m&limit=10"
  "/v1/rankings/trending?published_within=1s&limit=100&offset=1000"
  "/v1/rankings/trending?published_within=1s&limit=100&offset=10000"
  "/v1/rankings/trending?section=$section&tag=$tag&limit=10"
  "/v1/rising?limit=10"
)

start_api() { # binary label port: with an operators' listener when the build has one
  local bin=$1 label=$2 port=$3
  env POPULARITY__API__ADMIN_LISTEN=127.0.0.1:0 POPULARITY__API__LISTEN="127.0.0.1:$port" \
    POPULARITY__API__CACHE_TTL=0s "$bin" serve --role api >"$work/$label.log" 2>&1 &
  local pid=$!
  sleep 1
  if ! kill -0 "$pid" 2>/dev/null; then
    env POPULARITY__API__LISTEN="127.0.0.1:$port" POPULARITY__API__CACHE_TTL=0s \
      "$bin" serve --role api >"$work/$label.log" 2>&1 &
    pid=$!
  fi
  pids+=("$pid")
  echo "$pid"
}

measure() { # binary label
  local bin=$1 label=$2 port pid
  port=$(free_port)
  pid=$(start_api "$bin" "$label" "$port")
  wait_port "$port"
  for q in "${queries[@]}"; do
    local url="http://127.0.0.1:$port$q"
    # A route the build does not have is not measured.
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] || { printf '%s\t%s\t-\t-\n' "$label" "$q"; continue; }
    local c0 c1 seconds
    c0=$(commands)
    for _ in $(seq 1 "$requests"); do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done | sort -n >"$work/times"
    c1=$(commands)
    # Mean and 99th percentile, in milliseconds.
    local mean p99
    mean=$(awk '{s+=$1} END {printf "%.2f", s * 1000 / NR}' "$work/times")
    p99=$(awk -v n="$requests" 'NR == int(n * 0.99 + 0.999) {printf "%.2f", $1 * 1000}' "$work/times")
    printf '%s\t%s\t%s\t%s / %s\n' "$label" "$q" "$(( (c1 - c0) / requests ))" "$mean" "$p99"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

{
  measure "$before" before
  measure "$after" after
} >"$work/results.tsv"

echo
echo "| request | before: commands | before: ms, mean / p99 | after: commands | after: ms, mean / p99 |"
echo "|---|---|---|---|---|"
for q in "${queries[@]}"; do
  b=$(awk -F'\t' -v q="$q" '$1=="before" && $2==q {print $3" | "$4}' "$work/results.tsv")
  a=$(awk -F'\t' -v q="$q" '$1=="after" && $2==q {print $3" | "$4}' "$work/results.tsv")
  echo "| \`$q\` | $b | $a |"
done
