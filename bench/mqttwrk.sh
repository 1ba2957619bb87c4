#!/usr/bin/env bash
# cauldron, Mosquitto 2.0 and rumqttd side by side under one external load tool, mqttwrk
# (`cargo install --root DIR mqttwrk rumqttd`; put DIR/bin on PATH or set MQTTWRK, RUMQTTD).
# Every broker gets the same inflight window (100) and a fresh start per scenario:
#   fanin0   8 publishers -> 1 subscriber, QoS 0, 100000 messages each
#   fanin1   the same at QoS 1, 50000 each
#   fanout0  1 publisher -> 100 subscribers, QoS 0, 20000 messages
#   fanout1  1 publisher -> 10 subscribers, QoS 1, 50000 messages
#   idle     10000 idle MQTT 3.1.1 connections: broker RSS growth per connection
# For each: deliveries per second (mqttwrk's aggregate subscriber throughput), deliveries per
# broker CPU-second (/proc/PID/stat around the run), and deliveries counted.
#
# Usage: bench/mqttwrk.sh [CAULDRON_BINARY] [BROKERS...]   (brokers: cauldron mosquitto rumqttd)
# SCENARIOS="fanout0 idle" runs only those, in that order (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-./target/release/cauldron}
shift || true
brokers=${*:-cauldron mosquitto rumqttd}
wrk=${MQTTWRK:-$(command -v mqttwrk || echo /work/tools/bin/mqttwrk)}
rumqttd=${RUMQTTD:-$(command -v rumqttd || echo /work/tools/bin/rumqttd)}
port=${PORT:-18880}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
tck=$(getconf CLK_TCK)

start() {
  rm -rf "$work/data"
  case $1 in
    cauldron)
      RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --data-dir "$work/data" --http 127.0.0.1:0 \
        --sys-interval 0 --max-inflight-messages 100 --max-queued-messages 1000000 2>/dev/null & ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\nmax_inflight_messages 100\nmax_queued_messages 1000000\n' \
        "$port" >"$work/m.conf"
      mosquitto -c "$work/m.conf" >/dev/null 2>&1 & ;;
    rumqttd)
      cat >"$work/r.toml" <<EOT
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 100
dynamic_filters = true
EOT
      "$rumqttd" -c "$work/r.toml" -q >/dev/null 2>&1 & ;;
  esac
  sleep 1.5
  pid=$(ss -ltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
}
stop() { kill "$pid" 2>/dev/null || true; sleep 0.5; }
cpu() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }

# run ARGS...: one mqttwrk run; prints "rate per_cpu count".
run() {
  local before after out
  before=$(cpu "$pid")
  out=$(timeout 120 "$wrk" bench -P "$port" -m 64 "$@" 2>&1 || true)
  after=$(cpu "$pid")
  local count rate
  count=$(sed -n '/Aggregate SubStats/,$ s/.*publish_count: \([0-9]*\).*/\1/p' <<<"$out" | head -1)
  rate=$(sed -n '/Aggregate SubStats/,$ s/.*throughput: \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  awk -v c="${count:-0}" -v r="${rate:-0}" -v b="$before" -v a="$after" \
    'BEGIN { s = a - b; printf "%.0f %.0f %d\n", r, (s > 0 ? c / s : 0), c }'
}
idle() {
  local before after est
  before=$(rss_kb "$pid")
  timeout 60 "$wrk" bench -P "$port" -p 10000 -n 0 -k 60 -t 30 >/dev/null 2>&1 &
  sleep 22
  est=$(ss -tn state established "sport = :$port" | tail -n +2 | wc -l)
  after=$(rss_kb "$pid")
  kill %?bench 2>/dev/null || pkill -f "bench -P $port" || true
  awk -v b="$before" -v a="$after" -v n="$est" 'BEGIN { printf "%d B/conn (%d connections)\n", (a - b) * 1024 / (n > 0 ? n : 1), n }'
}

printf '%-10s %-8s %12s %14s %10s\n' broker scenario msgs/s msgs/cpu-s delivered
for broker in $brokers; do
  for scenario in ${SCENARIOS:-fanin0 fanin1 fanout0 fanout1 idle}; do
    start "$broker"
    if [ "$scenario" = idle ]; then
      printf '%-10s %-8s %s\n' "$broker" idle "$(idle)"
      stop
      continue
    fi
    case $scenario in
      fanin0) r=$(run -p 8 -s 1 -n 100000 --publish-qos 0 --subscribe-qos 0) ;;
      fanin1) r=$(run -p 8 -s 1 -n 50000 --publish-qos 1 --subscribe-qos 1) ;;
      fanout0) r=$(run -p 1 -s 100 -n 20000 --publish-qos 0 --subscribe-qos 0) ;;
      fanout1) r=$(run -p 1 -s 10 -n 50000 --publish-qos 1 --subscribe-qos 1) ;;
    esac
    stop
    read -r rate per_cpu count <<<"$r"
    printf '%-10s %-8s %12s %14s %10s\n' "$broker" "$scenario" "$rate" "$per_cpu" "$count"
  done
done
