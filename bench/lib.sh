# Shared by the bench scripts: load driven by Mosquitto's own clients.
# Requires: mosquitto, mosquitto_pub, mosquitto_sub, bc.

# load PORT QOS N PUBLISHERS PAYLOAD [mosquitto_sub options...]
# PUBLISHERS mosquitto_pub processes publish N messages in all with --repeat (each waits for its
# acknowledgement at QoS 1/2); one mosquitto_sub receives them. Prints "received msgs/s", the
# rate running from the publishers' start to the subscriber's last message (or its 60 s idle
# timeout, so every run is bounded).
load() {
  local port=$1 qos=$2 n=$3 publishers=$4 payload=$5
  shift 5
  local each=$((n / publishers)) start end got pids=()
  local out
  out=$(mktemp)
  mosquitto_sub -p "$port" -t bench/t -q "$qos" -C $((each * publishers)) -W 60 "$@" > "$out" &
  local sub=$!
  sleep 0.5
  start=$(date +%s.%N)
  for _ in $(seq "$publishers"); do
    mosquitto_pub -p "$port" -t bench/t -q "$qos" -m "$payload" --repeat "$each" --nodelay &
    pids+=($!)
  done
  wait "${pids[@]}"
  wait "$sub" || true
  end=$(date +%s.%N)
  got=$(wc -l < "$out")
  rm -f "$out"
  printf '%s %.0f' "$got" "$(echo "$got / ($end - $start)" | bc -l)"
}

# mosquitto_conf PORT DIR [extra lines...]: a Mosquitto 2 config comparable to cauldron's.
mosquitto_conf() {
  local port=$1 dir=$2
  shift 2
  printf '%s\n' "listener $port 127.0.0.1" "allow_anonymous true" "set_tcp_nodelay true" \
    "max_queued_messages 1000000" "max_inflight_messages 20" "user root" "$@" > "$dir/mosquitto.conf"
}
