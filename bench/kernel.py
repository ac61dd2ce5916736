#!/usr/bin/env python3
"""Where a proxied request's CPU time goes, kernel included, for sfmc-proxy
and the reference proxies: CPU µs per request by function, from `perf record
-e cpu-clock` samples, beside minor page faults per request. callgrind
(`profile.sh`) counts user-space instructions only; `syscalls.py` counts
system calls; this shows what the kernel does with them (copies into and out
of socket buffers, wake-ups, page faults), which is most of a 64 KiB request.

    python3 bench/kernel.py                        # 64 KiB, 64 connections, 3 rounds
    python3 bench/kernel.py --size 1k --rounds 5 --top 25

Uses bench.py's layout and configurations (the same origin and wrk on CPU 1,
each system alone on CPU 0, sfmc-proxy's release binary or SFMC_PROXY_BIN).
All systems run side by side and are measured one after another, the order
rotated each round; each figure is the median over rounds of (share of the
system's samples) × (its CPU µs per request in that run). perf samples at
2 kHz, so it adds little, but on a VM whose host takes CPU time away (`st`
in vmstat) every figure rises with it: compare systems within one run.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

SYSTEMS = ["nginx", "haproxy", "sfmc-proxy"]


def parse_report(text: str) -> dict[str, float]:
    """`perf report --sort dso,sym -g none` lines: share (0..1) by
    "[k] symbol" (kernel) or "[.] symbol" (user space, its library named)."""
    shares: dict[str, float] = {}
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3 or not fields[0].endswith("%"):
            continue
        try:
            share = float(fields[0][:-1]) / 100
        except ValueError:
            continue
        dso, rest = fields[1], fields[2]
        # rest is "[k] symbol" or "[.] symbol"
        kind, _, symbol = rest.partition(" ")
        name = f"{kind} {symbol.strip()}" if kind == "[k]" else f"{kind} {symbol.strip()} ({dso})"
        shares[name] = shares.get(name, 0.0) + share
    return shares


def minor_faults(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[7])  # minflt
    return total


def cpu_times(cpu: str) -> tuple[int, int]:
    """(steal, all) jiffies of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{cpu}":
            values = [int(v) for v in fields[1:9]]
            return values[7], sum(values)
    return 0, 0


def measure(proc: bench.Process, work: Path, size: str, conns: int, seconds: int, tag: str) -> dict:
    data = work / f"perf-{tag}.data"
    argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-o", str(data),
            "-p", ",".join(str(p) for p in proc.pids()), "--", "sleep", str(seconds + 1)]
    faults_before = minor_faults(proc.pids())
    steal_before = cpu_times(bench.SUT_CPU)
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # perf attaches well within this; the wrk run is inside its window
    result = bench.measure_load(proc, proc.port, size, conns, seconds)
    faults = minor_faults(proc.pids()) - faults_before
    steal_after = cpu_times(bench.SUT_CPU)
    # The share of the system's CPU the VM's host ran something else on.
    steal = (steal_after[0] - steal_before[0]) / max(steal_after[1] - steal_before[1], 1)
    recorder.wait(timeout=60)
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                             "--sort", "dso,sym", "-g", "none"],
                            capture_output=True, text=True, check=True).stdout
    data.unlink(missing_ok=True)
    shares = parse_report(report)
    cpu = result["cpu_us_per_req"]
    return {"rps": result["rps"], "cpu": cpu, "sys": result["sys_us_per_req"],
            "faults": faults / max(result["requests"], 1), "steal": 100 * steal,
            "us": {name: share * cpu for name, share in shares.items()}}


def table(runs: dict[str, list[dict]], top: int) -> str:
    med = statistics.median
    systems = [s for s in SYSTEMS if runs.get(s)]
    names: set[str] = set()
    for s in systems:
        per = {}
        for run in runs[s]:
            for name, us in run["us"].items():
                per.setdefault(name, []).append(us)
        ranked = sorted(per, key=lambda n: -med(per[n] + [0.0] * (len(runs[s]) - len(per[n]))))
        names.update(ranked[:top])

    def figure(s: str, name: str) -> float:
        return med([run["us"].get(name, 0.0) for run in runs[s]])

    order = sorted(names, key=lambda n: -max(figure(s, n) for s in systems))
    lines = ["| | " + " | ".join(systems) + " |", "|---|" + "---|" * len(systems)]
    for key, label in (("rps", "req/s"), ("cpu", "CPU µs/req"), ("sys", "of which kernel"),
                       ("faults", "minor page faults/req"), ("steal", "CPU stolen by the host, %")):
        cells = [f"{med([r[key] for r in runs[s]]):.{0 if key in ('rps', 'steal') else 2}f}"
                 for s in systems]
        lines.append(f"| **{label}** | " + " | ".join(cells) + " |")
    for name in order:
        lines.append(f"| `{name}` | " + " | ".join(f"{figure(s, name):.2f}" for s in systems) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64k", choices=["1k", "64k"])
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="functions listed, per system")
    args = parser.parse_args()
    if not shutil.which("perf"):
        bench.log("error: perf missing (Debian: linux-perf)")
        return 1
    if not bench.BINARY.exists():
        bench.log(f"error: {bench.BINARY} missing: cargo build --release --locked")
        return 1
    bench.raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="sfmc-kernel-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    procs: dict[str, bench.Process] = {}
    runs: dict[str, list[dict]] = {s: [] for s in SYSTEMS}
    try:
        work.chmod(0o755)
        (work / "tmp").mkdir(mode=0o777)
        (work / "tmp").chmod(0o777)
        bench.write_origin(work)
        origin = bench.start_origin(work)
        try:
            for s in SYSTEMS:
                proc = bench.start_system(s, work, bench.port_of(s), "kernel")
                if proc is None:
                    raise RuntimeError(f"{s} did not start")
                procs[s] = proc
                bench.run_wrk(proc.port, f"/data/{args.size}.json", args.conns, 2)  # warm-up
            for r in range(args.rounds):
                order = SYSTEMS[r % len(SYSTEMS):] + SYSTEMS[:r % len(SYSTEMS)]
                for s in order:
                    run = measure(procs[s], work, args.size, args.conns, args.seconds, f"{s}-{r}")
                    runs[s].append(run)
                    bench.log(f"round {r + 1} {s:<10} {run['rps']:>8.0f} req/s  {run['cpu']:5.1f} CPU us/req"
                              f"  ({run['sys']:.1f} kernel)  {run['faults']:.2f} faults/req"
                              f"  {run['steal']:.0f}% stolen")
        finally:
            for p in procs.values():
                p.stop()
            origin.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = bench.machine()
    print(f"CPU µs per request by function, {args.size} @ {args.conns} conn, median of {args.rounds} "
          f"rounds. Machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}; {m['nginx']}; "
          f"{m['haproxy']}; sfmc-proxy at {m['commit']}; load average after: {bench.loadavg()}.\n")
    print(table(runs, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
