#!/usr/bin/env python3
"""System calls per proxied request, by call, for sfmc-proxy and the reference
proxies: what the CPU figures' kernel share is made of, which callgrind (user
space only) cannot see.

    python3 bench/syscalls.py                 # 1 KiB and 64 KiB, 16 connections
    python3 bench/syscalls.py --size 64k --conns 64 --seconds 3

Uses bench.py's layout and configurations (the same origin on CPU 1, each
system alone on CPU 0, sfmc-proxy's release binary or SFMC_PROXY_BIN), one
system at a time: a warm-up with wrk, then `strace -c -f` attached to the
system's processes for one wrk run. strace slows every call down, so the
request rate here means nothing; the counts per request do. Prints a table
per size: calls per request of each system call, and their sum.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

SYSTEMS = ["nginx", "haproxy", "sfmc-proxy"]


def parse_strace(text: str) -> dict[str, int]:
    """`strace -c` summary: calls by system call (errors included)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = calls.get(fields[-1], 0) + int(fields[3])
    return calls


def count(system: str, work: Path, size: str, conns: int, seconds: int) -> tuple[dict, int]:
    port = bench.port_of(system)
    proc = bench.start_system(system, work, port, f"sc-{size}")
    try:
        bench.run_wrk(port, f"/data/{size}.json", conns, 2)  # warm-up: pools, buffers
        out = work / f"strace-{system}-{size}.txt"
        argv = ["strace", "-c", "-f", "-o", str(out)]
        for pid in proc.pids():
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # strace has no "attached" signal; it attaches in well under this
        result = bench.run_wrk(port, f"/data/{size}.json", conns, seconds)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        return parse_strace(out.read_text()), result["requests"]
    finally:
        proc.stop()


def table(size: str, conns: int, counts: dict[str, tuple[dict, int]]) -> str:
    names = sorted({name for calls, _ in counts.values() for name in calls},
                   key=lambda name: -max(calls.get(name, 0) / max(n, 1)
                                         for calls, n in counts.values()))
    head = f"{size} @ {conns} conn: system calls per request"
    lines = [head, "", "| call | " + " | ".join(counts) + " |",
             "|---|" + "---|" * len(counts)]
    for name in names:
        cells = [f"{calls.get(name, 0) / max(n, 1):.2f}" for calls, n in counts.values()]
        if any(float(cell) >= 0.01 for cell in cells):
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [f"**{sum(calls.values()) / max(n, 1):.2f}**" for calls, n in counts.values()]
    lines.append("| all | " + " | ".join(totals) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", action="append", choices=["1k", "64k"],
                        help="response size (default both)")
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("strace"):
        bench.log("error: strace missing (Debian's package strace)")
        return 1
    if not bench.BINARY.exists():
        bench.log(f"error: {bench.BINARY} missing: cargo build --release")
        return 1
    bench.raise_nofile()
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="sfmc-syscalls-", dir=shm))
    try:
        work.chmod(0o755)
        (work / "tmp").mkdir(mode=0o777)
        (work / "tmp").chmod(0o777)
        bench.write_origin(work)
        origin = bench.start_origin(work)
        try:
            for size in args.size or ["1k", "64k"]:
                counts = {system: count(system, work, size, args.conns, args.seconds)
                          for system in SYSTEMS}
                print(table(size, args.conns, counts))
        finally:
            origin.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
