#!/usr/bin/env bash
# The recorder under load, end to end: N OwnTracks locations (default 1,000,000) published at
# QoS 1 by `cauldron pub -l` (one per device, in parallel) into `cauldron serve`, through the
# in-process tap into SQLite; then the latency of a one-device, one-month /api/0/locations query.
# (Not mosquitto_pub -l: at QoS 1 it closes at end of input with lines unsent; measured here,
# 66k of 200k lines reached Mosquitto itself.)
#
#   bench/recorder.sh [N] [DEVICES]
#
# Points: DEVICES devices (default 10), one point every 5 minutes each, so a device-month holds
# about 8,640 points. Prints the ingest rate (from the first publish to the newest point being
# queryable) and the query latency (median and worst of 20, JSON format, via curl).
# Requires: curl, python3, bc. Every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
devices=${2:-10}
cargo build --release -q -p cauldron
bin=target/release/cauldron
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 10000)); http=$((port + 1))

# One file of payload lines per device (pub -l publishes each line as a message).
python3 - "$n" "$devices" "$work" <<'PY'
import json, sys
n, devices, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
start = 1704067200  # 2024-01-01
for d in range(devices):
    with open(f"{work}/device{d}.lines", "w") as f:
        for i in range(n // devices):
            f.write(json.dumps({"_type": "location", "lat": 48.0 + i * 1e-5, "lon": 2.0 + d * 0.01,
                                "tst": start + i * 300, "acc": 10, "batt": 80, "tid": f"d{d}", "vel": 5}) + "\n")
PY
last_tst=$((1704067200 + (n / devices - 1) * 300))

"$bin" serve --listen 127.0.0.1:$port --http 127.0.0.1:$http --data-dir "$work/data" 2>"$work/log" &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http/healthz" >/dev/null && break; sleep 0.1; done

start=$(date +%s.%N)
for d in $(seq 0 $((devices - 1))); do
  "$bin" pub -p $port -q 1 -t "owntracks/bench/device$d" -l < "$work/device$d.lines" &
done
wait $(jobs -p | tail -n "$devices")
published=$(date +%s.%N)
# Done when every device's newest point can be read back (bounded: 10 minutes).
for d in $(seq 0 $((devices - 1))); do
  for _ in $(seq 6000); do
    got=$(curl -s "http://127.0.0.1:$http/api/0/last?user=bench&device=device$d" | python3 -c 'import json,sys; a=json.load(sys.stdin); print(a[0]["tst"] if a else 0)' 2>/dev/null || echo 0)
    [ "$got" = "$last_tst" ] && break
    sleep 0.1
  done
done
stored=$(date +%s.%N)
count=$(curl -s "http://127.0.0.1:$http/api/0/locations?user=bench&device=device0&from=2024-01-01&to=2030-01-01&limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
printf 'ingest: %d locations in %.1f s (publishing took %.1f s): %.0f locations/s\n' \
  "$n" "$(echo "$stored - $start" | bc -l)" "$(echo "$published - $start" | bc -l)" "$(echo "$n / ($stored - $start)" | bc -l)"
printf 'store: %s MB for %d locations\n' "$(du -sm "$work/data" | cut -f1)" "$n"

# One device, one month (March 2024).
url="http://127.0.0.1:$http/api/0/locations?user=bench&device=device3&from=2024-03-01&to=2024-04-01"
points=$(curl -s "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
times=$(for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done | sort -n)
printf 'query one device, one month: %d points, median %.1f ms, worst %.1f ms (of 20)\n' "$points" \
  "$(echo "$times" | sed -n 10p | awk '{print $1*1000}')" "$(echo "$times" | tail -1 | awk '{print $1*1000}')"
grep -c "dropped" "$work/log" | xargs printf 'log lines about drops: %s\n'
[ "$count" -ge 1 ]
