#!/usr/bin/env bash
# End to end: unmodified SFMC SDKs, installed from PyPI and npm, against
# `sfmc-proxy demo` (the embedded fake SFMC tenant with the proxy in front).
#
#   e2e/run.sh                    E2E_TARGET=proxy (default): SDK -> proxy -> fake SFMC.
#                                 The SDKs authenticate at the proxy's own /v2/token
#                                 (client id = tenant name "demo", any secret on
#                                 loopback, MID 100) and the proxy swaps in the
#                                 real token.
#   E2E_TARGET=fake e2e/run.sh    SDK -> fake SFMC directly, with the fake's own
#                                 credentials: checks the clients themselves.
#
# Clients: FuelSDK-Python (REST + SOAP Retrieve), fuel-auth + fuel-rest (REST),
# sfmc-sdk (REST + SOAP Retrieve). Installs what it needs itself (e2e/.venv,
# e2e/node_modules), builds the proxy, and never leaves the machine: every
# client refuses non-loopback connections. Last line: "N passed, N failed".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
target=${E2E_TARGET:-proxy}
case $target in
  proxy | fake) ;;
  *) echo "E2E_TARGET must be 'proxy' or 'fake', not '$target'" >&2; exit 2 ;;
esac
client_timeout=${E2E_CLIENT_TIMEOUT:-60}

step() { printf '\n== %s\n' "$*"; }

step "Python venv with Salesforce-FuelSDK (e2e/.venv)"
venv=$here/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# suds-jurko's sdist only builds with an old setuptools: see build-requirements.txt.
"${pip[@]}" -r "$here/build-requirements.txt"
"${pip[@]}" --no-build-isolation -r "$here/requirements.txt"

step "npm ci (fuel-auth, fuel-rest, sfmc-sdk)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

step "cargo build --locked --bin sfmc-proxy"
(cd "$root" && cargo build --locked --bin sfmc-proxy)
bin=${CARGO_TARGET_DIR:-$root/target}/debug/sfmc-proxy

step "sfmc-proxy demo --listen 127.0.0.1:0"
work=$(mktemp -d)
demo_pid=
drain_pid=
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  if [ -n "$drain_pid" ]; then wait "$drain_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Read the demo's stdout through a FIFO until its ready line, then keep draining
# it (with its stderr log) into a file so that it never blocks on a full pipe.
mkfifo "$work/stdout"
"$bin" demo --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/demo.log" &
demo_pid=$!
exec 3<"$work/stdout"
fake_url='' proxy_url='' ready=''
while IFS= read -r -t 60 line <&3; do
  printf '%s\n' "$line" >>"$work/demo.out"
  case $line in
    "  fake SFMC tenant "*) fake_url=$(grep -o 'http://[^ ]*' <<<"$line" | head -n1) ;;
    "  proxy "*) proxy_url=$(grep -o 'http://[^ ]*' <<<"$line" | head -n1) ;;
    "Press Ctrl-C to stop."*) ready=1; break ;;
  esac
done
if [ -z "$ready" ] || [ -z "$fake_url" ] || [ -z "$proxy_url" ]; then
  echo "the demo did not get ready (no 'Press Ctrl-C to stop.' within 60 s of a line):" >&2
  cat "$work/demo.out" "$work/demo.log" >&2 2>/dev/null || true
  exit 1
fi
cat <&3 >>"$work/demo.out" &
drain_pid=$!
exec 3<&-
echo "fake SFMC tenant $fake_url, proxy $proxy_url"

if [ "$target" = proxy ]; then
  # What a user of the proxy's broker configures: the proxy's URL as the
  # Authentication Base URI, the tenant's name as client id, any secret.
  auth_url=$proxy_url client_id=demo client_secret=any-local-secret
  # FuelSDK-Python appends "/v2/token" to the URL as given, so a URL pasted
  # with its trailing slash (as SFMC shows it) makes "//v2/token": kept so.
  fuelsdk_auth_url=$auth_url
else
  auth_url=$fake_url client_id=fake-client-id client_secret=fake-client-secret
  # The fake answers "/v2/token" only, not FuelSDK's "//v2/token".
  fuelsdk_auth_url=${auth_url%/}
fi
export E2E_CLIENT_ID=$client_id E2E_CLIENT_SECRET=$client_secret E2E_ACCOUNT_ID=100
# Loopback is never sent to an HTTP proxy from the environment.
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}
export no_proxy=$NO_PROXY

passed=0 failed=0 failures=()
run_client() {
  local name=$1 url=$2
  shift 2
  step "$name -> $target ($url)"
  if (cd "$here" && E2E_AUTH_URL=$url timeout "$client_timeout" "$@"); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}
run_client "FuelSDK-Python" "$fuelsdk_auth_url" "$venv/bin/python" fuelsdk_client.py
run_client "fuel-auth + fuel-rest" "$auth_url" node fuel_rest_client.js
run_client "sfmc-sdk" "$auth_url" node sfmc_sdk_client.mjs

if [ "$failed" -gt 0 ]; then
  printf '\nfailed: %s; the demo'\''s output and log:\n' "${failures[*]}"
  tail -n 40 "$work/demo.out" "$work/demo.log" || true
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
