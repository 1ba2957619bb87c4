#!/usr/bin/env bash
# SUBSCRIBE latency p99 while a 1 -> SUBSCRIBERS QoS 0 fan-out runs, for one cauldron binary:
# SUBSCRIBERS `cauldron bench sub` connections on one topic, one publisher as fast as it goes,
# and bench/subscribe_latency.py timing 300 SUBSCRIBE round trips in the middle of it.
#
# Usage: bench/subscribe_latency.sh [BINARY] [SUBSCRIBERS]   (env LOAD: the cauldron binary whose
# `bench sub`/`bench pub` make the load, default BINARY: so an older build can be the broker)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-./target/release/cauldron}; load=${LOAD:-$bin}
subs=${2:-1000}
port=${PORT:-18850}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --data-dir "$work/data" --http 127.0.0.1:0 \
  --sys-interval 0 2>"$work/broker.log" &
sleep 1
timeout 120 $load bench sub -H 127.0.0.1:$port -c "$subs" -t bench/fanout -d 40 --json >"$work/sub.json" 2>/dev/null &
sleep 3
timeout 60 $load bench pub -H 127.0.0.1:$port -c 1 -n 0 -d 25 -q 0 -s 64 -t bench/fanout --json \
  >"$work/pub.json" 2>/dev/null &
sleep 5
timeout 60 python3 bench/subscribe_latency.py "$port" 300
wait %3 || true
echo "publisher: $(cat "$work/pub.json")"
