#!/usr/bin/env python3
"""What a script feels (issue 17, item 4): an SFMC-like upstream over TLS with
20 ms of round-trip time, and clients that open a new connection per call.

Run through bench/felt.sh, which installs the tools and builds the release
binary first.

Layout, all on 127.0.0.1:
  origin  nginx over TLS (a self-signed certificate made at run time for IP
          127.0.0.1): POST /v2/token answers a static SFMC token whose
          rest_instance_url and soap_instance_url name the relay; GET
          /asset/v1/content/assets answers a small JSON page; POST
          /data/v1/async/dataextensions/key:felt/rows reads the whole upload
          and answers 200.
  relay   the "network": this file run with --relay, a TCP relay (asyncio)
          between every client and the origin that holds each chunk 10 ms in
          each direction (20 ms RTT), order kept, TLS passed through
          untouched. The TCP handshake's round trip is counted too: a new
          connection's first bytes reach the origin no earlier than 30 ms
          (1.5 RTT) after it was accepted, as when connect() itself takes a
          round trip. `tc netem` would do this in the kernel; this machine's
          kernel has no sch_netem.
  proxy   sfmc-proxy, one client-credentials tenant whose auth_url is the
          relay, upstream.ca_file the certificate; token.prefetch off, so the
          first call through it fetches the token.
The proxy is pinned to CPU 0; origin, relay and the clients (curl) to CPU 1.

Measurements:
  1. curl loop, one new curl process per call, interleaved a b c per call:
     (a) direct, a token request per call: curl POST /v2/token, then curl GET
         with that token, each its own TLS connection through the relay;
     (b) direct, token reused: one curl GET per call with a fixed token;
     (c) through the proxy: curl http://127.0.0.1:PROXY/... per call.
     Wall time per call as the calling script sees it (process start
     included), median and p90, and the ratios (a)/(c), (b)/(c).
  2. 200 concurrent uploads of 5 MiB, each on its own connection (one
     `curl --parallel` process), direct (through the relay, fixed token) and
     through a fresh proxy process: wall time, every status 200 and every
     byte sent, the proxy's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
# The benchmark's own helpers: one place for how a process is pinned,
# a port waited for, a figure spread over rounds, a token request counted.
from bench import (loadavg, log, nginx_bin, pinned, spread,  # noqa: E402
                   token_requests, wait_port)

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(os.environ.get("SFMC_PROXY_BIN", ROOT / "target" / "release" / "sfmc-proxy"))
RESULTS = ROOT / "bench" / "results"

# Ports of their own: bench.py uses 18080-18092.
ORIGIN_PORT = 18480       # nginx, TLS
SINK_PORT = 18481         # nginx, plain: the upload sink's internal answer
RELAY_PORT = 18482        # the delaying relay in front of ORIGIN_PORT
PROXY_PORT = 18483        # sfmc-proxy
SUT_CPU = "0"
LOAD_CPU = "1"
NICE = ["nice", "-n", "-10"] if os.geteuid() == 0 else []

ONE_WAY_S = 0.010         # 10 ms each way: 20 ms RTT
WINDOW = 2 * 1024 * 1024  # bytes the relay holds in flight per direction and connection
CHUNK = 256 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjQiLCJ2ZXIiOiIxIiwidHlwIjoiSldUIn0." + "f" * 380
API_PATH = "/asset/v1/content/assets?$page=1&$pageSize=5"
UPLOAD_PATH = "/data/v1/async/dataextensions/key:felt/rows"
UPLOAD_SIZE = 5 * 1024 * 1024
UPLOADS = 200
CLIENT_ID = "felt-client-id"
CLIENT_SECRET = "felt-client-secret"


# ---------------------------------------------------------------- the relay


async def relay_main(listen_port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()

    async def direction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        not_before: float) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        room = asyncio.Event()
        room.set()
        budget = WINDOW

        async def read_side() -> None:
            nonlocal budget
            while True:
                while budget <= 0:
                    room.clear()
                    await room.wait()
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                queue.put_nowait((max(loop.time() + ONE_WAY_S, not_before), data))
                if not data:
                    return
                budget -= len(data)

        async def write_side() -> None:
            nonlocal budget
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                budget += len(data)
                room.set()

        reading = asyncio.ensure_future(read_side())
        try:
            await write_side()
        finally:
            reading.cancel()

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        accepted = loop.time()
        try:
            o_reader, o_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            c_writer.close()
            return
        for w in (c_writer, o_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Client to origin: not before 1.5 RTT after accept (connect's own
        # round trip, then the one-way trip). Origin to client: 10 ms.
        tasks = [asyncio.ensure_future(direction(c_reader, o_writer, accepted + 3 * ONE_WAY_S)),
                 asyncio.ensure_future(direction(o_reader, c_writer, 0.0))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if t.exception() is not None:
                    for p in pending:
                        p.cancel()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (c_writer, o_writer):
                w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, backlog=4096)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------- set-up


def make_cert(work: Path) -> Path:
    cert, key = work / "cert.pem", work / "key.pem"
    # A leaf (CA:FALSE) that is its own trust anchor: curl --cacert and the
    # proxy's upstream.ca_file both take it.
    (work / "openssl.cnf").write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n"
        "[dn]\nCN = 127.0.0.1\n"
        "[ext]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n"
        "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n")
    subprocess.run(["openssl", "req", "-x509", "-config", str(work / "openssl.cnf"),
                    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2"],
                   check=True, capture_output=True)
    return cert


def token_json() -> str:
    return json.dumps({
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 1080,
        "scope": "data_extensions_read data_extensions_write documents_and_images_read",
        "soap_instance_url": f"https://127.0.0.1:{RELAY_PORT}/",
        "rest_instance_url": f"https://127.0.0.1:{RELAY_PORT}/",
    }, separators=(",", ":"))


def api_json() -> str:
    items = [{"id": i, "customerKey": f"asset-{i:04d}", "name": f"Asset {i}",
              "assetType": {"id": 208, "name": "htmlemail"}} for i in range(5)]
    return json.dumps({"count": 5, "page": 1, "pageSize": 5, "items": items},
                      separators=(",", ":"))


def write_origin(work: Path) -> Path:
    conf = work / "origin.conf"
    conf.write_text(f"""
worker_processes 1;
pid {work}/origin.pid;
error_log {work}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    ssl_certificate {work}/cert.pem;
    ssl_certificate_key {work}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen 127.0.0.1:{ORIGIN_PORT} ssl backlog=4096;
        # Counted: every token request the origin receives.
        location = /v2/token {{
            access_log {work}/token-access.log;
            default_type application/json;
            return 200 '{token_json()}';
        }}
        location = /asset/v1/content/assets {{
            default_type application/json;
            return 200 '{api_json()}';
        }}
        # The upload sink reads the whole body (to a temp file on tmpfs)
        # before answering, then asks its plain internal listener for the
        # answer without sending the body on.
        location = {UPLOAD_PATH} {{
            client_max_body_size 0;
            client_body_buffer_size 1m;
            proxy_request_buffering on;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_pass http://127.0.0.1:{SINK_PORT}/upload-done;
        }}
    }}
    server {{
        listen 127.0.0.1:{SINK_PORT};
        location = /upload-done {{
            default_type application/json;
            return 200 '{{"requestId":"felt","resultMessages":[]}}';
        }}
    }}
}}
""")
    return conf


def write_proxy_config(work: Path, cert: Path) -> Path:
    conf = work / "felt.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{PROXY_PORT}"
max_connections = 4096

[token]
prefetch = false

[upstream]
ca_file = "{cert}"

[tenants.felt]
auth_url = "https://127.0.0.1:{RELAY_PORT}/"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
""")
    return conf


# ------------------------------------------------------------------ processes


class Process:
    def __init__(self, name: str, argv: list[str], port: int, env: dict | None = None,
                 stderr=None):
        self.name = name
        self.popen = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                      stderr=stderr or subprocess.DEVNULL)
        wait_port(port)
        if self.popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {self.popen.returncode}")

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {key} in /proc/{self.popen.pid}/status")

    def cpu_s(self) -> float:
        """utime + stime of the process and its children (nginx's worker)."""
        pids = [self.popen.pid]
        try:
            pids += [int(x) for x in Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children")
                     .read_text().split()]
        except OSError:
            pass
        ticks = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / CLK_TCK

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def start_origin(work: Path, conf: Path) -> Process:
    return Process("origin", pinned(LOAD_CPU) + [nginx_bin(), "-p", str(work), "-e",
                   str(work / "origin-error.log"), "-c", str(conf), "-g", "daemon off;"],
                   ORIGIN_PORT)


def start_relay() -> Process:
    return Process("relay", pinned(LOAD_CPU) + [sys.executable, str(Path(__file__).resolve()),
                   "--relay", str(RELAY_PORT), str(ORIGIN_PORT)], RELAY_PORT)


def start_proxy(work: Path, conf: Path, tag: str) -> Process:
    env = dict(os.environ, RUST_LOG="warn")
    errlog = open(work / f"proxy-{tag}.log", "wb")
    return Process("sfmc-proxy", pinned(SUT_CPU) + [str(BINARY), "--config", str(conf)],
                   PROXY_PORT, env=env, stderr=errlog)


# ----------------------------------------------------------------- measuring


def curl(cert: Path, args: list[str]) -> str:
    """One curl process, as a script runs it; returns its stdout, checks 2xx."""
    out = subprocess.run(pinned(LOAD_CPU) + ["curl", "-sS", "--cacert", str(cert),
                         "-w", "\n%{http_code}"] + args,
                         capture_output=True, text=True, check=True).stdout
    body, _, code = out.rpartition("\n")
    if not code.startswith("2"):
        raise RuntimeError(f"curl {args}: HTTP {code}")
    return body


def direct_url(path: str) -> str:
    return f"https://127.0.0.1:{RELAY_PORT}{path}"


def call_token_each(cert: Path) -> None:
    body = curl(cert, ["-X", "POST", "-H", "Content-Type: application/json", "--data",
                       json.dumps({"grant_type": "client_credentials", "client_id": CLIENT_ID,
                                   "client_secret": CLIENT_SECRET}),
                       direct_url("/v2/token")])
    token = json.loads(body)["access_token"]
    curl(cert, ["-o", "/dev/null", "-H", f"Authorization: Bearer {token}", direct_url(API_PATH)])


def call_token_reused(cert: Path) -> None:
    curl(cert, ["-o", "/dev/null", "-H", f"Authorization: Bearer {TOKEN}", direct_url(API_PATH)])


def call_proxy(cert: Path) -> None:
    curl(cert, ["-o", "/dev/null", f"http://127.0.0.1:{PROXY_PORT}{API_PATH}"])


LOOP_SYSTEMS = [
    ("a", "direct, a token request per call", call_token_each),
    ("b", "direct, token reused", call_token_reused),
    ("c", "through sfmc-proxy", call_proxy),
]


def curl_loop(work: Path, cert: Path, conf: Path, calls: int) -> dict:
    proxy = start_proxy(work, conf, "loop")
    try:
        times: dict[str, list[float]] = {key: [] for key, _, _ in LOOP_SYSTEMS}
        tokens: dict[str, int] = {key: 0 for key, _, _ in LOOP_SYSTEMS}
        for i in range(calls):
            for key, _, fn in LOOP_SYSTEMS:
                before = token_requests(work)
                start = time.perf_counter()
                fn(cert)
                times[key].append((time.perf_counter() - start) * 1000)
                tokens[key] += token_requests(work) - before
            if (i + 1) % 10 == 0:
                log(f"curl loop: {i + 1}/{calls} calls each; last "
                    + "  ".join(f"{k} {times[k][-1]:.0f} ms" for k in times))
        return {"times_ms": times, "token_requests": tokens}
    finally:
        proxy.stop()


def upload_config(work: Path, url: str, upload: Path) -> Path:
    """A curl config with UPLOADS transfers of the same file."""
    lines = []
    for i in range(UPLOADS):
        lines += [f'url = "{url}"', f'upload-file = "{upload}"', 'output = "/dev/null"']
    path = work / f"uploads-{abs(hash(url))}.curlrc"
    path.write_text("\n".join(lines) + "\n")
    return path


def uploads(work: Path, cert: Path, url: str, headers: list[str], upload: Path) -> dict:
    """UPLOADS concurrent POSTs, each on its own connection, from one curl."""
    cfg = upload_config(work, url, upload)
    argv = pinned(LOAD_CPU) + ["curl", "-sS", "--no-progress-meter", "--cacert", str(cert), "--parallel",
            "--parallel-immediate", "--parallel-max", str(UPLOADS), "-X", "POST",
            "-H", "Expect:", "-H", "Content-Type: application/octet-stream"]
    for h in headers:
        argv += ["-H", h]
    argv += ["-w", "%{http_code} %{size_upload} %{num_connects}\n", "-K", str(cfg)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    codes = [r[0] for r in rows]
    sent = [int(float(r[1])) for r in rows]
    return {"wall_s": wall, "answered": len(rows), "ok": sum(1 for c in codes if c == "200"),
            "codes": sorted(set(codes)), "all_bytes": all(s == UPLOAD_SIZE for s in sent),
            "new_connections": sum(int(r[2]) for r in rows), "curl_rc": done.returncode,
            "stderr": done.stderr.strip()[-500:]}


def upload_phase(work: Path, cert: Path, conf: Path, rounds: int, origin: Process,
                 relay: Process) -> list[dict]:
    upload = work / "upload.bin"
    upload.write_bytes(os.urandom(UPLOAD_SIZE))
    rows = []

    def measured(url: str, headers: list[str], proxy: Process | None) -> dict:
        before = {"origin": origin.cpu_s(), "relay": relay.cpu_s(),
                  "proxy": proxy.cpu_s() if proxy else 0.0}
        res = uploads(work, cert, url, headers, upload)
        res["cpu_s"] = {"origin": origin.cpu_s() - before["origin"],
                        "relay": relay.cpu_s() - before["relay"]}
        if proxy:
            res["cpu_s"]["proxy"] = proxy.cpu_s() - before["proxy"]
        return res

    for r in range(rounds):
        res = measured(direct_url(UPLOAD_PATH), [f"Authorization: Bearer {TOKEN}"], None)
        res.update(round=r, system="direct")
        rows.append(res)
        log(f"round {r + 1} uploads direct      {res['wall_s']:.2f} s  {res['ok']}/{UPLOADS} ok  "
            f"CPU s {res['cpu_s']}")

        before = token_requests(work)
        proxy = start_proxy(work, conf, f"up{r}")
        try:
            idle = proxy.status_kib("VmRSS")
            res = measured(f"http://127.0.0.1:{PROXY_PORT}{UPLOAD_PATH}", [], proxy)
            res.update(round=r, system="sfmc-proxy", idle_rss_kib=idle,
                       peak_rss_kib=proxy.status_kib("VmHWM"))
        finally:
            proxy.stop()
        res["token_requests"] = token_requests(work) - before
        rows.append(res)
        log(f"round {r + 1} uploads sfmc-proxy  {res['wall_s']:.2f} s  {res['ok']}/{UPLOADS} ok  "
            f"peak RSS {res['peak_rss_kib'] / 1024:.1f} MiB  CPU s {res['cpu_s']}")
    return rows


# ------------------------------------------------------------------ reporting


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


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
            "curl": subprocess.run(["curl", "--version"], capture_output=True,
                                   text=True).stdout.split("\n")[0].split(" (")[0]}


def report(loop: dict, ups: list[dict], meta: dict) -> str:
    m = meta["machine"]
    t = loop["times_ms"]
    med = {k: statistics.median(v) for k, v in t.items()}
    p90 = {k: pct(v, 90) for k, v in t.items()}
    lines = [
        f"# What a script feels — {meta['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} vCPUs, {m['mem_gib']} GiB, Linux {m['kernel']}; {m['nginx']}; "
        f"{m['curl']}; sfmc-proxy at {m['commit']}. **A 2-core VM shared with others compiling** "
        f"(load average before / after: {meta['load_before']} / {meta['load_after']}), so wall times "
        "are noisy.",
        "",
        "The upstream is nginx over TLS (self-signed certificate, TLS 1.3, HTTP/1.1) behind a "
        "**round trip of 20 ms simulated in user space**: a Python asyncio relay holds every chunk "
        "10 ms each way and a new connection's first bytes 30 ms (its TCP handshake's round trip), "
        "so each new connection costs TCP + TLS + request = 3 round trips, as on a real network "
        "(no `tc netem` in this kernel). The token's instance URLs point at the relay, so the "
        "proxy's calls pay the round trip too. sfmc-proxy on CPU 0; origin, relay and curl on "
        f"CPU 1{', all at nice -10' if NICE else ''}.",
        "",
        f"## A curl loop, a new curl process per call ({meta['calls']} calls each, interleaved)",
        "",
        "Wall time per call as the calling script sees it (curl's process start included):",
        "",
        "| client | median ms | p90 ms | token requests | slower than through the proxy (median) |",
        "|---|---|---|---|---|",
    ]
    for key, label, _ in LOOP_SYSTEMS:
        ratio = "—" if key == "c" else f"{med[key] / med['c']:.1f}×"
        lines.append(f"| ({key}) {label} | {med[key]:.1f} | {p90[key]:.1f} | "
                     f"{loop['token_requests'][key]}{' (fixed token)' if key == 'b' else ''} | {ratio} |")
    lines += [
        "",
        f"(a)/(c) = {med['a'] / med['c']:.1f}× at the median, {p90['a'] / p90['c']:.1f}× at p90; "
        f"(b)/(c) = {med['b'] / med['c']:.1f}× at the median, {p90['b'] / p90['c']:.1f}× at p90. "
        f"The proxy's first call (it fetched the token and opened its pooled connection) took "
        f"{t['c'][0]:.1f} ms; the direct (a) call pays a token request and two new TLS connections "
        "every time, (b) one new TLS connection, (c) only a loopback connection to the proxy and one "
        "round trip on its kept-alive TLS connection.",
        "",
        f"## {UPLOADS} concurrent uploads of 5 MiB, each on its own connection",
        "",
        "One `curl --parallel --parallel-immediate --parallel-max 200` process, POST, `Expect:` off; "
        "direct = straight to the origin through the relay with a fixed token; sfmc-proxy = a fresh "
        "process per round (its peak RSS is its own, start-up included). Median (min–max) over "
        f"{meta['rounds']} rounds:",
        "",
        "| system | wall s | answered 200 | all 5 MiB sent | proxy idle RSS MiB | proxy peak RSS MiB | "
        "CPU s origin / relay / proxy | token requests |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system in ("direct", "sfmc-proxy"):
        rows = [r for r in ups if r["system"] == system]
        ok = " / ".join(f"{r['ok']}/{UPLOADS}" for r in rows)
        allb = "yes" if all(r["all_bytes"] and r["answered"] == UPLOADS for r in rows) else "**no**"
        if system == "sfmc-proxy":
            idle = spread([r["idle_rss_kib"] / 1024 for r in rows], "{:.1f}")
            peak = spread([r["peak_rss_kib"] / 1024 for r in rows], "{:.1f}")
            toks = ", ".join(str(r["token_requests"]) for r in rows) + " (per process)"
        else:
            idle = peak = "—"
            toks = "0 (fixed token)"
        cpu = " / ".join(spread([r["cpu_s"][k] for r in rows], "{:.1f}") if k in rows[0]["cpu_s"]
                         else "—" for k in ("origin", "relay", "proxy"))
        lines.append(f"| {system} | {spread([r['wall_s'] for r in rows], '{:.2f}')} | {ok} | {allb} | "
                     f"{idle} | {peak} | {cpu} | {toks} |")
    bad = [r for r in ups if r["ok"] != UPLOADS]
    for r in bad:
        lines.append(f"\nRound {r['round'] + 1} {r['system']}: codes {r['codes']}, curl exit "
                     f"{r['curl_rc']}: {r['stderr']}")
    lines += ["", "Reproduce: `bench/felt.sh` (root, 2 CPUs; installs nginx-light, curl, openssl "
              "when missing; about a minute after the build)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relay", nargs=2, type=int, metavar=("LISTEN", "TARGET"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=50, help="curl loop calls per client")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 200 uploads")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    if args.relay:
        asyncio.run(relay_main(*args.relay))
        return 0
    if not BINARY.exists():
        log(f"error: {BINARY} missing: run bench/felt.sh (it builds it)")
        return 1
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_before": loadavg(),
            "calls": args.calls, "rounds": args.rounds, "machine": machine()}
    log(f"load average: {meta['load_before']}")
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="sfmc-felt-", dir=shm))
    started: list[Process] = []
    try:
        work.chmod(0o755)
        (work / "tmp").mkdir(mode=0o777)
        (work / "tmp").chmod(0o777)  # nginx workers run as another user
        cert = make_cert(work)
        conf = write_proxy_config(work, cert)
        origin = start_origin(work, write_origin(work))
        started.append(origin)
        relay = start_relay()
        started.append(relay)
        check = subprocess.run([str(BINARY), "--config", str(conf), "check"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sfmc-proxy check failed:\n{check.stdout}{check.stderr}")
        loop = curl_loop(work, cert, conf, args.calls)
        ups = upload_phase(work, cert, conf, args.rounds, origin, relay)
    finally:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)
    meta["load_after"] = loadavg()
    text = report(loop, ups, meta)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"felt-{time.strftime('%Y%m%d-%H%M%S')}.md"
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"meta": meta, "loop": loop, "uploads": ups},
                                                     indent=1) + "\n")
    print(text)
    log(f"written: {out} (and {out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
