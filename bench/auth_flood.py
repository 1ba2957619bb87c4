#!/usr/bin/env python3
"""Password hashing under attack, measured from outside with raw MQTT 3.1.1 packets.

usage: auth_flood.py PORT USER PASSWORD [THREADS] [SECONDS]

1. While THREADS threads send CONNECTs with USER and a wrong password, one logged-in client
   sends PINGREQs: its round-trip p50/p99 says whether logins stall other connections.
2. Without the flood: CONNACK times for USER with a wrong password and for an absent user; the
   difference says whether timing tells an attacker who exists.
"""
import socket, struct, sys, threading, time


def connect_packet(client_id, user, password):
    def s(b):
        return struct.pack("!H", len(b)) + b
    var = s(b"MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60)
    payload = s(client_id.encode()) + s(user.encode()) + s(password.encode())
    body = var + payload
    return bytes([0x10, len(body)]) + body


def login(port, client_id, user, password):
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    start = time.perf_counter()
    sock.sendall(connect_packet(client_id, user, password))
    ack = sock.recv(4)
    return sock, ack, time.perf_counter() - start


def main():
    port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 10
    pinger, ack, _ = login(port, "pinger", user, password)
    assert ack[:2] == b"\x20\x02" and ack[3] == 0, ack
    stop = time.monotonic() + seconds
    attempts = [0]

    def flood(i):
        while time.monotonic() < stop:
            try:
                sock, _, _ = login(port, f"guess-{i}", user, "wrong")
                sock.close()
                attempts[0] += 1
            except OSError:
                pass

    workers = [threading.Thread(target=flood, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    rtts = []
    while time.monotonic() < stop:
        start = time.perf_counter()
        pinger.sendall(b"\xc0\x00")
        assert pinger.recv(2) == b"\xd0\x00"
        rtts.append(time.perf_counter() - start)
        time.sleep(0.01)
    for w in workers:
        w.join()
    rtts.sort()
    pct = lambda p: rtts[min(len(rtts) - 1, int(len(rtts) * p))] * 1000
    print(f"flood: {threads} threads, {attempts[0]} wrong logins in {seconds:.0f} s; "
          f"ping round trip p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, max {rtts[-1]*1000:.2f} ms ({len(rtts)} pings)")
    samples = {"existing": [], "absent": []}
    for i in range(10):
        for kind, name in (("existing", user), ("absent", f"nobody{i}")):
            sock, _, took = login(port, f"t-{kind}-{i}", name, "wrong")
            sock.close()
            samples[kind].append(took)
    med = {k: sorted(v)[len(v) // 2] * 1000 for k, v in samples.items()}
    print(f"refusal time, median of 10: existing user {med['existing']:.1f} ms, absent user "
          f"{med['absent']:.1f} ms, difference {med['existing'] - med['absent']:+.1f} ms")


main()
