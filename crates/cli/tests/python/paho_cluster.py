"""paho-mqtt (MQTT 5) moving a persistent session between cluster nodes: subscribe on node A
and leave, have messages published on node C, come back on node B and get them all, in order.

Usage: paho_cluster.py PORT_A PORT_B PORT_C; exit status 0 when the session came along.
"""

import queue
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port_a, port_b, port_c = (int(p) for p in sys.argv[1:4])
TOPICS = [f"paho/{i}" for i in range(5)]


def connect(port, client_id, clean_start):
    events = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, flags, rc, p: events.put(("connack", flags.session_present, rc))
    client.on_subscribe = lambda c, u, mid, codes, p: events.put(("suback", codes))
    client.on_message = lambda c, u, m: events.put(("message", m.topic))
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 600
    client.connect("127.0.0.1", port, clean_start=clean_start, properties=properties)
    client.loop_start()
    kind, present, rc = events.get(timeout=10)
    if rc != 0:
        sys.exit(f"CONNACK {rc} from port {port}")
    return client, events, present


mover, events, _ = connect(port_a, "paho-mover", True)
mover.subscribe("paho/#", qos=1)
if events.get(timeout=10)[0] != "suback":
    sys.exit("no SUBACK on node A")
mover.disconnect()
mover.loop_stop()

publisher, _, _ = connect(port_c, "paho-publisher", True)
for topic in TOPICS:
    publisher.publish(topic, b"m", qos=1).wait_for_publish(timeout=10)
publisher.disconnect()

mover, events, present = connect(port_b, "paho-mover", False)
if not present:
    sys.exit("node B did not resume the session (session present 0)")
got = [events.get(timeout=10)[1] for _ in TOPICS]
if got != TOPICS:
    sys.exit(f"got {got}")
mover.disconnect()
