#!/usr/bin/env bash
# cauldron next to Mosquitto 2.0 on this machine, both on loopback, driven by `cauldron bench`:
#   fan-in   8 publishers -> 1 subscriber, 64-byte payloads, QoS 0 and QoS 1 (every message counted)
#   fan-out  1 publisher -> 200 subscribers, QoS 0 (deliveries per second)
#   latency  1 publisher at a fixed rate -> 1 subscriber, QoS 1 (p50 / p99 from payload send times)
#   idle     10k connections opened at 2000/s and held (connections that succeeded, broker RSS)
# For each broker it also reads its CPU time around every scenario (/proc/PID/stat), so messages
# per broker CPU-second can be compared. One table: each figure and the ratio cauldron/Mosquitto
# (for latency, RSS and CPU time, lower is better). Every step is bounded by `timeout`.
#
# Usage: bench/compare.sh [FANIN_MESSAGES_PER_PUBLISHER] [IDLE_CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${1:-20000}
IDLE=${2:-10000}
MOSQ_PORT=${MOSQ_PORT:-18831}
CAUL_PORT=${CAUL_PORT:-18832}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v mosquitto >/dev/null || { echo "needs mosquitto (apt-get install mosquitto)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q -p cauldron
bin=./target/release/cauldron
tck=$(getconf CLK_TCK)

mosquitto_conf "$MOSQ_PORT" "$work" "max_connections -1"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
mosq_pid=$!
RUST_LOG=warn $bin serve --listen 127.0.0.1:$CAUL_PORT --data-dir "$work/data" --http 127.0.0.1:0 \
  --max-queued-messages 1000000 --max-inflight-messages 20 2>"$work/cauldron.log" &
caul_pid=$!
sleep 1

# json FIELD: the number after "FIELD": in the JSON on stdin (0 when absent).
json() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -1 | grep . || echo 0; }
cpu() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
b() { timeout 180 $bin bench "$@" --json 2>/dev/null || true; }

# scenario NAME PORT: runs NAME against PORT; prints "figure..." values, one line.
fanin() { b pubsub -H "127.0.0.1:$2" -c 8 -n "$N" -q "$1" -s 64 -t bench/fanin; }
fanout() {
  local port=$1 out="$work/fanout.$1"
  timeout 180 $bin bench sub -H "127.0.0.1:$port" -c 200 -t bench/fanout -n 2000 -d 120 --json >"$out" 2>/dev/null &
  local sub=$!
  sleep 2
  b pub -H "127.0.0.1:$port" -c 1 -n 2000 -q 0 -s 64 -t bench/fanout >/dev/null
  wait "$sub" || true
  cat "$out"
}
latency() {
  local port=$1 out="$work/latency.$1"
  timeout 60 $bin bench sub -H "127.0.0.1:$port" -c 1 -t bench/latency -q 1 -n 5000 -d 30 --json >"$out" 2>/dev/null &
  local sub=$!
  sleep 1
  b pub -H "127.0.0.1:$port" -c 1 -n 5000 -r 1000 -q 1 -s 64 -t bench/latency >/dev/null
  wait "$sub" || true
  cat "$out"
}
idle() {
  local port=$1 pid=$2 out="$work/idle.$1"
  timeout 120 $bin bench conn -H "127.0.0.1:$port" -c "$IDLE" -r 2000 --hold 4 --json >"$out" 2>/dev/null &
  local conn=$!
  sleep $((IDLE / 2000 + 3))
  local rss
  rss=$(rss_mb "$pid")
  wait "$conn" || true
  echo "$(json connected <"$out") $rss"
}

declare -A M C
for broker in mosquitto cauldron; do
  if [ $broker = mosquitto ]; then
    port=$MOSQ_PORT pid=$mosq_pid
    declare -n R=M
  else
    port=$CAUL_PORT pid=$caul_pid
    declare -n R=C
  fi
  R[rss_start]=$(rss_mb "$pid")
  for qos in 0 1; do
    before=$(cpu "$pid")
    out=$(fanin "$qos" "$port")
    R[fanin$qos]=$(json received_rate <<<"$out")
    R[fanin${qos}_cpu]=$(echo "$(json received <<<"$out") / ($(cpu "$pid") - $before + 0.001)" | bc -l)
  done
  before=$(cpu "$pid")
  out=$(fanout "$port")
  R[fanout]=$(json received_rate <<<"$out")
  R[fanout_cpu]=$(echo "$(json received <<<"$out") / ($(cpu "$pid") - $before + 0.001)" | bc -l)
  out=$(latency "$port")
  R[lat50]=$(json p50 <<<"$out")
  R[lat99]=$(json p99 <<<"$out")
  read -r R[idle] R[idle_rss] <<<"$(idle "$port" "$pid")"
  R[cpu_total]=$(cpu "$pid")
  unset -n R
done

row() { # row LABEL KEY FORMAT
  local m=${M[$2]} c=${C[$2]} ratio=n/a
  if [ "$(echo "$m > 0" | bc -l)" = 1 ]; then ratio=$(printf '%.2f' "$(echo "$c / $m" | bc -l)"); fi
  printf "%-44s %12$3 %12$3 %8s\n" "$1" "$m" "$c" "$ratio"
}
printf '%-44s %12s %12s %8s\n' scenario mosquitto cauldron ratio
row "fan-in QoS 0, 8->1, msg/s" fanin0 .0f
row "fan-in QoS 0, msg per broker CPU-second" fanin0_cpu .0f
row "fan-in QoS 1, 8->1, msg/s" fanin1 .0f
row "fan-in QoS 1, msg per broker CPU-second" fanin1_cpu .0f
row "fan-out QoS 0, 1->200, deliveries/s" fanout .0f
row "fan-out, deliveries per broker CPU-second" fanout_cpu .0f
row "latency QoS 1 at 1000 msg/s, p50 ms" lat50 .3f
row "latency QoS 1 at 1000 msg/s, p99 ms" lat99 .3f
row "idle connections held (of $IDLE)" idle .0f
row "RSS at start, MB" rss_start .1f
row "RSS with the idle connections, MB" idle_rss .1f
row "broker CPU seconds, whole run" cpu_total .2f
