#!/usr/bin/env bash
# Instructions per request of the API, counted by callgrind: the same count
# for the same binary and data whatever else the machine is doing, so two
# builds compare exactly where `wrk` rates move by ±5% between runs. It
# counts the server's own code only (not the kernel's, nor Redis's).
#
#   bench/instructions.sh [BINARY...]   (default: target/release/popularity)
#
# Starts a redis-server on a free port, fills it with 20 s of the demo's
# newsroom, then for each binary serves the API under callgrind (cache on,
# then off) and prints, per request: /healthz, a cache hit of the top 10,
# /widget.js, and a cache miss of the top 10 (every request reads Redis).
# Needs valgrind, redis-server and wrk (apt-get install -y valgrind wrk).
set -euo pipefail

cd "$(dirname "$0")/.."
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
    bins=("${CARGO_TARGET_DIR:-target}/release/popularity")
fi
for tool in valgrind callgrind_control redis-server wrk curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() {
    for _ in $(seq 120); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.5
    done
    echo "nothing answered at $1" >&2
    exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --save '' --appendonly no --daemonize no >"$work/redis.log" &
pids+=($!)
redis="redis://127.0.0.1:$redis_port"
sleep 0.5

port=$(free_port)
"${bins[0]}" demo --redis "$redis" --listen "127.0.0.1:$port" >"$work/demo.log" 2>&1 &
demo=$!
wait_for "http://127.0.0.1:$port/healthz"
sleep 20
kill -INT "$demo"
wait "$demo" || true

# Instructions per request of `url` on the server `pid` (callgrind).
count() {
    local pid=$1 url=$2 name=$3
    wrk -t1 -c4 -d2s "$url" >/dev/null
    callgrind_control -z "$pid" >/dev/null
    local out
    out=$(wrk -t1 -c8 -d8s "$url")
    callgrind_control -d "$name" "$pid" >/dev/null
    sleep 1
    local n file ir
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    file=$(ls -t "$work"/cg.out."$pid".* | head -1)
    ir=$(awk '/^summary:/ {print $2; exit}' "$file")
    echo $((ir / n))
}

# The API of `bin` under callgrind with the cache's TTL `ttl`; prints its pid.
serve() {
    local bin=$1 port=$2 ttl=$3
    POPULARITY__STORE__REDIS_URL="$redis" POPULARITY__STORE__KEY_PREFIX=demo \
        POPULARITY__API__LISTEN="127.0.0.1:$port" POPULARITY__API__ADMIN_LISTEN=127.0.0.1:0 POPULARITY__API__CACHE_TTL="$ttl" \
        valgrind --tool=callgrind --callgrind-out-file="$work/cg.out.%p" \
        "$bin" serve --role api >"$work/serve.log" 2>&1 &
    echo $!
}

top="/v1/rankings/trending?limit=10"
printf '| binary | /healthz | cache hit, top 10 | /widget.js | cache miss, top 10 |\n'
printf '|---|---|---|---|---|\n'
for bin in "${bins[@]}"; do
    port=$(free_port)
    pid=$(serve "$bin" "$port" 1h)
    pids+=("$pid")
    base="http://127.0.0.1:$port"
    wait_for "$base/healthz"
    healthz=$(count "$pid" "$base/healthz" healthz)
    hit=$(count "$pid" "$base$top" hit)
    widget=$(count "$pid" "$base/widget.js" widget)
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true

    port=$(free_port)
    pid=$(serve "$bin" "$port" 0s)
    pids+=("$pid")
    base="http://127.0.0.1:$port"
    wait_for "$base/healthz"
    bytes=$(curl -s "$base$top" | wc -c)
    miss=$(count "$pid" "$base$top" miss)
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    printf '| %s | %s | %s | %s | %s (%s-byte answer) |\n' \
        "$bin" "$healthz" "$hit" "$widget" "$miss" "$bytes"
done
