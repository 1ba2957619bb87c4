#!/usr/bin/env python3
"""SUBSCRIBE round trips while the broker is busy: one raw MQTT 3.1.1 client subscribes and
unsubscribes COUNT times to filters of its own and times each SUBACK. Run it while a fan-out
load runs (bench/subscribe_latency.sh does both). Prints p50/p99/max in milliseconds, as JSON.

Usage: bench/subscribe_latency.py PORT [COUNT]
"""
import json
import socket
import struct
import sys
import time


def remaining_length(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(kind, body):
    return bytes([kind]) + remaining_length(len(body)) + body


def utf8(text):
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def read_packet(sock):
    header = sock.recv(1)
    if not header:
        raise ConnectionError("broker closed the connection")
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        body += chunk
    return header[0], body


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 200
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(packet(0x10, utf8("MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + utf8("sub-latency")))
    kind, _ = read_packet(sock)
    assert kind == 0x20, f"expected CONNACK, got {kind:#x}"
    times = []
    for i in range(count):
        pid = i % 65535 + 1
        filter_ = f"latency/probe/{i}"
        started = time.perf_counter()
        sock.sendall(packet(0x82, struct.pack(">H", pid) + utf8(filter_) + b"\x00"))
        while True:
            kind, body = read_packet(sock)
            if kind == 0x90 and body[:2] == struct.pack(">H", pid):
                break
        times.append((time.perf_counter() - started) * 1000)
        sock.sendall(packet(0xA2, struct.pack(">H", pid) + utf8(filter_)))
        while read_packet(sock)[0] != 0xB0:
            pass
    times.sort()
    pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))], 3)
    print(json.dumps({"count": count, "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(times[-1], 3)}))


if __name__ == "__main__":
    main()
