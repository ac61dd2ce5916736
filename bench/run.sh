#!/usr/bin/env bash
# One command for the side-by-side benchmark (issues 3 and 17): direct to the
# origin; nginx and HAProxy adding a static Authorization header (logs off),
# nginx again with a buffered access log; sfmc-proxy at its defaults; then
# 10,000 idle client connections per proxy. Loopback only.
#
#   bench/run.sh                 # 3 rounds, 5 s per wrk run (~11 minutes)
#   BENCH_ROUNDS=1 BENCH_DURATION=2 bench/run.sh          # a quick look
#   BENCH_PHASES=idle bench/run.sh                        # one phase (load, transfers, idle)
#   BENCH_NOTE="taken on a busy machine" bench/run.sh     # a line in the report
#
# Installs nginx, HAProxy, wrk and curl from Debian's packages when missing
# (needs root for that), builds the release binary, then hands over to
# bench/bench.py, which writes a markdown table to bench/results/ and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v prlimit >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${missing[*]} missing and not root; install them and run again" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's packages start a default nginx site on port 80 and a default HAProxy
# when a service manager is present; the benchmark starts its own instances
# and never uses those.

if [ "$(nproc --all)" -lt 2 ]; then
  echo "error: the benchmark pins the proxies to CPU 0 and the load to CPU 1: it needs 2 CPUs" >&2
  exit 1
fi

echo "== cargo build --release --locked"
cargo build --release --locked --bin sfmc-proxy

exec python3 bench/bench.py "$@"
