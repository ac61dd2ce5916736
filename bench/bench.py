#!/usr/bin/env python3
"""Side-by-side benchmark: direct to an nginx origin, nginx adding a static
Authorization header, and sfmc-proxy. Run through bench/run.sh, which installs
the tools and builds the release binary first.

Layout on this 2-CPU machine: the system under test is pinned to CPU 0; the
origin (nginx), wrk and curl to CPU 1. So the proxy's own cost is what the
throughput and the CPU-per-request figures show. Everything is on 127.0.0.1.

Phases:
  1. load: one long-lived instance of each proxy; per round, for each scenario
     (1 KiB / 64 KiB at 1 / 64 connections), wrk against A (direct), B (nginx),
     C (sfmc-proxy) in that order. Ratios are taken within a round.
  2. transfers: per round and system, a fresh process (so VmHWM is its own),
     its idle RSS, then a 512 MiB upload and a 512 MiB download with curl,
     peak RSS of each (VmHWM reset with clear_refs between them).
  3. token requests counted in the origin's access log: one per sfmc-proxy
     process, however many requests it served.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
NGINX_PORT = 18081
PROXY_PORT = 18082
SUT_CPU = "0"
LOAD_CPU = "1"
# As root, everything the benchmark starts runs at nice -10, the same for all
# three systems: other work on the machine (builds) then disturbs it less.
NICE = ["nice", "-n", "-10"] if os.geteuid() == 0 else []


def pinned(cpu: str) -> list[str]:
    return NICE + ["taskset", "-c", cpu]

# A token of realistic length (SFMC: opaque, up to 512 characters).
TOKEN = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjQiLCJ2ZXIiOiIxIiwidHlwIjoiSldUIn0." + "b" * 380
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG = 512 * 1024 * 1024
SCENARIOS = [("1k", 1), ("1k", 64), ("64k", 1), ("64k", 64)]
SYSTEMS = ["direct", "nginx", "sfmc-proxy"]


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


def write_origin(work: Path) -> None:
    www = work / "www"
    www.mkdir()
    for name, size in [("1k", 1024), ("64k", 64 * 1024)]:
        body = json_body(size)
        assert len(body) == size and json.loads(body)
        (www / f"{name}.json").write_bytes(body)
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
    (work / "origin.conf").write_text(f"""
worker_processes 1;
pid {work}/origin.pid;
error_log {work}/origin-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    types {{ application/json json; application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{ORIGIN_PORT} backlog=4096;
        # Counted: every token request the origin receives.
        location = /v2/token {{
            access_log {work}/token-access.log;
            default_type application/json;
            return 200 '{token_json}';
        }}
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
            default_type application/json;
            return 200 '{{"ok":true}}';
        }}
    }}
}}
""")


def write_nginx_proxy(work: Path, port: int, name: str) -> Path:
    conf = work / f"{name}.conf"
    conf.write_text(f"""
worker_processes 1;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
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


def write_sfmc_config(work: Path, port: int, name: str) -> Path:
    conf = work / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
max_connections = 4096

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
                 stderr=None):
        self.name = name
        self.port = port
        self.popen = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                      stderr=stderr or subprocess.DEVNULL)
        wait_port(port)
        time.sleep(0.2)
        if self.popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {self.popen.returncode}")

    def pids(self) -> list[int]:
        return [self.popen.pid] + children(self.popen.pid)

    def cpu_ticks(self) -> int:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total

    def status_kib(self, key: str) -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
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


def start_system(system: str, work: Path, port: int, tag: str) -> Process | None:
    if system == "direct":
        return None
    if system == "nginx":
        conf = write_nginx_proxy(work, port, f"nginx-{tag}")
        return Process("nginx", pinned(SUT_CPU) + [nginx_bin(), "-p", str(work), "-e",
                                 str(work / f"nginx-{tag}-error.log"), "-c", str(conf),
                                 "-g", "daemon off;"], port)
    conf = write_sfmc_config(work, port, f"sfmc-{tag}")
    # Access logging filtered out, as nginx's is off: both measured without logs.
    env = dict(os.environ, RUST_LOG="warn")
    errlog = open(work / f"sfmc-{tag}.log", "wb")
    return Process("sfmc-proxy", pinned(SUT_CPU) + [str(BINARY), "--config", str(conf)],
                   port, env=env, stderr=errlog)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def port_of(system: str, base: int = 0) -> int:
    return {"direct": ORIGIN_PORT, "nginx": NGINX_PORT + base, "sfmc-proxy": PROXY_PORT + base}[system]


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
    before = proc.cpu_ticks() if proc else 0
    result = run_wrk(port, f"/data/{size}.json", conns, seconds)
    if proc:
        ticks = proc.cpu_ticks() - before
        result["cpu_us_per_req"] = ticks / CLK_TCK * 1e6 / max(result["requests"], 1)
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


def load_phase(work: Path, rounds: int, seconds: float, raw: list) -> int:
    procs = {s: start_system(s, work, port_of(s), "load") for s in SYSTEMS}
    try:
        tokens_before = token_requests(work)
        for system in SYSTEMS:
            for size in ("1k", "64k"):
                check_response(port_of(system), f"/data/{size}.json",
                               (work / "www" / f"{size}.json").read_bytes())
            run_wrk(port_of(system), "/data/1k.json", 64, 2)  # warm-up
        for r in range(rounds):
            for size, conns in SCENARIOS:
                for system in SYSTEMS:
                    res = measure_load(procs[system], port_of(system), size, conns, seconds)
                    res.update(kind="load", round=r, system=system, scenario=f"{size}@{conns}")
                    raw.append(res)
                    cpu = res.get("cpu_us_per_req")
                    log(f"round {r + 1} {size:>3}@{conns:<2} {system:<10} {res['rps']:>9.0f} req/s "
                        f"p50 {res['p50_us']:>7.0f} us  p99 {res['p99_us']:>7.0f} us"
                        + (f"  {cpu:5.1f} CPU us/req" if cpu is not None else ""))
        return token_requests(work) - tokens_before
    finally:
        for p in procs.values():
            if p:
                p.stop()


def transfer_phase(work: Path, rounds: int, raw: list) -> list[int]:
    big = work / "www" / "big.bin"
    tokens_per_process = []
    for r in range(rounds):
        for system in SYSTEMS:
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
            "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
                    .strip())}


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def report(raw: list, meta: dict) -> str:
    rounds = sorted({row["round"] for row in raw if row["kind"] == "load"})
    lines = [
        f"# sfmc-proxy benchmark — {meta['date']}",
        "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cpus']} CPUs, "
        f"{meta['machine']['mem_gib']} GiB, Linux {meta['machine']['kernel']}; "
        f"{meta['machine']['nginx']}; {meta['machine']['wrk']}; sfmc-proxy at {meta['machine']['commit']}.",
        f"Load average before / after: {meta['load_before']} / {meta['load_after']} "
        "(other work on the machine adds noise; ratios are taken within a round).",
        f"{len(rounds)} rounds, {meta['seconds']} s per wrk run; systems pinned to CPU 0, origin + wrk + curl "
        f"to CPU 1{', all at nice -10' if NICE else ''}; access logs off in both proxies. "
        "Figures: median (min–max) over rounds.",
        "",
        "| scenario | system | req/s | p50 µs | p99 µs | CPU µs/req |",
        "|---|---|---|---|---|---|",
    ]
    load = [row for row in raw if row["kind"] == "load"]
    for size, conns in SCENARIOS:
        scen = f"{size}@{conns}"
        for system in SYSTEMS:
            rows = [r for r in load if r["scenario"] == scen and r["system"] == system]
            cpu = [r["cpu_us_per_req"] for r in rows if "cpu_us_per_req" in r]
            lines.append(
                f"| {size.replace('k', ' KiB')} @ {conns} conn | {system} | {spread([r['rps'] for r in rows], '{:.0f}')} | "
                f"{spread([r['p50_us'] for r in rows], '{:.0f}')} | {spread([r['p99_us'] for r in rows], '{:.0f}')} | "
                f"{spread(cpu, '{:.1f}') if cpu else '—'} |")

    def ratios(scen: str, key: str) -> list[float]:
        out = []
        for r in rounds:
            by = {row["system"]: row for row in load if row["round"] == r and row["scenario"] == scen}
            out.append(by["sfmc-proxy"][key] / by["nginx"][key])
        return out

    xfer = [row for row in raw if row["kind"] == "transfer"]
    xrounds = sorted({row["round"] for row in xfer})

    def xratio(key: str) -> list[float]:
        out = []
        for r in xrounds:
            by = {row["system"]: row for row in xfer if row["round"] == r}
            out.append(by["sfmc-proxy"][key] / by["nginx"][key])
        return out

    def xcol(system: str, key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        vals = [row[key] / scale for row in xfer if row["system"] == system and key in row]
        return spread(vals, fmt) if vals else "—"

    r_rps1k = ratios("1k@64", "rps")
    r_cpu1k = ratios("1k@64", "cpu_us_per_req")
    r_rps64k = ratios("64k@64", "rps")
    r_p99 = [ratios(f"{s}@1", "p99_us") for s in ("1k", "64k")]
    tokens = meta["tokens_load"], meta["tokens_per_process"]
    if xfer:
        lines += [
            "",
            "Transfers of 512 MiB with curl (wall s; RSS of the proxy process tree in MiB: "
            "nginx = master + worker):",
            "",
            "| system | upload s | upload peak RSS | download s | download peak RSS | idle RSS |",
            "|---|---|---|---|---|---|",
        ]
        for system in SYSTEMS:
            lines.append(
                f"| {system} | {xcol(system, 'upload_s')} | {xcol(system, 'upload_hwm_kib', 1024, '{:.1f}')} | "
                f"{xcol(system, 'download_s')} | {xcol(system, 'download_hwm_kib', 1024, '{:.1f}')} | "
                f"{xcol(system, 'idle_rss_kib', 1024, '{:.1f}')} |")
    else:
        lines += ["", "Transfers skipped (--no-transfers)."]
    lines += [
        "",
        "Targets (sfmc-proxy ÷ nginx, per-round ratios: median (min–max)):",
        "",
        "| target | result | |",
        "|---|---|---|",
        f"| 1 KiB @ 64 conn req/s ≥ 1.25× | {spread(r_rps1k, '{:.2f}')}× | {verdict(med(r_rps1k) >= 1.25)} |",
        f"| 1 KiB @ 64 conn CPU µs/req ≤ 0.8× | {spread(r_cpu1k, '{:.2f}')}× | {verdict(med(r_cpu1k) <= 0.8)} |",
        f"| 64 KiB @ 64 conn req/s ≥ 1.0× | {spread(r_rps64k, '{:.2f}')}× | {verdict(med(r_rps64k) >= 1.0)} |",
        f"| p99 @ 1 conn ≤ 1.0× (1 KiB) | {spread(r_p99[0], '{:.2f}')}× | {verdict(med(r_p99[0]) <= 1.0)} |",
        f"| p99 @ 1 conn ≤ 1.0× (64 KiB) | {spread(r_p99[1], '{:.2f}')}× | {verdict(med(r_p99[1]) <= 1.0)} |",
    ]
    if xfer:
        r_up, r_down = xratio("upload_s"), xratio("download_s")
        peak = max(row[k] for row in xfer if row["system"] == "sfmc-proxy"
                   for k in ("upload_hwm_kib", "download_hwm_kib")) / 1024
        idle = max(row["idle_rss_kib"] for row in xfer if row["system"] == "sfmc-proxy") / 1024
        lines += [
            f"| 512 MiB upload wall ≤ 1.1× | {spread(r_up, '{:.2f}')}× | {verdict(med(r_up) <= 1.1)} |",
            f"| 512 MiB download wall ≤ 1.1× | {spread(r_down, '{:.2f}')}× | {verdict(med(r_down) <= 1.1)} |",
            f"| peak RSS in transfers ≤ 32 MiB | {peak:.1f} MiB (max) | {verdict(peak <= 32)} |",
            f"| idle RSS ≤ 16 MiB | {idle:.1f} MiB (max) | {verdict(idle <= 16)} |",
        ]
    lines += [
        f"| token requests = 1 per process | {tokens[0]} during the load phase; {tokens[1]} in the transfer processes "
        f"| {verdict(tokens[0] == 1 and all(t == 1 for t in tokens[1]))} |",
        "",
        "Reproduce: `bench/run.sh` (root, 2 CPUs; installs nginx-light, wrk, curl when missing).",
    ]
    return "\n".join(lines) + "\n"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_DURATION", 5)))
    parser.add_argument("--no-transfers", action="store_true", help="skip the 512 MiB transfers")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not BINARY.exists():
        log(f"error: {BINARY} missing: run bench/run.sh (it builds it)")
        return 1
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "load_before": loadavg(),
            "seconds": args.seconds, "machine": machine()}
    log(f"load average: {meta['load_before']}")
    raw: list = []
    # tmpfs: the 512 MiB file and the upload sink's temp file stay in memory.
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="sfmc-bench-", dir=shm))
    try:
        work.chmod(0o755)
        (work / "tmp").mkdir(mode=0o777)
        (work / "tmp").chmod(0o777)  # nginx workers run as another user
        write_origin(work)
        origin = start_origin(work)
        try:
            meta["tokens_load"] = load_phase(work, args.rounds, args.seconds, raw)
            meta["tokens_per_process"] = [] if args.no_transfers else transfer_phase(work, args.rounds, raw)
        finally:
            origin.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["load_after"] = loadavg()
    text = report(raw, meta)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}.md"
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"meta": meta, "raw": raw}, indent=1) + "\n")
    print(text)
    log(f"written: {out} (and {out.with_suffix('.json').name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
