"""MQTT 5 conformance run with paho-mqtt (Python) as the third-party client.

Usage: paho_v5.py PORT SCENARIO; exit status 0 on success.
"""

import queue
import sys
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
SCENARIO = sys.argv[2]
WAIT = 5.0


def fail(message):
    print(f"FAIL [{SCENARIO}]: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def unique(name):
    return f"{name}-{uuid.uuid4().hex[:8]}"


def props(packet_type, **values):
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


class Peer:
    def __init__(self, client_id=None, clean_start=True, expiry=None, will=None, connect_props=None):
        self.client_id = client_id or unique("peer")
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.unsubacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc, p))
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        self.client.on_unsubscribe = lambda c, u, mid, codes, p: self.unsubacks.put(codes)
        self.client.on_disconnect = lambda c, u, flags, rc, p: self.disconnects.put(rc)
        if will:
            topic, payload, will_props = will
            self.client.will_set(topic, payload, 1, False, will_props)
        p = connect_props or Properties(PacketTypes.CONNECT)
        if expiry is not None:
            p.SessionExpiryInterval = expiry
        self.client.connect("127.0.0.1", PORT, keepalive=30, clean_start=clean_start, properties=p)
        self.client.loop_start()
        flags, rc, self.connack_props = self.connacks.get(timeout=WAIT)
        check(rc == 0, f"{self.client_id}: CONNACK {rc}")
        self.session_present = flags.session_present

    def subscribe(self, topic, qos=1, **options):
        sub_props = options.pop("props", None)
        result, _ = self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **options), properties=sub_props)
        check(result == mqtt.MQTT_ERR_SUCCESS, f"subscribe {topic}: {result}")
        return self.subacks.get(timeout=WAIT)

    def unsubscribe(self, topic):
        self.client.unsubscribe(topic)
        return self.unsubacks.get(timeout=WAIT)

    def publish(self, topic, payload, qos=1, retain=False, properties=None):
        info = self.client.publish(topic, payload, qos, retain, properties)
        info.wait_for_publish(timeout=WAIT)
        check(info.is_published(), f"publish {topic} not acknowledged")
        return info

    def get(self, timeout=WAIT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            fail(f"{self.client_id}: no message")

    def expect_nothing(self, timeout=0.5):
        try:
            m = self.messages.get(timeout=timeout)
            fail(f"{self.client_id}: unexpected {m.topic} {m.payload!r}")
        except queue.Empty:
            pass

    def disconnect(self, properties=None):
        self.client.disconnect(properties=properties)
        self.client.loop_stop()

    def drop(self):
        self.client.loop_stop()
        self.client.socket().close()


def connack_capabilities():
    p = props(PacketTypes.CONNECT, ReceiveMaximum=10, MaximumPacketSize=65536, TopicAliasMaximum=5,
              RequestResponseInformation=1, RequestProblemInformation=1, UserProperty=[("app", "test")])
    peer = Peer(unique("caps"), connect_props=p)
    c = peer.connack_props
    check(getattr(c, "TopicAliasMaximum", None) == 10, f"topic alias maximum advertised: {c}")
    check(not hasattr(c, "SharedSubscriptionAvailable"), "shared subscriptions available (default)")
    anon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    got = queue.Queue()
    anon.on_connect = lambda c, u, f, rc, p: got.put(p)
    anon.connect("127.0.0.1", PORT)
    anon.loop_start()
    assigned = got.get(timeout=WAIT)
    check(getattr(assigned, "AssignedClientIdentifier", "").startswith("auto-"), "assigned client identifier")
    anon.disconnect()
    anon.loop_stop()
    peer.disconnect()


def session_expiry():
    cid = unique("expiry")
    peer = Peer(cid, clean_start=False, expiry=1)
    check(not peer.session_present, "fresh session")
    peer.subscribe("pv5/expiry")
    peer.disconnect()
    back = Peer(cid, clean_start=False, expiry=1)
    check(back.session_present, "resumed within the expiry interval")
    back.disconnect()
    time.sleep(2.2)
    late = Peer(cid, clean_start=False, expiry=1)
    check(not late.session_present, "expired after 1 s")
    late.disconnect()


def message_expiry():
    cid = unique("msg-expiry")
    sub = Peer(cid, clean_start=False, expiry=300)
    sub.subscribe("pv5/mexp/#")
    sub.disconnect()
    pub = Peer()
    pub.publish("pv5/mexp/short", "gone", properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish("pv5/mexp/long", "kept", properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=60))
    time.sleep(2.1)
    back = Peer(cid, clean_start=False, expiry=300)
    m = back.get()
    check(m.topic == "pv5/mexp/long", f"only the unexpired message, got {m.topic}")
    check(m.properties.MessageExpiryInterval <= 59, "remaining time forwarded")
    back.expect_nothing()
    back.disconnect()
    pub.disconnect()


def topic_alias():
    sub = Peer()
    sub.subscribe("pv5/alias/topic")
    pub = Peer()
    pub.publish("pv5/alias/topic", "first", properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", "second", properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    for payload in (b"first", b"second"):
        m = sub.get()
        check((m.topic, m.payload) == ("pv5/alias/topic", payload), f"alias resolved: {m.topic} {m.payload}")
    sub.disconnect()
    pub.disconnect()


def subscription_options():
    peer = Peer()
    peer.subscribe("pv5/nl", noLocal=True)
    peer.publish("pv5/nl", "own")
    peer.expect_nothing()
    pub = Peer()
    pub.publish("pv5/rap", "kept", retain=True)
    peer.subscribe("pv5/rap", retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    check(peer.get().retain, "retained on subscribe")
    pub.publish("pv5/rap", "live", retain=True)
    check(peer.get().retain, "retain as published keeps the flag")
    peer.subscribe("pv5/rap", retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    peer.expect_nothing()
    peer.subscribe("pv5/rap/#", retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
    peer.expect_nothing()
    codes = peer.subscribe("pv5/qos1", qos=1)
    check(codes[0].value == 1, f"granted QoS 1, got {codes}")
    pub.publish("pv5/rap", "", retain=True)
    peer.disconnect()
    pub.disconnect()


def subscription_identifiers():
    peer = Peer()
    peer.subscribe("pv5/sid/+", props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    peer.subscribe("pv5/sid/#", props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
    pub = Peer()
    pub.publish("pv5/sid/x", "both")
    m = peer.get()
    check(sorted(m.properties.SubscriptionIdentifier) == [7, 42], f"ids {m.properties.SubscriptionIdentifier}")
    peer.expect_nothing()
    peer.disconnect()
    pub.disconnect()


def shared_subscriptions():
    a, b = Peer(unique("a")), Peer(unique("b"))
    a.subscribe("$share/grp/pv5/jobs")
    b.subscribe("$share/grp/pv5/jobs")
    pub = Peer()
    for i in range(10):
        pub.publish("pv5/jobs", str(i))
    time.sleep(0.5)
    got_a, got_b = a.messages.qsize(), b.messages.qsize()
    check(got_a + got_b == 10 and got_a > 0 and got_b > 0, f"spread: {got_a} + {got_b}")
    for p in (a, b, pub):
        p.disconnect()


def properties_forwarded():
    sub = Peer()
    sub.subscribe("pv5/props")
    pub = Peer()
    sent = props(PacketTypes.PUBLISH, PayloadFormatIndicator=1, ContentType="application/json",
                 ResponseTopic="pv5/reply", CorrelationData=b"\x00\x01",
                 UserProperty=[("b", "1"), ("a", "2"), ("b", "3")])
    pub.publish("pv5/props", "{}", properties=sent)
    m = sub.get()
    p = m.properties
    check(p.PayloadFormatIndicator == 1 and p.ContentType == "application/json", "format and type")
    check(p.ResponseTopic == "pv5/reply" and p.CorrelationData == b"\x00\x01", "request/response")
    check(p.UserProperty == [("b", "1"), ("a", "2"), ("b", "3")], f"user properties in order: {p.UserProperty}")
    sub.disconnect()
    pub.disconnect()


def reason_codes():
    peer = Peer()
    acks = queue.Queue()
    peer.client.on_publish = lambda c, u, mid, rc, p: acks.put(rc)
    peer.publish("pv5/nobody/listens", "x")
    rc = acks.get(timeout=WAIT)
    check(rc.value == 0x10, f"PUBACK no matching subscribers, got {rc}")
    codes = peer.unsubscribe("pv5/never")
    check(codes[0].value == 0x11, f"UNSUBACK no subscription existed, got {codes}")
    cid = peer.client_id
    twin = Peer(cid)
    rc = peer.disconnects.get(timeout=WAIT)
    check(rc.value == 0x8E, f"DISCONNECT session taken over, got {rc}")
    twin.disconnect()


def will_delay():
    watcher = Peer()
    watcher.subscribe("pv5/will")
    will_props = props(PacketTypes.WILLMESSAGE, WillDelayInterval=1)
    dying = Peer(unique("dying"), clean_start=False, expiry=30, will=("pv5/will", "late", will_props))
    dying.drop()
    watcher.expect_nothing(timeout=0.6)
    check(watcher.get().payload == b"late", "will after its delay")
    cid = unique("returning")
    back = Peer(cid, clean_start=False, expiry=30, will=("pv5/will", "never", props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)))
    back.drop()
    again = Peer(cid, clean_start=False, expiry=30)
    time.sleep(2.5)
    watcher.expect_nothing()
    again.disconnect()
    watcher.disconnect()


def mixed_versions():
    v5 = Peer()
    v5.subscribe("pv5/mixed")
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("v311"), protocol=mqtt.MQTTv311)
    got = queue.Queue()
    old.on_message = lambda c, u, m: got.put(m)
    old.on_subscribe = lambda c, u, mid, codes, p: got.put("suback")
    old.connect("127.0.0.1", PORT)
    old.loop_start()
    old.subscribe("pv5/mixed", 1)
    check(got.get(timeout=WAIT) == "suback", "3.1.1 SUBACK")
    info = old.publish("pv5/mixed", "from 3.1.1", 1)
    info.wait_for_publish(WAIT)
    check(v5.get().payload == b"from 3.1.1", "v5 subscriber gets 3.1.1 message")
    check(got.get(timeout=WAIT).payload == b"from 3.1.1", "own subscription")
    v5.publish("pv5/mixed", "from 5", properties=props(PacketTypes.PUBLISH, UserProperty=[("k", "v")], ContentType="t"))
    check(got.get(timeout=WAIT).payload == b"from 5", "3.1.1 subscriber gets a v5 message without properties")
    old.disconnect()
    old.loop_stop()
    v5.disconnect()


SCENARIOS = {f.__name__: f for f in [
    connack_capabilities, session_expiry, message_expiry, topic_alias, subscription_options,
    subscription_identifiers, shared_subscriptions, properties_forwarded, reason_codes, will_delay,
    mixed_versions,
]}

SCENARIOS[SCENARIO]()
print(f"ok {SCENARIO}")
