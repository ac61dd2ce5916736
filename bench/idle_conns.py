#!/usr/bin/env python3
"""Memory per idle keep-alive client connection (issue 17, item 5).

Starts an nginx origin (token endpoint and a 1 KiB JSON document) and the
proxy in front of it, opens N keep-alive connections to the proxy that each
make one proxied GET (the response read to the end) and then stay open, and
reports the proxy's VmRSS with none and with N open, KiB per connection, and
how long `/_proxy/health` takes on a new connection while they are held.

Usage: python3 bench/idle_conns.py [--binary PATH] [--connections N]
       [--batch B]
The proxy inherits this process's environment (try MALLOC_ARENA_MAX=2).
Needs nginx (`apt-get install nginx-light`). Standalone: bench.py is the
side-by-side benchmark; this is the quick check while working on memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import wait_port  # noqa: E402  (the benchmark's own)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_origin(work: Path, port: int) -> Path:
    token = json.dumps({
        "access_token": "t" * 400, "token_type": "Bearer", "expires_in": 1080,
        "rest_instance_url": f"http://127.0.0.1:{port}/",
        "soap_instance_url": f"http://127.0.0.1:{port}/",
    })
    (work / "www").mkdir()
    (work / "www" / "1k.json").write_text('{"pad":"' + "x" * 1013 + '"}')
    (work / "tmp").mkdir()
    conf = work / "origin.conf"
    conf.write_text(f"""
worker_processes 1;
pid {work}/origin.pid;
error_log {work}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    types {{ application/json json; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v2/token {{ default_type application/json; return 200 '{token}'; }}
        location /data/ {{ alias {work}/www/; }}
    }}
}}
""")
    return conf


def write_proxy(work: Path, port: int, origin: int) -> Path:
    conf = work / "proxy.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
max_connections = 12000
idle_timeout = "30m"
# hyper times an HTTP/1.1 keep-alive connection's next head with this too.
header_read_timeout = "30m"

[tenants.bench]
auth_url = "http://127.0.0.1:{origin}/"
client_id = "bench-client-id"
client_secret = "bench-client-secret"
""")
    return conf


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response, read to its end (Content-Length or chunked)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError(f"closed before the head: {data!r}")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").lower().split("\r\n")
    length = next((int(l.split(":", 1)[1]) for l in lines if l.startswith("content-length:")), None)
    while (len(body) < length) if length is not None else not body.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before the body's end")
        body += chunk
    if not lines[0].startswith("http/1.1 200"):
        raise RuntimeError(f"unexpected answer: {head!r} {body[:300]!r}")
    return head


def open_idle(port: int, n: int, batch: int) -> list[socket.socket]:
    """n connections, each after one proxied GET; `batch` requests in flight at once."""
    request = f"GET /data/1k.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    held = []
    while len(held) < n:
        group = [socket.create_connection(("127.0.0.1", port)) for _ in range(min(batch, n - len(held)))]
        for s in group:
            s.sendall(request)
        for s in group:
            read_response(s)
        held.extend(group)
    return held


def health_ms(port: int) -> float:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        read_response(s)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "sfmc-proxy"))
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    # The proxy inherits the limit; it and this process each hold N sockets.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.connections + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        raise SystemExit(f"the open-files hard limit ({hard}) is under {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = Path(tempfile.mkdtemp(prefix="idle-conns-"))
    work.chmod(0o755)  # nginx's worker (www-data, when started as root) reads www/
    origin_port, proxy_port = free_port(), free_port()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    origin = subprocess.Popen([nginx, "-p", str(work), "-e", str(work / "origin-error.log"),
                               "-c", str(write_origin(work, origin_port)), "-g", "daemon off;"])
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    proxy = subprocess.Popen([args.binary, "--config", str(write_proxy(work, proxy_port, origin_port))],
                             env=env, stdout=subprocess.DEVNULL)
    try:
        wait_port(origin_port)
        wait_port(proxy_port)
        # Warm: the token fetched, one upstream connection, then none open.
        for s in open_idle(proxy_port, 1, 1):
            s.close()
        time.sleep(0.5)
        base = rss_kib(proxy.pid)
        started = time.monotonic()
        held = open_idle(proxy_port, args.connections, args.batch)
        opened = time.monotonic() - started
        time.sleep(1.0)
        loaded = rss_kib(proxy.pid)
        health = sorted(health_ms(proxy_port) for _ in range(5))
        n = len(held)
        for s in held:
            s.close()
        time.sleep(1.0)
        after = rss_kib(proxy.pid)
        print(json.dumps({
            "connections": n,
            "rss_idle_mib": round(base / 1024, 1),
            "rss_held_mib": round(loaded / 1024, 1),
            "kib_per_connection": round((loaded - base) / n, 2),
            "rss_after_close_mib": round(after / 1024, 1),
            "health_ms_median": round(health[len(health) // 2], 2),
            "health_ms_max": round(health[-1], 2),
            "open_seconds": round(opened, 1),
        }))
    finally:
        proxy.terminate()
        origin.terminate()
        proxy.wait()
        origin.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
