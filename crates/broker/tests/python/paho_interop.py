"""paho-mqtt against a running broker: one scenario per call, exit status 0 on success.

Usage: paho_interop.py PORT PROTOCOL SCENARIO, PROTOCOL one of 31, 311.
"""

import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
PROTOCOL = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311}[sys.argv[2]]
SCENARIO = sys.argv[3]
WAIT = 5.0


def fail(message):
    print(f"FAIL [{SCENARIO}/{sys.argv[2]}]: {message}", file=sys.stderr)
    sys.exit(1)


class Peer:
    """A paho client with its received messages in a queue and blocking helpers."""

    def __init__(self, client_id, clean=True, will=None):
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PROTOCOL, clean_session=clean
        )
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, props: self.connacks.put((flags, rc))
        if will:
            self.client.will_set(*will)
        self.client.connect("127.0.0.1", PORT, keepalive=30)
        self.client.loop_start()
        flags, rc = self.connacks.get(timeout=WAIT)
        if rc != 0:
            fail(f"{client_id}: CONNACK {rc}")
        self.session_present = flags.session_present

    def subscribe(self, topic, qos):
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            fail(f"subscribe {topic}: {result}")
        time.sleep(0.2)  # SUBACK; paho has no blocking subscribe

    def publish(self, topic, payload, qos, retain=False):
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout=WAIT)
        if not info.is_published():
            fail(f"publish {topic} not acknowledged")

    def expect(self, topic, payload, qos=None, retain=None):
        try:
            m = self.messages.get(timeout=WAIT)
        except queue.Empty:
            fail(f"no message on {topic}")
        if m.topic != topic or m.payload != payload.encode():
            fail(f"expected {topic} {payload!r}, got {m.topic} {m.payload!r}")
        if qos is not None and m.qos != qos:
            fail(f"{topic}: expected QoS {qos}, got {m.qos}")
        if retain is not None and bool(m.retain) != retain:
            fail(f"{topic}: expected retain {retain}, got {m.retain}")

    def expect_nothing(self):
        try:
            m = self.messages.get(timeout=0.5)
            fail(f"unexpected message {m.topic} {m.payload!r}")
        except queue.Empty:
            pass

    def disconnect(self):
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self):
        """Close the socket without DISCONNECT."""
        self.client.loop_stop()
        self.client.socket().close()


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def qos_round_trips():
    sub = Peer(unique("sub"))
    sub.subscribe("paho/qos/#", 2)
    pub = Peer(unique("pub"))
    for qos in (0, 1, 2):
        pub.publish(f"paho/qos/{qos}", f"payload {qos}", qos)
        sub.expect(f"paho/qos/{qos}", f"payload {qos}", qos=qos, retain=False)
    sub.disconnect()
    pub.disconnect()


def retained():
    topic = unique("paho/retained")
    pub = Peer(unique("pub"))
    pub.publish(topic, "kept", 1, retain=True)
    sub = Peer(unique("sub"))
    sub.subscribe(topic, 1)
    sub.expect(topic, "kept", qos=1, retain=True)
    pub.publish(topic, "", 1, retain=True)
    late = Peer(unique("late"))
    late.subscribe(topic, 1)
    late.expect_nothing()
    for p in (pub, sub, late):
        p.disconnect()


def will():
    topic = unique("paho/will")
    watcher = Peer(unique("watcher"))
    watcher.subscribe(topic, 1)
    dying = Peer(unique("dying"), will=(topic, "gone", 1, False))
    dying.drop()
    watcher.expect(topic, "gone", qos=1)
    polite = Peer(unique("polite"), will=(topic, "should not appear", 1, False))
    polite.disconnect()
    watcher.expect_nothing()
    watcher.disconnect()


def persistent_session():
    client_id = unique("persistent")
    topic = unique("paho/persistent")
    sub = Peer(client_id, clean=False)
    sub.subscribe(topic, 1)
    sub.disconnect()
    pub = Peer(unique("pub"))
    pub.publish(topic, "while away", 1)
    back = Peer(client_id, clean=False)
    # MQTT 3.1 has no session present flag: its CONNACK's first byte is reserved.
    if back.session_present != (PROTOCOL != mqtt.MQTTv31):
        fail(f"session present {back.session_present} on resume")
    back.expect(topic, "while away", qos=1)
    back.disconnect()
    pub.disconnect()


def takeover():
    client_id = unique("twin")
    first = Peer(client_id)
    lost = queue.Queue()
    first.client.on_disconnect = lambda c, u, flags, rc, props: lost.put(rc)
    second = Peer(client_id)
    try:
        lost.get(timeout=WAIT)
    except queue.Empty:
        fail("first connection was not closed on takeover")
    first.client.loop_stop()
    second.disconnect()


SCENARIOS = {
    "qos": qos_round_trips,
    "retained": retained,
    "will": will,
    "persistent": persistent_session,
    "takeover": takeover,
}

SCENARIOS[SCENARIO]()
print(f"ok {SCENARIO}/{sys.argv[2]}")
