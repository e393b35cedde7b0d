#!/usr/bin/env python3
"""PUBACK round trips of one QoS 1 device, as a vehicle sees them.

    python3 scripts/ack-latency.py HOST:PORT [COUNT]

Connects as vehicle `acklat-1`, publishes COUNT JSON positions to
v/acklat-1/pos at QoS 1, one at a time, each waiting for its PUBACK, and
prints the round trip's p50 / p99 / p99.9 / max in microseconds as one JSON
line. With the bridge on, fleetgate answers once the spool holds the record
(README, "Acknowledged means kept"); run it against a gateway with the
bridge on and off to see what that costs. Loopback only; it stops by itself.
"""
import json
import socket
import sys
import time


def remaining_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def mqtt_string(s):
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit("the gateway closed the connection")
        buf += chunk
    return buf


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = mqtt_string("MQTT") + bytes([4, 0x02, 0, 60]) + mqtt_string("acklat-1")
    sock.sendall(bytes([0x10]) + remaining_length(len(body)) + body)
    if read_exact(sock, 4)[0] != 0x20:
        raise SystemExit("no CONNACK")
    topic = mqtt_string("v/acklat-1/pos")
    rtts = []
    for seq in range(1, count + 1):
        payload = json.dumps({"lat": 52.37, "lon": 4.89, "seq": seq}).encode()
        pkid = seq % 65535 + 1
        var = topic + pkid.to_bytes(2, "big") + payload
        t0 = time.perf_counter_ns()
        sock.sendall(bytes([0x32]) + remaining_length(len(var)) + var)
        ack = read_exact(sock, 4)
        rtts.append((time.perf_counter_ns() - t0) / 1000)
        if ack[0] != 0x40 or int.from_bytes(ack[2:4], "big") != pkid:
            raise SystemExit(f"expected PUBACK {pkid}, got {ack.hex()}")
    sock.sendall(bytes([0xE0, 0]))
    rtts.sort()
    pick = lambda q: round(rtts[min(len(rtts) - 1, int(q * len(rtts)))], 1)
    print(json.dumps({"publishes": count, "p50_us": pick(0.50), "p99_us": pick(0.99),
                      "p999_us": pick(0.999), "max_us": round(rtts[-1], 1)}))


if __name__ == "__main__":
    main()
