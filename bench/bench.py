#!/usr/bin/env python3
"""Side-by-side benchmark: direct to an nginx origin, the reference proxies
(nginx and HAProxy adding a static Authorization header) and sfmc-proxy. Run
through bench/run.sh, which installs the tools and builds the release binary.

Layout on this 2-CPU machine: the system under test is pinned to CPU 0; the
origin (nginx), wrk and curl to CPU 1. The origin is as cheap as it can be
(`return 200` with the body from memory, no log), so that CPU 1 has headroom
and the figures measure the proxies, not the load generator: the run checks
that direct is at least 2x the fastest reference at 1 KiB @ 64 connections
and says the result is load-bound otherwise. Everything is on 127.0.0.1.

Systems: direct; nginx (1 worker, access log off); nginx-log (the same with a
buffered access log, `buffer=64k`); haproxy (Debian's package, nbthread 1,
http-reuse always, no log); sfmc-proxy at its defaults (access log on, to a
file on tmpfs). nginx and haproxy are the references the targets compare with:
per round the better of the two.

Phases:
  1. load: one long-lived instance of each system; per round, for each scenario
     (1 KiB / 64 KiB at 1 / 64 connections), wrk against every system in turn,
     the order rotated by one each round. Ratios are taken within a round.
  2. transfers: per round and system, a fresh process (so VmHWM is its own),
     its idle RSS, then a 512 MiB upload and a 512 MiB download with curl,
     peak RSS of each (VmHWM reset with clear_refs between them).
  3. idle connections: per system a fresh process; 10,000 client connections,
     each after one proxied GET read to its end, held open; the process's RSS
     with them held and the time `/_proxy/health` takes meanwhile.
  4. token requests counted in the origin's access log: one per sfmc-proxy
     process, however many requests it served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# SFMC_PROXY_BIN: measure another build (e.g. target/profiling/sfmc-proxy).
BINARY = Path(os.environ.get("SFMC_PROXY_BIN", ROOT / "target" / "release" / "sfmc-proxy"))
RESULTS = ROOT / "bench" / "results"

ORIGIN_PORT = 18080
PORTS = {"nginx": 18081, "sfmc-proxy": 18082, "nginx-log": 18083, "haproxy": 18084}
SUT_CPU = "0"
LOAD_CPU = "1"
# As root, everything the benchmark starts runs at nice -10, the same for all
# systems: other work on the machine (builds) then disturbs it less.
NICE = ["nice", "-n", "-10"] if os.geteuid() == 0 else []

SYSTEMS = ["direct", "nginx", "nginx-log", "haproxy", "sfmc-proxy"]
# Logs off (stricter for sfmc-proxy, whose access log is on): per round the
# better of these is the "best reference" the targets compare with.
REFERENCES = ["nginx", "haproxy"]
XFER_SYSTEMS = ["direct", "nginx", "haproxy", "sfmc-proxy"]
# haproxy joins them where it may open 2 descriptors a connection (it refuses
# to start with a maxconn its RLIMIT_NOFILE cannot back, server side included).
IDLE_SYSTEMS = ["sfmc-proxy", "nginx", "haproxy"]
IDLE_CONNS = 10_000
NOFILE = 65536            # RLIMIT_NOFILE for the benchmark and what it starts (or the hard limit)
LOAD_BOUND_RATIO = 2.0    # direct must be this much faster than the fastest reference


def pinned(cpu: str) -> list[str]:
    return NICE + ["taskset", "-c", cpu]

# A token of realistic length (SFMC: opaque, up to 512 characters).
TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjQiLCJ2ZXIiOiIxIiwidHlwIjoiSldUIn0." + "b" * 380
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG = 512 * 1024 * 1024
SCENARIOS = [("1k", 1), ("1k", 64), ("64k", 1), ("64k", 64)]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup files


def json_body(size: int) -> bytes:
    """A JSON document of exactly `size` bytes, shaped like an SFMC page."""
    items, i = [], 0
    head = b'{"count":0,"page":1,"pageSize":50,"items":['
    while True:
        item = json.dumps({"id": i, "key": f"row-{i:06d}", "email": f"user{i}@example.com",
                           "status": "Active"}, separators=(",", ":")).encode()
        if len(head) + sum(len(x) + 1 for x in items) + len(item) + 40 > size:
            break
        items.append(item)
        i += 1
    body = head + b",".join(items) + b'],"pad":"'
    pad = size - len(body) - 2
    return body + b"x" * pad + b'"}'


def nginx_quote(text: str) -> str:
    """`text` as one single-quoted nginx parameter (at most 4096 bytes each)."""
    assert "$" not in text and len(text) < 4000
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_origin(work: Path) -> None:
    www = work / "www"
    www.mkdir()
    # The origin answers /data/1k.json and /data/64k.json from memory with
    # `return 200`: no open, stat or sendfile per request, so wrk and the
    # origin together leave CPU 1 headroom. nginx takes at most 4 KiB per
    # config parameter, so the 64 KiB body is 17 constant `map` values joined
    # in one `return` (one copy per response). The heads carry what a file
    # response's do (Last-Modified, ETag, Accept-Ranges), for the proxies to
    # parse as before.
    bodies, maps, sizes = {}, [], {"1k": 1024, "64k": 64 * 1024}
    for name, size in sizes.items():
        body = json_body(size)
        assert len(body) == size and json.loads(body)
        (www / f"{name}.json").write_bytes(body)  # what the responses are checked against
        text = body.decode()
        parts = []
        for i in range(0, len(text), 3500):
            var = f"$body_{name}_{i // 3500}"
            maps.append(f'    map "" {var} {{ default {nginx_quote(text[i:i + 3500])}; }}')
            parts.append(var)
        bodies[name] = '"' + "".join(parts) + '"'
    # The big file: written in 1 MiB blocks, served with sendfile from tmpfs.
    block = os.urandom(1024 * 1024)
    with open(www / "big.bin", "wb") as f:
        for _ in range(BIG // len(block)):
            f.write(block)
    token_json = json.dumps({
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 1080,
        "scope": "data_extensions_read data_extensions_write",
        "rest_instance_url": f"http://127.0.0.1:{ORIGIN_PORT}/",
        "soap_instance_url": f"http://127.0.0.1:{ORIGIN_PORT}/",
    })
    maps_text = "\n".join(maps)
    static = "\n".join(f"""        location = /data/{name}.json {{
            add_header Last-Modified "Mon, 23 Nov 2026 07:00:00 GMT";
            add_header ETag '"6561e1a0-{sizes[name]:x}"';
            add_header Accept-Ranges bytes;
            return 200 {bodies[name]};
        }}""" for name in ("1k", "64k"))
    (work / "origin.conf").write_text(f"""
worker_processes 1;
worker_rlimit_nofile {NOFILE};
pid {work}/origin.pid;
error_log {work}/origin-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    types {{ application/json json; application/octet-stream bin; }}
    default_type application/json;
{maps_text}
    server {{
        listen 127.0.0.1:{ORIGIN_PORT} backlog=4096;
        # Counted: every token request the origin receives.
        location = /v2/token {{
            access_log {work}/token-access.log;
            return 200 '{token_json}';
        }}
{static}
        location /data/ {{ alias {work}/www/; }}
        # The upload sink reads the whole body before answering: with request
        # buffering on, nginx's proxy module reads the complete body (to a temp
        # file on tmpfs) before it contacts its upstream, which then answers
        # without the body being sent on.
        location = /upload {{
            client_max_body_size 0;
            client_body_buffer_size 1m;
            proxy_request_buffering on;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_pass http://127.0.0.1:{ORIGIN_PORT}/upload-done;
        }}
        location = /upload-done {{
            return 200 '{{"ok":true}}';
        }}
    }}
}}
""")


def write_nginx_proxy(work: Path, port: int, name: str, access_log: bool = False,
                      idle: bool = False) -> Path:
    conf = work / f"{name}.conf"
    log = (f"access_log {work}/{name}-access.log combined buffer=64k;" if access_log
           else "access_log off;")
    conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile {NOFILE};
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections {16384 if idle else 4096}; }}
http {{
    {log}
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {work}/tmp/{name}-body;
    proxy_temp_path {work}/tmp/{name}-proxy;
    upstream origin {{
        server 127.0.0.1:{ORIGIN_PORT};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        # For the idle-connections phase: what sfmc-proxy's health answer is.
        location = /_proxy/health {{ access_log off; return 200 'ok'; }}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {TOKEN}";
            # Stream uploads as sfmc-proxy does; buffer responses in memory
            # only (never to a temp file), nginx's usual streaming set-up.
            proxy_request_buffering off;
            proxy_buffering on;
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
""")
    return conf


def write_haproxy(work: Path, port: int, name: str, idle: bool = False) -> Path:
    conf = work / f"{name}.cfg"
    # No `log` line anywhere: HAProxy logs nothing. Uploads and downloads
    # stream (no http-buffer-request); server connections are kept alive and
    # shared between clients (http-reuse always).
    conf.write_text(f"""
global
    nbthread 1
    maxconn {12000 if idle else 4096}
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 300s
    timeout http-request 120s
    timeout http-keep-alive 120s
    http-reuse always
frontend bench
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok if {{ path /_proxy/health }}
    default_backend origin
backend origin
    http-request set-header Authorization "Bearer {TOKEN}"
    server origin 127.0.0.1:{ORIGIN_PORT}
""")
    return conf


def write_sfmc_config(work: Path, port: int, name: str, idle: bool = False) -> Path:
    conf = work / f"{name}.toml"
    # Defaults throughout, but for the idle-connections phase: room for the
    # 10,000 connections, and keep-alive connections left open for longer
    # than the phase takes (header_read_timeout is also the keep-alive wait).
    limits = ('max_connections = 12000\nheader_read_timeout = "120s"\nidle_timeout = "120s"\n'
              if idle else "")
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
{limits}
[tenants.bench]
auth_url = "http://127.0.0.1:{ORIGIN_PORT}/"
client_id = "bench-client-id"
client_secret = "bench-client-secret"
""")
    return conf


# ------------------------------------------------------------------ processes


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class Process:
    """One system's process tree: its pids are what CPU and RSS are read from."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict | None = None,
                 stderr=None, logs: list[Path] | None = None):
        self.name = name
        self.port = port
        self.logs = logs or []  # access logs it writes: sized, then emptied, per wrk run
        self.popen = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                      stderr=stderr or subprocess.DEVNULL)
        wait_port(port)
        time.sleep(0.2)
        if self.popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {self.popen.returncode}")

    def pids(self) -> list[int]:
        return [self.popen.pid] + children(self.popen.pid)

    def cpu_ticks(self, kernel_only: bool = False) -> int:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (0 if kernel_only else int(fields[11])) + int(fields[12])  # utime, stime
        return total

    def status_kib(self, key: str) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        return total

    def take_log_bytes(self) -> int:
        """Bytes its access logs grew by since the last call (they are then
        emptied: opened O_APPEND by both, so writing goes on at the new end)."""
        total = 0
        for path in self.logs:
            if path.exists():
                total += path.stat().st_size
                os.truncate(path, 0)
        return total

    def reset_peak(self) -> None:
        for pid in self.pids():
            Path(f"/proc/{pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def start_origin(work: Path) -> Process:
    return Process("origin", pinned(LOAD_CPU) + [nginx_bin(), "-p", str(work), "-e",
                              str(work / "origin-error.log"), "-c", str(work / "origin.conf"),
                              "-g", "daemon off;"], ORIGIN_PORT)


def start_system(system: str, work: Path, port: int, tag: str, idle: bool = False) -> Process | None:
    # The idle-connections phase starts its processes with RLIMIT_NOFILE
    # raised explicitly (the benchmark's own is raised too, and inherited).
    limit = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"] if idle else []
    if system == "direct":
        return None
    if system in ("nginx", "nginx-log"):
        name = f"{system}-{tag}"
        conf = write_nginx_proxy(work, port, name, access_log=system == "nginx-log", idle=idle)
        return Process(system, pinned(SUT_CPU) + limit + [
            nginx_bin(), "-p", str(work), "-e", str(work / f"{name}-error.log"), "-c", str(conf),
            "-g", "daemon off;"], port,
            logs=[work / f"{name}-access.log"] if system == "nginx-log" else [])
    if system == "haproxy":
        conf = write_haproxy(work, port, f"haproxy-{tag}", idle=idle)
        errlog = open(work / f"haproxy-{tag}.log", "ab")
        return Process(system, pinned(SUT_CPU) + limit + [haproxy_bin(), "-db", "-f", str(conf)],
                       port, stderr=errlog)
    conf = write_sfmc_config(work, port, f"sfmc-{tag}", idle=idle)
    # Its defaults: RUST_LOG unset is `info`, so the access log is on, one line
    # a request to stderr, here a file on tmpfs (nginx-log's is there too).
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "SFMC_PROXY_LOG_FORMAT")}
    log_path = work / f"sfmc-{tag}.log"
    errlog = open(log_path, "ab")
    return Process("sfmc-proxy", pinned(SUT_CPU) + limit + [str(BINARY), "--config", str(conf)],
                   port, env=env, stderr=errlog, logs=[log_path])


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def haproxy_bin() -> str:
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def port_of(system: str, base: int = 0) -> int:
    return ORIGIN_PORT if system == "direct" else PORTS[system] + base


def token_requests(work: Path) -> int:
    path = work / "token-access.log"
    return len(path.read_text().splitlines()) if path.exists() else 0


# ----------------------------------------------------------------- measuring

UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(text: str) -> dict:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if not m:
            raise RuntimeError(f"no {pct}% latency in wrk output:\n{text}")
        return float(m.group(1)) * UNITS[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    if not rps or not total:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    if bad:
        raise RuntimeError(f"wrk saw {bad.group(1)} error responses:\n{text}")
    return {"rps": float(rps.group(1)), "requests": int(total.group(1)),
            "p50_us": latency("50"), "p99_us": latency("99"),
            "socket_errors": errors.group(1) if errors else None}


def run_wrk(port: int, path: str, conns: int, seconds: float) -> dict:
    argv = pinned(LOAD_CPU) + ["wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s", "--latency",
            f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def measure_load(proc: Process | None, port: int, size: str, conns: int, seconds: float) -> dict:
    if proc:
        proc.take_log_bytes()
    before = proc.cpu_ticks() if proc else 0
    before_sys = proc.cpu_ticks(kernel_only=True) if proc else 0
    result = run_wrk(port, f"/data/{size}.json", conns, seconds)
    if proc:
        ticks = proc.cpu_ticks() - before
        result["cpu_us_per_req"] = ticks / CLK_TCK * 1e6 / max(result["requests"], 1)
        result["sys_us_per_req"] = ((proc.cpu_ticks(kernel_only=True) - before_sys)
                                    / CLK_TCK * 1e6 / max(result["requests"], 1))
        # How much of its one CPU the system used: near 100 %, it is what limits the rate.
        result["cpu_busy"] = result["cpu_us_per_req"] * result["rps"] / 1e6
        if proc.logs:
            result["log_bytes_per_req"] = proc.take_log_bytes() / max(result["requests"], 1)
    return result


def curl(argv: list[str]) -> dict:
    fmt = "%{http_code} %{time_total} %{size_upload} %{size_download}"
    out = subprocess.run(pinned(LOAD_CPU) + ["curl", "-sS", "-o", "/dev/null",
                          "-w", fmt, "-H", "Expect:"] + argv,
                         capture_output=True, text=True, check=True).stdout
    code, wall, up, down = out.split()
    if code != "200":
        raise RuntimeError(f"curl {argv}: HTTP {code}")
    return {"wall_s": float(wall), "up": int(float(up)), "down": int(float(down))}


def check_response(port: int, path: str, expected: bytes) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        body = r.read()
    if body != expected:
        raise RuntimeError(f"127.0.0.1:{port}{path}: body differs from the origin's file")


def best_reference(by: dict, key: str, lower_is_better: bool = False) -> float:
    values = [by[ref][key] for ref in REFERENCES]
    return min(values) if lower_is_better else max(values)


def load_phase(work: Path, rounds: int, seconds: float, raw: list) -> int:
    procs = {}
    # Counted from before the start: sfmc-proxy fetches its token at start.
    tokens_before = token_requests(work)
    try:
        for s in SYSTEMS:
            procs[s] = start_system(s, work, port_of(s), "load")
        for system in SYSTEMS:
            for size in ("1k", "64k"):
                check_response(port_of(system), f"/data/{size}.json",
                               (work / "www" / f"{size}.json").read_bytes())
            run_wrk(port_of(system), "/data/1k.json", 64, 2)  # warm-up
        for r in range(rounds):
            order = SYSTEMS[r % len(SYSTEMS):] + SYSTEMS[:r % len(SYSTEMS)]
            for size, conns in SCENARIOS:
                by = {}
                for system in order:
                    res = measure_load(procs[system], port_of(system), size, conns, seconds)
                    res.update(kind="load", round=r, system=system, scenario=f"{size}@{conns}")
                    raw.append(res)
                    by[system] = res
                    cpu = res.get("cpu_us_per_req")
                    logb = res.get("log_bytes_per_req")
                    log(f"round {r + 1} {size:>3}@{conns:<2} {system:<10} {res['rps']:>9.0f} req/s "
                        f"p50 {res['p50_us']:>7.0f} us  p99 {res['p99_us']:>7.0f} us"
                        + (f"  {cpu:5.1f} CPU us/req" if cpu is not None else "")
                        + (f"  log {logb:.0f} B/req" if logb is not None else ""))
                if conns == 64:
                    ratio = by["direct"]["rps"] / best_reference(by, "rps")
                    log(f"round {r + 1} {size:>3}@{conns:<2} direct / fastest reference = {ratio:.2f}x"
                        + ("" if ratio >= LOAD_BOUND_RATIO or size != "1k"
                           else f"  (under {LOAD_BOUND_RATIO:.0f}x: load-bound)"))
        return token_requests(work) - tokens_before
    finally:
        for p in procs.values():
            if p:
                p.stop()


def transfer_phase(work: Path, rounds: int, raw: list) -> list[int]:
    big = work / "www" / "big.bin"
    tokens_per_process = []
    for r in range(rounds):
        order = XFER_SYSTEMS[r % len(XFER_SYSTEMS):] + XFER_SYSTEMS[:r % len(XFER_SYSTEMS)]
        for system in order:
            port = port_of(system, base=10)
            before = token_requests(work)
            proc = start_system(system, work, port, f"xfer{r}")
            try:
                row = {"kind": "transfer", "round": r, "system": system}
                if proc:
                    time.sleep(1.0)
                    row["idle_rss_kib"] = proc.status_kib("VmRSS")
                # One small request first: the proxy gets its token here.
                curl([f"http://127.0.0.1:{port}/data/1k.json"])
                if proc:
                    proc.reset_peak()
                up = curl(["-X", "POST", "-T", str(big), "-H", "Content-Type: application/octet-stream",
                           f"http://127.0.0.1:{port}/upload"])
                if up["up"] != BIG:
                    raise RuntimeError(f"{system}: uploaded {up['up']} bytes, not {BIG}")
                row["upload_s"] = up["wall_s"]
                if proc:
                    row["upload_hwm_kib"] = proc.status_kib("VmHWM")
                    proc.reset_peak()
                down = curl([f"http://127.0.0.1:{port}/data/big.bin"])
                if down["down"] != BIG:
                    raise RuntimeError(f"{system}: downloaded {down['down']} bytes, not {BIG}")
                row["download_s"] = down["wall_s"]
                if proc:
                    row["download_hwm_kib"] = proc.status_kib("VmHWM")
                raw.append(row)
                log(f"round {r + 1} transfer {system:<10} up {row['upload_s']:.2f} s  "
                    f"down {row['download_s']:.2f} s"
                    + (f"  idle {row['idle_rss_kib'] / 1024:.1f} MiB  peak up "
                       f"{row['upload_hwm_kib'] / 1024:.1f} / down {row['download_hwm_kib'] / 1024:.1f} MiB"
                       if proc else ""))
            finally:
                if proc:
                    proc.stop()
            if system == "sfmc-proxy":
                tokens_per_process.append(token_requests(work) - before)
    return tokens_per_process


# ---------------------------------------------------- idle client connections


async def hold_connections(port: int, n: int, path: str, concurrency: int = 64) -> None:
    """The client side of the idle-connections phase (run as its own process,
    pinned to the load CPU): n connections, each sending one GET and reading
    the whole response, then held open until a line arrives on stdin. Prints
    one JSON line when all are open and one when told to let go."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    gate = asyncio.Semaphore(concurrency)
    held: list = []
    failures: list[str] = []

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
                if length:
                    await reader.readexactly(int(length.group(1)))
                else:  # chunked
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                if status != 200:
                    failures.append(f"HTTP {status}")
                held.append((reader, writer))
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                failures.append(repr(e))

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    print(json.dumps({"held": len(held), "failures": len(failures), "failure": failures[:3],
                      "open_s": round(time.monotonic() - start, 2)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    closed = sum(1 for reader, writer in held
                 if reader.at_eof() or reader.exception() is not None or writer.transport.is_closing())
    print(json.dumps({"closed_by_server": closed}), flush=True)
    for _, writer in held:
        writer.transport.abort()


def timed_health(port: int) -> tuple[int, float]:
    """One GET /_proxy/health on a new connection: status and milliseconds to
    the end of the answer."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    elapsed = (time.perf_counter() - start) * 1000
    return int(data.split(b" ", 2)[1]) if data else 0, elapsed


def idle_systems() -> list[str]:
    return [s for s in IDLE_SYSTEMS if s != "haproxy" or NOFILE >= 2 * 12000 + 100]


def idle_phase(work: Path, raw: list, n: int) -> list[int]:
    tokens_per_process = []
    if "haproxy" not in idle_systems():
        log(f"idle: haproxy left out: RLIMIT_NOFILE {NOFILE} (the hard limit) is under its 2 x maxconn")
    for system in idle_systems():
        port = port_of(system, base=20)
        before = token_requests(work)
        proc = start_system(system, work, port, "idle", idle=True)
        client = None
        try:
            check_response(port, "/data/1k.json", (work / "www" / "1k.json").read_bytes())
            time.sleep(0.5)
            row = {"kind": "idle", "system": system, "conns": n,
                   "rss_before_kib": proc.status_kib("VmRSS")}
            client = subprocess.Popen(
                pinned(LOAD_CPU) + [sys.executable, str(Path(__file__).resolve()),
                                    "--hold-connections", str(port), str(n)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            opened = json.loads(client.stdout.readline())
            time.sleep(1.0)
            row.update(opened)
            row["rss_held_kib"] = proc.status_kib("VmRSS")
            row["hwm_kib"] = proc.status_kib("VmHWM")
            health = []
            for _ in range(5):
                status, ms = timed_health(port)
                if status != 200:
                    raise RuntimeError(f"{system}: /_proxy/health answered {status} with {n} connections held")
                health.append(ms)
                time.sleep(0.1)
            row["health_ms"] = health
            row["rss_after_health_kib"] = proc.status_kib("VmRSS")
            client.stdin.write("done\n")
            client.stdin.flush()
            row.update(json.loads(client.stdout.readline()))
            client.wait(timeout=60)
            raw.append(row)
            per_conn = (row["rss_held_kib"] - row["rss_before_kib"]) / max(row["held"], 1)
            log(f"idle {system:<10} {row['held']} held ({row['failures']} failed, "
                f"{row['closed_by_server']} closed by it) in {row['open_s']} s: RSS "
                f"{row['rss_before_kib'] / 1024:.1f} -> {row['rss_held_kib'] / 1024:.1f} MiB "
                f"({per_conn:.1f} KiB/conn), health {statistics.median(health):.1f} ms "
                f"(max {max(health):.1f})")
        finally:
            if client and client.poll() is None:
                client.kill()
                client.wait()
            proc.stop()
        if system == "sfmc-proxy":
            tokens_per_process.append(token_requests(work) - before)
    return tokens_per_process


# ------------------------------------------------------------------ reporting


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def machine() -> dict:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml"],
                           capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cpus": os.cpu_count(), "mem_gib": round(int(mem) / 1024 / 1024),
            "kernel": platform.release(), "commit": rev + ("+changes" if dirty else ""),
            "nginx": subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True).stderr.strip(),
            "haproxy": " ".join(subprocess.run([haproxy_bin(), "-v"], capture_output=True, text=True)
                                .stdout.split("\n")[0].split()[:3]),
            "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
                    .strip())}


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(raw: list, meta: dict) -> str:
    m = meta["machine"]
    load = [row for row in raw if row["kind"] == "load"]
    rounds = sorted({row["round"] for row in load})
    lines = [
        f"# sfmc-proxy benchmark — {meta['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gib']} GiB, Linux {m['kernel']}; "
        f"{m['nginx']}; {m['haproxy']}; {m['wrk']}; sfmc-proxy at {m['commit']}.",
        f"Load average before / after: {meta['load_before']} / {meta['load_after']} "
        "(other work on the machine adds noise; ratios are taken within a round).",
    ]
    if meta.get("note"):
        lines.append(f"Note: {meta['note']}")
    lines += [
        f"{len(rounds)} rounds, {meta['seconds']} s per wrk run (`wrk -t1`, no script), system order "
        f"rotated each round; systems pinned to CPU 0, origin + wrk + curl to CPU 1"
        f"{', all at nice -10' if NICE else ''}. The origin answers the 1 KiB and 64 KiB bodies "
        "from memory (`return 200`, no log). sfmc-proxy at its defaults (access log on, to a file "
        "on tmpfs); nginx and haproxy (the references) with logs off; nginx-log = nginx with "
        "`access_log … buffer=64k`. Figures: median (min–max) over rounds. "
        f"Whole run: {meta.get('elapsed_min', '?')} minutes.",
    ]

    def by_round(scen: str) -> list[dict]:
        out = []
        for r in rounds:
            out.append({row["system"]: row for row in load if row["round"] == r and row["scenario"] == scen})
        return out

    if load:
        lines += ["", "**Load check** (direct ÷ fastest reference, same round; the load side, "
                  f"origin + wrk on CPU 1, must manage at least {LOAD_BOUND_RATIO:.0f}× what the fastest "
                  "reference proxy serves at 1 KiB @ 64 conn, or the figures measure the load generator):", ""]
        for size in ("1k", "64k"):
            rows = by_round(f"{size}@64")
            ratio = [by["direct"]["rps"] / best_reference(by, "rps") for by in rows]
            fastest = [max(REFERENCES, key=lambda ref: by[ref]["rps"]) for by in rows]
            busy = (f"the fastest reference kept its CPU "
                    f"{spread([by[f]['cpu_busy'] * 100 for by, f in zip(rows, fastest)], '{:.0f}')} % busy "
                    f"({med([by[f]['sys_us_per_req'] for by, f in zip(rows, fastest)]):.1f} of its "
                    f"{med([by[f]['cpu_us_per_req'] for by, f in zip(rows, fastest)]):.1f} CPU µs/req in the "
                    f"kernel), sfmc-proxy {spread([by['sfmc-proxy']['cpu_busy'] * 100 for by in rows], '{:.0f}')} %")
            if size == "1k":
                ok = med(ratio) >= LOAD_BOUND_RATIO
                meta["load_bound"] = not ok
                ref_busy = med([by[f]["cpu_busy"] for by, f in zip(rows, fastest)])
                lines.append(f"- 1 KiB @ 64 conn: {spread(ratio, '{:.2f}')}× — " + (
                    "the load side has headroom: the proxies are what is measured" if ok else
                    f"**LOAD-BOUND** (under {LOAD_BOUND_RATIO:.0f}×): a proxy's rate may be capped by the "
                    "load side rather than set by the proxy") + f"; {busy}" + (
                    ". A proxy at under 85 % of its CPU was held back by something: other work on "
                    "CPU 0 when direct has headroom, the load side when it has not"
                    if ref_busy < 0.85 else ""))
            else:
                lines.append(f"- 64 KiB @ 64 conn: {spread(ratio, '{:.2f}')}× (not checked: each 64 KiB "
                             "response is copied through the kernel as often on the load side as on the "
                             f"proxy's); {busy}")
        lines += [
            "",
            "| scenario | system | req/s | p50 µs | p99 µs | CPU µs/req | CPU busy | log B/req |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for size, conns in SCENARIOS:
            scen = f"{size}@{conns}"
            for system in SYSTEMS:
                rows = [r for r in load if r["scenario"] == scen and r["system"] == system]
                cpu = [r["cpu_us_per_req"] for r in rows if "cpu_us_per_req" in r]
                logb = [r["log_bytes_per_req"] for r in rows if "log_bytes_per_req" in r]
                busy = [r["cpu_busy"] * 100 for r in rows if "cpu_busy" in r]
                lines.append(
                    f"| {size.replace('k', ' KiB')} @ {conns} conn | {system} | "
                    f"{spread([r['rps'] for r in rows], '{:.0f}')} | "
                    f"{spread([r['p50_us'] for r in rows], '{:.0f}')} | {spread([r['p99_us'] for r in rows], '{:.0f}')} | "
                    f"{spread(cpu, '{:.1f}') if cpu else '—'} | {f'{med(busy):.0f} %' if busy else '—'} | "
                    f"{f'{med(logb):.0f}' if logb else '—'} |")

    def ratios(scen: str, key: str, against: str, lower_is_better: bool = False) -> list[float]:
        out = []
        for by in by_round(scen):
            ref = best_reference(by, key, lower_is_better) if against == "best" else by[against][key]
            out.append(by["sfmc-proxy"][key] / ref)
        return out

    xfer = [row for row in raw if row["kind"] == "transfer"]
    xrounds = sorted({row["round"] for row in xfer})

    def xratios(key: str, against: str) -> list[float]:
        out = []
        for r in xrounds:
            by = {row["system"]: row for row in xfer if row["round"] == r}
            ref = best_reference(by, key, True) if against == "best" else by[against][key]
            out.append(by["sfmc-proxy"][key] / ref)
        return out

    def xcol(system: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        vals = [row[key] / scale for row in xfer if row["system"] == system and key in row]
        return spread(vals, fmt) if vals else "—"

    if xfer:
        lines += [
            "",
            "Transfers of 512 MiB with curl (wall s; RSS of the process tree in MiB: "
            "nginx = master + worker):",
            "",
            "| system | upload s | upload peak RSS | download s | download peak RSS | idle RSS |",
            "|---|---|---|---|---|---|",
        ]
        for system in XFER_SYSTEMS:
            lines.append(
                f"| {system} | {xcol(system, 'upload_s')} | {xcol(system, 'upload_hwm_kib', 1024, '{:.1f}')} | "
                f"{xcol(system, 'download_s')} | {xcol(system, 'download_hwm_kib', 1024, '{:.1f}')} | "
                f"{xcol(system, 'idle_rss_kib', 1024, '{:.1f}')} |")
    elif "transfers" in meta["phases"]:
        lines += ["", "Transfers: no rows."]
    else:
        lines += ["", "Transfers skipped."]

    idle = {row["system"]: row for row in raw if row["kind"] == "idle"}
    if idle:
        lines += [
            "",
            f"{IDLE_CONNS:,} idle keep-alive client connections, each after one proxied 1 KiB GET read "
            "to its end, held open (sfmc-proxy: `max_connections = 12000`, `header_read_timeout` and "
            f"`idle_timeout` 120 s; RLIMIT_NOFILE {NOFILE}); RSS of the process tree in MiB "
            "(nginx = master + worker), `/_proxy/health` on a new connection while they are held "
            "(nginx and haproxy: a `return 200` location):",
            "",
            "| system | held | closed by it | RSS before | RSS held | KiB per conn | peak RSS | health ms (median, max of 5) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for system in IDLE_SYSTEMS:
            row = idle.get(system)
            if not row and system == "haproxy":
                lines.append(f"| haproxy | not measured: RLIMIT_NOFILE {NOFILE} (the hard limit here) is under "
                             "the 2 descriptors a connection haproxy insists on | | | | | | |")
            if not row:
                continue
            per = (row["rss_held_kib"] - row["rss_before_kib"]) / max(row["held"], 1)
            lines.append(
                f"| {system} | {row['held']} ({row['failures']} failed) | {row['closed_by_server']} | "
                f"{row['rss_before_kib'] / 1024:.1f} | {row['rss_held_kib'] / 1024:.1f} | {per:.1f} | "
                f"{row['hwm_kib'] / 1024:.1f} | {med(row['health_ms']):.1f}, {max(row['health_ms']):.1f} |")

    lines += [
        "",
        "Targets: sfmc-proxy ÷ the best reference (per round the better of nginx and haproxy, logs off), "
        "per-round ratios, median (min–max); beside it the ratio to each:",
        "",
        "| target | ÷ best reference | ÷ nginx | ÷ haproxy | |",
        "|---|---|---|---|---|",
    ]

    def target(label: str, scen: str, key: str, bound: float, lower: bool, against_best: bool = True) -> str:
        best = ratios(scen, key, "best", lower)
        vs = {ref: ratios(scen, key, ref) for ref in REFERENCES}
        judged = best if against_best else vs["nginx"]
        ok = med(judged) <= bound if lower else med(judged) >= bound
        return (f"| {label} | {spread(best, '{:.2f}')}× | {spread(vs['nginx'], '{:.2f}')}× | "
                f"{spread(vs['haproxy'], '{:.2f}')}× | {verdict(ok)} |")

    if load:
        lines += [
            target("1 KiB @ 64 conn req/s ≥ 1.25×", "1k@64", "rps", 1.25, False),
            target("1 KiB @ 64 conn CPU µs/req ≤ 0.8× nginx's", "1k@64", "cpu_us_per_req", 0.8, True,
                   against_best=False),
            target("64 KiB @ 64 conn req/s ≥ 1.0×", "64k@64", "rps", 1.0, False),
            target("p99 @ 1 conn ≤ 1.0× (1 KiB)", "1k@1", "p99_us", 1.0, True),
            target("p99 @ 1 conn ≤ 1.0× (64 KiB)", "64k@1", "p99_us", 1.0, True),
        ]
    if xfer:
        for label, key in (("512 MiB upload wall ≤ 1.1×", "upload_s"), ("512 MiB download wall ≤ 1.1×", "download_s")):
            best = xratios(key, "best")
            vs = {ref: xratios(key, ref) for ref in REFERENCES}
            lines.append(f"| {label} | {spread(best, '{:.2f}')}× | {spread(vs['nginx'], '{:.2f}')}× | "
                         f"{spread(vs['haproxy'], '{:.2f}')}× | {verdict(med(best) <= 1.1)} |")
        peak = max(row[k] for row in xfer if row["system"] == "sfmc-proxy"
                   for k in ("upload_hwm_kib", "download_hwm_kib")) / 1024
        idle_rss = max(row["idle_rss_kib"] for row in xfer if row["system"] == "sfmc-proxy") / 1024
        lines += [
            f"| peak RSS in transfers ≤ 32 MiB | {peak:.1f} MiB (max) | | | {verdict(peak <= 32)} |",
            f"| idle RSS ≤ 16 MiB | {idle_rss:.1f} MiB (max) | | | {verdict(idle_rss <= 16)} |",
        ]
    if "sfmc-proxy" in idle:
        row = idle["sfmc-proxy"]
        rss = row["rss_held_kib"] / 1024
        ok = row["held"] == IDLE_CONNS and row["closed_by_server"] == 0 and rss <= 128
        ref_rss = {ref: f"{ref} {idle[ref]['rss_held_kib'] / 1024:.1f} MiB" if ref in idle else "—"
                   for ref in REFERENCES}
        lines += [
            f"| {IDLE_CONNS:,} idle connections: RSS ≤ 128 MiB | {rss:.1f} MiB "
            f"({row['held']} held, {row['closed_by_server']} closed) | {ref_rss['nginx']} "
            f"| {ref_rss['haproxy']} | {verdict(ok)} |",
            f"| … and `/_proxy/health` answers at once (≤ 50 ms) | {max(row['health_ms']):.1f} ms (max of 5) "
            f"| | | {verdict(max(row['health_ms']) <= 50)} |",
        ]
    tokens = meta["tokens_load"], meta["tokens_per_process"]
    if tokens[0] is not None or tokens[1]:
        ok = tokens[0] in (None, 1) and all(t == 1 for t in tokens[1])
        lines.append(f"| token requests = 1 per process | "
                     + (f"{tokens[0]} during the load phase; " if tokens[0] is not None else "")
                     + f"{tokens[1]} in the transfer and idle processes | | | {verdict(ok)} |")
    lines += [
        "",
        "Reproduce: `bench/run.sh` (root, 2 CPUs; installs nginx-light, haproxy, wrk, curl when missing).",
    ]
    return "\n".join(lines) + "\n"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def raise_nofile() -> int:
    """RLIMIT_NOFILE up to NOFILE, for the idle phase's 10,000 connections and
    what the proxies open for them; the processes started inherit it. Without
    CAP_SYS_RESOURCE (a container) the hard limit is the most there is: the
    limit actually set is returned and used for everything started."""
    global NOFILE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(hard, NOFILE)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        NOFILE = hard
    return NOFILE


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--hold-connections":  # the idle phase's client
        raise_nofile()
        asyncio.run(hold_connections(int(sys.argv[2]), int(sys.argv[3]), "/data/1k.json"))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_DURATION", 5)))
    parser.add_argument("--phases", default=os.environ.get("BENCH_PHASES", "load,transfers,idle"),
                        help="comma-separated: load, transfers, idle (default all three)")
    parser.add_argument("--no-transfers", action="store_true", help="skip the 512 MiB transfers")
    parser.add_argument("--idle-conns", type=int, default=IDLE_CONNS, help=argparse.SUPPRESS)
    parser.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""),
                        help="a line for the report (e.g. 'taken on a busy machine')")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    if args.no_transfers and "transfers" in phases:
        phases.remove("transfers")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if unknown := set(phases) - {"load", "transfers", "idle"}:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if not BINARY.exists():
        log(f"error: {BINARY} missing: run bench/run.sh (it builds it)")
        return 1
    if raise_nofile() < IDLE_CONNS + 2000 and "idle" in phases:
        log(f"warning: RLIMIT_NOFILE is {NOFILE} (the hard limit): tight for {IDLE_CONNS} connections")
    started = time.monotonic()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_before": loadavg(),
            "seconds": args.seconds, "machine": machine(), "phases": phases, "note": args.note,
            "tokens_load": None, "tokens_per_process": []}
    log(f"load average: {meta['load_before']}; phases: {', '.join(phases)}")
    raw: list = []
    # tmpfs: the 512 MiB file, the upload sink's temp file and the logs stay in memory.
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="sfmc-bench-", dir=shm))
    try:
        work.chmod(0o755)
        (work / "tmp").mkdir(mode=0o777)
        (work / "tmp").chmod(0o777)  # nginx workers run as another user
        write_origin(work)
        origin = start_origin(work)
        try:
            if "load" in phases:
                meta["tokens_load"] = load_phase(work, args.rounds, args.seconds, raw)
            if "transfers" in phases:
                meta["tokens_per_process"] += transfer_phase(work, args.rounds, raw)
            if "idle" in phases:
                meta["tokens_per_process"] += idle_phase(work, raw, args.idle_conns)
        finally:
            origin.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["load_after"] = loadavg()
    meta["elapsed_min"] = round((time.monotonic() - started) / 60, 1)
    text = report(raw, meta)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}.md"
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"meta": meta, "raw": raw}, indent=1) + "\n")
    print(text)
    log(f"written: {out} (and {out.with_suffix('.json').name})")
    if meta.get("load_bound"):
        log(f"warning: LOAD-BOUND: direct is under {LOAD_BOUND_RATIO:.0f}x the fastest reference at "
            "1 KiB @ 64 conn; the req/s ratios measure the load side as much as the proxies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
