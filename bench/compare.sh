#!/usr/bin/env bash
# Throughput of cauldron next to Mosquitto 2.0 on this machine, driven by Mosquitto's own clients:
# PUBLISHERS mosquitto_pub processes publishing N messages in all, one mosquitto_sub receiving them.
# Both brokers run on loopback with the same limits (TCP_NODELAY on, queues large enough that the
# run measures throughput, not drops).
#
# Usage: bench/compare.sh [MESSAGES] [PAYLOAD_BYTES] [PUBLISHERS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-200000}
SIZE=${2:-64}
PUBLISHERS=${3:-4}
MOSQ_PORT=${MOSQ_PORT:-18831}
CAUL_PORT=${CAUL_PORT:-18832}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

command -v mosquitto >/dev/null || { echo "needs mosquitto (apt-get install mosquitto mosquitto-clients)" >&2; exit 1; }
cargo build --release -q -p cauldron

mosquitto_conf "$MOSQ_PORT" "$work"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
RUST_LOG=warn ./target/release/cauldron serve --listen 127.0.0.1:$CAUL_PORT --data-dir "$work/data" --http 127.0.0.1:0 \
  --max-queued-messages 1000000 --max-inflight-messages 20 2>"$work/cauldron.log" &
sleep 1

payload=$(head -c "$SIZE" /dev/zero | tr '\0' 'x')

printf '%-10s %-4s %10s %12s\n' broker qos received 'msgs/s'
for qos in 0 1 2; do
  read -r mg mr <<< "$(load $MOSQ_PORT $qos "$N" "$PUBLISHERS" "$payload")"
  read -r cg cr <<< "$(load $CAUL_PORT $qos "$N" "$PUBLISHERS" "$payload")"
  printf '%-10s %-4s %10s %12s\n' mosquitto "$qos" "$mg" "$mr" cauldron "$qos" "$cg" "$cr"
  printf 'ratio cauldron/mosquitto at QoS %s: %.2f\n' "$qos" "$(echo "$cr / $mr" | bc -l)"
done
