#!/usr/bin/env bash
# What a durable QoS 1 fan-out costs the disk: SUBSCRIBERS persistent sessions (clean session
# off) subscribed to one topic, MESSAGES QoS 1 publishes queued for all of them while they are
# away, then every subscriber back to take its messages. For each binary given, one run on a
# fresh data directory: the bytes the broker process wrote (/proc/PID/io: `wchar`, what it
# passed to write calls; `write_bytes`, what reached the block layer) per message published,
# while queueing and while delivering, and the store's size with everything queued.
#
# Usage: bench/durable_fanout.sh BIN [BIN...]   (env SUBSCRIBERS=100 MESSAGES=1000 PAYLOAD=64)
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS=${SUBSCRIBERS:-100}
MESSAGES=${MESSAGES:-1000}
PAYLOAD=${PAYLOAD:-64}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v mosquitto_sub >/dev/null || { echo "needs mosquitto-clients" >&2; exit 1; }
payload=$(head -c "$PAYLOAD" /dev/zero | tr '\0' x)
port=18861

io() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/io"; }

printf '%-40s %14s %14s %14s %14s %12s\n' binary "queue wchar/m" "queue disk/m" "drain wchar/m" "drain disk/m" "store MB"
for bin in "$@"; do
  port=$((port + 1))
  data="$work/data-$port"
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --http 127.0.0.1:0 --data-dir "$data" \
    --max-queued-messages 1000000 2>"$work/$port.log" &
  sleep 1
  pid=$(pgrep -f -- "--listen 127.0.0.1:$port" | head -1)
  for i in $(seq "$SUBSCRIBERS"); do
    mosquitto_sub -p "$port" -c -i "sub$i" -q 1 -t bench/t -E
  done
  sync
  w0=$(io "$pid" wchar) d0=$(io "$pid" write_bytes)
  # One publisher, each publish acknowledged (so stored) before the next.
  mosquitto_pub -p "$port" -q 1 -t bench/t -m "$payload" --repeat "$MESSAGES"
  sync
  w1=$(io "$pid" wchar) d1=$(io "$pid" write_bytes)
  size=$(du -sb "$data" | awk '{print $1}')
  pids=()
  for i in $(seq "$SUBSCRIBERS"); do
    mosquitto_sub -p "$port" -c -i "sub$i" -q 1 -t bench/t -C "$MESSAGES" -W 120 >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  sleep 1
  sync
  w2=$(io "$pid" wchar) d2=$(io "$pid" write_bytes)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  printf '%-40s %14.0f %14.0f %14.0f %14.0f %12.1f\n' "$bin" \
    "$(echo "($w1 - $w0) / $MESSAGES" | bc -l)" "$(echo "($d1 - $d0) / $MESSAGES" | bc -l)" \
    "$(echo "($w2 - $w1) / $MESSAGES" | bc -l)" "$(echo "($d2 - $d1) / $MESSAGES" | bc -l)" \
    "$(echo "$size / 1000000" | bc -l)"
done
