#!/usr/bin/env python3
"""Memory of a broker that 100 peers each tell a huge CONNECT is coming.

usage: announce_rss.py PORT PID   (PID: the broker process, for /proc/PID/status)
Prints (VmRSS, VmSize) in KB idle, after 100 peers announcing 256 MB, and after 100 more
announcing 200 KB and sending 1 KB of it.
"""
import socket, sys, time, subprocess
port, pid = int(sys.argv[1]), sys.argv[2]
rss = lambda: tuple(int([l for l in open(f"/proc/{pid}/status") if l.startswith(k)][0].split()[1]) for k in ("VmRSS", "VmSize"))
base = rss(); socks = []
for _ in range(100):
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"\x10\xff\xff\xff\x7f"); socks.append(s)
time.sleep(1); a = rss()
closed = sum(1 for s in socks if s.recv(1) == b"")
socks2 = []
for _ in range(100):  # announce 200 KB (under the 256 KiB cap) and send 1 KB of it
    s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"\x10\xc0\x9a\x0c" + b"\x00" * 1024); socks2.append(s)
time.sleep(1); b = rss()
print(f"RSS {base} (RSS, VmSize) KB idle; after 100 peers announcing 256 MB: {a} KB ({closed} of 100 closed at once); "
      f"after 100 more announcing 200 KB and sending 1 KB: {b} KB")
