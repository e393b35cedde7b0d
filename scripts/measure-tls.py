#!/usr/bin/env python3
"""What an idle MQTT-over-TLS connection costs the gateway, beside a plain one.

Starts a release fleetgate on loopback with a throwaway CA and server
certificate (made with `openssl`), opens N connections to the plain port and
then N to the TLS port, each sending an MQTT 3.1.1 CONNECT and waiting for
its CONNACK, and reads the gateway's RSS (/proc) before and after each
batch. Also times the TLS handshakes + CONNECT round trips. Loopback only;
stops by itself. Prints one JSON line.

    python3 scripts/measure-tls.py [--connections 1000] [--binary target/release/fleetgate]
"""
import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect_packet(client_id):
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"  # 3.1.1, clean session, keep-alive 60 s
    payload = len(cid).to_bytes(2, "big") + cid
    body = var + payload
    return bytes([0x10, len(body)]) + body


def open_mqtt(sock, client_id):
    sock.sendall(connect_packet(client_id))
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        if not chunk:
            raise RuntimeError("closed before CONNACK")
        connack += chunk
    if connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"refused: {connack!r}")


def settle(pid):
    time.sleep(1.0)  # let the gateway's allocator settle before reading RSS
    return rss_kib(pid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--binary", default="target/release/fleetgate")
    args = ap.parse_args()
    n = args.connections
    work = tempfile.mkdtemp(prefix="fleetgate-tls-")
    ca_key, ca, key, csr, cert = (os.path.join(work, f) for f in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=measure CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    ext = os.path.join(work, "ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "1", "-extfile", ext)
    plain, tls, http, smq = free_port(), free_port(), free_port(), free_port()
    config = os.path.join(work, "fleetgate.toml")
    with open(config, "w") as f:
        f.write(f"""data_dir = "{work}/data"
[mqtt]
listen = "127.0.0.1:{plain}"
max_connections = {2 * n + 100}
max_connects_per_source_per_minute = 0
[http]
listen = "127.0.0.1:{http}"
[smq]
listen = "127.0.0.1:{smq}"
[bridge]
enabled = false
[tls]
mqtt_listen = "127.0.0.1:{tls}"
cert_file = "{cert}"
key_file = "{key}"
max_connections = {n + 10}
""")
    gw = subprocess.Popen([args.binary, "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", plain), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or gw.poll() is not None:
                    sys.exit("the gateway did not start")
                time.sleep(0.1)
        base = settle(gw.pid)
        plain_socks = []
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", plain))
            open_mqtt(s, f"plain-{i}")
            plain_socks.append(s)
        after_plain = settle(gw.pid)
        ctx = ssl.create_default_context(cafile=ca)
        tls_socks = []
        started = time.perf_counter()
        for i in range(n):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls)), server_hostname="localhost")
            open_mqtt(s, f"tls-{i}")
            tls_socks.append(s)
        elapsed = time.perf_counter() - started
        after_tls = settle(gw.pid)
        print(json.dumps({
            "connections": n,
            "rss_base_kib": base,
            "plain_kib_per_connection": round((after_plain - base) / n, 2),
            "tls_kib_per_connection": round((after_tls - after_plain) / n, 2),
            "tls_connects_per_s_sequential": round(n / elapsed, 1),
        }))
        for s in plain_socks + tls_socks:
            s.close()
    finally:
        gw.terminate()
        gw.wait(timeout=30)


if __name__ == "__main__":
    main()
