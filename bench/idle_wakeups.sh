#!/usr/bin/env bash
# What an idle broker costs while nothing happens: BINARY serves CLIENTS idle mosquitto_sub
# clients (keep alive 60 s); over SECONDS, the thread wake-ups of the broker process (voluntary
# context switches of all its threads) and its CPU ticks (/proc). A small home server spends its
# day like this.
#
# Usage: bench/idle_wakeups.sh BINARY...   (env CLIENTS=3 SECONDS_IDLE=20)
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${CLIENTS:-3}
seconds=${SECONDS_IDLE:-20}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v mosquitto_sub >/dev/null || { echo "needs mosquitto-clients" >&2; exit 1; }
port=18870
wakeups() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s }'; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
for bin in "$@"; do
  port=$((port + 1))
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --data-dir "$work/data-$port" --http 127.0.0.1:0 \
    2>"$work/$port.log" &
  pid=$!
  sleep 1.5
  for i in $(seq "$clients"); do
    mosquitto_sub -p "$port" -t "idle/$i" -k 60 >/dev/null &
  done
  sleep 3
  w0=$(wakeups "$pid") t0=$(ticks "$pid")
  sleep "$seconds"
  w1=$(wakeups "$pid") t1=$(ticks "$pid")
  echo "$bin: $((w1 - w0)) thread wake-ups, $((t1 - t0)) CPU ticks in $seconds s with $clients idle clients"
  pkill -f "mosquitto_sub -p $port" || true
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
