#!/usr/bin/env bash
# Cross-node throughput and latency of cluster mode, next to the same load on one node:
#   bench/cluster.sh CAULDRON_BINARY NATS_SERVER_BINARY [MESSAGES_PER_PUBLISHER]
# Starts 3 nats-server (JetStream, routed, sync_interval: always, as docs/CLUSTER.md requires)
# and 2 cauldron nodes, then runs `cauldron bench pubsub` (8 publishers) at QoS 0 and QoS 1:
#   single  a cauldron without --cluster, publishers and subscriber on it
#   local   cluster node a, publishers and subscriber on a (the cluster's cost on one node)
#   cross   publishers on node a, the subscriber on node b (every message crosses NATS)
# and, with Mosquitto's clients, the time a persistent session takes to resume on node b after
# kill -9 of node c it was connected to (100 QoS 1 messages published on a meanwhile).
set -euo pipefail
bin=$(realpath "$1") nats=$(realpath "$2") n=${3:-5000}
work=$(mktemp -d /tmp/cauldron-cluster-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

routes=() clients=()
for i in 1 2 3; do
  c=$(port) r=$(port) m=$(port)
  clients+=("nats://127.0.0.1:$c") routes+=("nats://127.0.0.1:$r")
  echo "$c $r $m" > "$work/ports$i"
done
for i in 1 2 3; do
  read -r c r m < "$work/ports$i"
  cat > "$work/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$c
http: 127.0.0.1:$m
jetstream { store_dir: "$work/js$i", sync_interval: always }
cluster { name: bench, listen: 127.0.0.1:$r, routes: [$(IFS=,; echo "${routes[*]}")] }
CONF
  "$nats" -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
done
for i in 1 2 3; do
  read -r c r m < "$work/ports$i"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$m/healthz" >/dev/null && break; sleep 0.2; done
done
urls=$(IFS=,; echo "${clients[*]}")

start_node() { # NAME MQTT_PORT HTTP_PORT [args...]
  local name=$1 mqtt=$2 http=$3
  shift 3
  "$bin" serve --listen "127.0.0.1:$mqtt" --http "127.0.0.1:$http" --data-dir "$work/$name" --no-recorder "$@" \
    >"$work/$name.log" 2>&1 &
  for _ in $(seq 100); do grep -q "Opening listener" "$work/$name.log" 2>/dev/null && return; sleep 0.1; done
  echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}
single=$(port) a=$(port) b=$(port)
start_node single "$single" "$(port)"
start_node a "$a" "$(port)" --cluster "$urls" --node-id a
start_node b "$b" "$(port)" --cluster "$urls" --node-id b
sleep 1

run() { # LABEL QOS PUB_PORT SUB_PORT
  local out
  out=$("$bin" bench pubsub -H "127.0.0.1:$3" --subscriber-host "127.0.0.1:$4" -c 8 -n "$n" -q "$2" --json)
  python3 - "$1" "$2" "$out" <<'PY'
import json, sys
label, qos, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lat = out["latency_ms"]
print(f"{label:7} QoS {qos}: {out['received']:>7} received, {out['received_rate']:>9.0f} msg/s, "
      f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
PY
}
for qos in 0 1; do
  run single "$qos" "$single" "$single"
  run local "$qos" "$a" "$a"
  run cross "$qos" "$a" "$b"
done

# Resume after kill -9: a persistent subscriber on node c, c killed, 100 messages published on a,
# then the same client id connects to b; timed from its CONNECT to its 100th message.
c=$(port)
start_node c "$c" "$(port)" --cluster "$urls" --node-id c
mosquitto_sub -h 127.0.0.1 -p "$c" -V mqttv5 -i mover -c -x 600 -q 1 -t 'resume/#' >/dev/null &
held=$!
sleep 1
kill -9 "$(pgrep -f -- "--node-id c")"
seq 100 | mosquitto_pub -h 127.0.0.1 -p "$a" -V mqttv5 -q 1 -t resume/x -l
kill "$held" 2>/dev/null || true
t0=$(date +%s.%N)
got=$(mosquitto_sub -h 127.0.0.1 -p "$b" -V mqttv5 -i mover -c -x 600 -q 1 -t 'resume/#' -C 100 -W 30 | wc -l)
t1=$(date +%s.%N)
python3 -c "print(f'resume  after kill -9 of its node: {$got} of 100 messages on another node in {($t1 - $t0) * 1000:.0f} ms')"
