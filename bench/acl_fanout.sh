#!/usr/bin/env bash
# Fan-out through an ACL file: 1 mqttwrk publisher -> 100 subscribers, QoS 0, 20000 messages,
# with a Mosquitto ACL of user sections and patterns, so every delivery is read-checked.
# Prints deliveries, mqttwrk's aggregate throughput and the broker's CPU ticks for each binary.
#
# Usage: bench/acl_fanout.sh BINARY [BINARY...]
set -euo pipefail
cd "$(dirname "$0")/.."
wrk=${MQTTWRK:-$(command -v mqttwrk || echo /work/tools/bin/mqttwrk)}
port=${PORT:-18895}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/acl" <<'EOT'
topic read public/#
topic deny secret/#
topic readwrite #

user jane
topic readwrite owntracks/jane/#

pattern readwrite devices/%u/#
pattern write $SYS/broker/connection/%c/state
pattern read owntracks/%u/+/cmd
EOT
for bin in "$@"; do
  rm -rf "$work/data"
  RUST_LOG=warn $bin serve --listen 127.0.0.1:$port --data-dir "$work/data" --http 127.0.0.1:0 --sys-interval 0 \
    --acl-file "$work/acl" --max-inflight-messages 100 --max-queued-messages 1000000 2>/dev/null &
  sleep 1.2
  pid=$(ss -ltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  out=$(timeout 60 "$wrk" bench -P $port -m 64 -p 1 -s 100 -n 20000 2>&1 | sed -n '/Aggregate SubStats/,$p')
  after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  count=$(sed -n 's/.*publish_count: \([0-9]*\).*/\1/p' <<<"$out" | head -1)
  rate=$(sed -n 's/.*throughput: \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  echo "$bin: delivered $count, $rate msgs/s, broker CPU ticks $((after - before))"
  kill "$pid"
  sleep 0.5
done
