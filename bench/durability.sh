#!/usr/bin/env bash
# QoS 1 throughput when every message must be stored: `cauldron bench pubsub --persistent` (8
# publishers, 16 publishes in flight each, one subscriber with clean session off) against
# Mosquitto 2.0 with `persistence true` (which snapshots every 30 minutes, so its acks promise
# nothing on a crash), cauldron acknowledging only what is committed (the default), and
# cauldron in relaxed mode (commit every 10 ms, acknowledge at once).
#
# mosquitto_pub is not used here: while it waits for acknowledgements it busy-polls, and on two
# cores that starves whichever broker acknowledges more slowly.
#
# Usage: bench/durability.sh [MESSAGES_PER_PUBLISHER] [PUBLISHERS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-5000}
PUBLISHERS=${2:-8}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v mosquitto >/dev/null || { echo "needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
cargo build --release -q -p cauldron
bin=./target/release/cauldron

mkdir -p "$work/mosq"
mosquitto_conf 18841 "$work/mosq" "persistence true" "persistence_location $work/mosq/"
mosquitto -c "$work/mosq/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
RUST_LOG=warn $bin serve --listen 127.0.0.1:18842 --http 127.0.0.1:0 --data-dir "$work/sync" --max-queued-messages 1000000 2>"$work/sync.log" &
RUST_LOG=warn $bin serve --listen 127.0.0.1:18843 --http 127.0.0.1:0 --data-dir "$work/relaxed" --max-queued-messages 1000000 \
  --relaxed-commit-ms 10 2>"$work/relaxed.log" &
sleep 1

rate() { $bin bench pubsub -H "127.0.0.1:$1" -c "$PUBLISHERS" -n "$N" -q 1 --persistent --json | sed 's/.*"received_rate":\([0-9]*\).*/\1/'; }
m=$(rate 18841)
printf '%-30s %10s msg/s\n' "mosquitto (persistence true)" "$m"
for mode in sync:18842 relaxed:18843; do
  r=$(rate "${mode#*:}")
  printf '%-30s %10s msg/s   ratio to mosquitto %.2f\n' "cauldron (${mode%%:*})" "$r" "$(echo "$r / $m" | bc -l)"
done
