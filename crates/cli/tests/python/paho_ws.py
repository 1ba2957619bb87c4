"""paho-mqtt over WebSocket (and WebSocket over TLS with a CA file): subscribe, publish, receive.

Usage: paho_ws.py PORT PATH [CAFILE|-] [USER PASSWORD] [TOPIC]; exit status 0 when the message
comes back.
"""

import queue
import sys

import paho.mqtt.client as mqtt

port, path = int(sys.argv[1]), sys.argv[2]
cafile = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
credentials = sys.argv[4:6] if len(sys.argv) > 5 else None
topic = sys.argv[6] if len(sys.argv) > 6 else "ws/test"
got = queue.Queue()
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws", transport="websockets")
client.ws_set_options(path=path)
if cafile:
    client.tls_set(ca_certs=cafile)
if credentials:
    client.username_pw_set(*credentials)
client.on_message = lambda c, u, m: got.put(m.payload)
client.on_connect = lambda c, u, f, rc, p: got.put(("connack", rc))
client.connect("127.0.0.1", port)
client.loop_start()
kind, rc = got.get(timeout=5)
if rc != 0:
    sys.exit(f"CONNACK {rc}")
client.subscribe(topic, 1)
import time
time.sleep(0.3)
client.publish(topic, b"over websocket", 1).wait_for_publish(5)
payload = got.get(timeout=5)
client.loop_stop()
if payload != b"over websocket":
    sys.exit(f"got {payload!r}")
print("ok")
