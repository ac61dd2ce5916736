#!/usr/bin/env bash
# What a script feels (issue 17, item 4): an SFMC-like upstream over TLS with
# 20 ms of round-trip time, a curl loop that opens a new connection per call
# (direct with a token request per call, direct with a reused token, through
# sfmc-proxy) and 200 concurrent 5 MiB uploads. Loopback only.
#
#   bench/felt.sh                       # 50 calls each, 3 rounds of uploads
#   bench/felt.sh --calls 100 --rounds 5
#
# Installs nginx-light, curl and openssl from Debian's packages when missing
# (needs root for that), builds the release binary, then hands over to
# bench/felt.py, which writes a markdown table to bench/results/felt-*.md and
# prints it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
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

if [ "$(nproc --all)" -lt 2 ]; then
  echo "error: the benchmark pins the proxy to CPU 0 and the rest to CPU 1: it needs 2 CPUs" >&2
  exit 1
fi

echo "== cargo build --release --locked"
cargo build --release --locked --bin sfmc-proxy

exec python3 bench/felt.py "$@"
