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
# sfmc-sdk (REST + SOAP Retrieve). With E2E_TARGET=proxy also examples/postman/'s
# collection in newman (token, REST, SOAP Retrieve), and a person's login
# in headless Chromium (browser_login.mjs): a second proxy (`sfmc-proxy serve`)
# with an authorization-code tenant "web" on the demo's fake tenant, whose
# /_proxy/login the browser follows to the fake's "Allow" button and back to
# the proxy's callback. And the status page in the same browser
# (status_page.mjs): a third proxy with tenants demo, broken and web, its
# /_proxy/status read from the DOM, "drop cached token" clicked, a screenshot
# written to target/status-page.png. And a fleet: three `sfmc-proxy serve`
# replicas sharing tokens through a redis-server ([redis]) behind HAProxy
# (round robin), the three SDKs run through the load balancer, then each
# replica's metrics say the fleet sent SFMC one token request and every
# replica served calls (fleet_counts.py). Installs what it needs itself
# (e2e/.venv, e2e/node_modules, Debian's chromium, redis-server and haproxy
# when missing: as root only), builds the proxy, and never leaves the
# machine: every client refuses non-loopback connections. Last line:
# "N passed, N failed".
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

step "npm ci (fuel-auth, fuel-rest, sfmc-sdk, newman, playwright-core)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

chromium=/usr/bin/chromium
if [ "$target" = proxy ]; then
  step "Debian's chromium (for the browser login and the status page)"
  if [ ! -x "$chromium" ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "FAIL: $chromium is missing and this is not root: install Debian's chromium" \
        "(sudo apt-get install --no-install-recommends chromium), then run again" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    [ -x "$chromium" ] || { echo "FAIL: apt-get installed chromium but $chromium is missing" >&2; exit 1; }
  fi
  # (Debian's launcher script may complain about /dev/shm's size on stderr.)
  "$chromium" --version 2>/dev/null || { echo "FAIL: $chromium --version failed" >&2; exit 1; }
fi

step "cargo build --locked --bin sfmc-proxy"
(cd "$root" && cargo build --locked --bin sfmc-proxy)
bin=${CARGO_TARGET_DIR:-$root/target}/debug/sfmc-proxy

step "sfmc-proxy demo --listen 127.0.0.1:0"
work=$(mktemp -d)
demo_pid=
fleet_pids=()
drain_pid=
serve_pid=
status_pid=
stop() {
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
cleanup() {
  for pid in "${fleet_pids[@]}"; do stop "$pid"; done
  stop "$status_pid"
  stop "$serve_pid"
  stop "$demo_pid"
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
  local name=$1 url=$2 began=$SECONDS
  shift 2
  step "$name -> $target ($url)"
  if (cd "$here" && E2E_AUTH_URL=$url timeout "$client_timeout" "$@"); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
  echo "($name: $((SECONDS - began)) s)"
}
run_client "FuelSDK-Python" "$fuelsdk_auth_url" "$venv/bin/python" fuelsdk_client.py
run_client "fuel-auth + fuel-rest" "$auth_url" node fuel_rest_client.js
run_client "sfmc-sdk" "$auth_url" node sfmc_sdk_client.mjs
if [ "$target" = proxy ]; then
  # Postman: examples/postman/'s sample collection, whose URLs are SFMC's own
  # (https://{{et_subdomain}}.rest.marketingcloudapis.com/...), run by newman with
  # its environment and proxy_url set as by `--env-var`; its collection-level
  # pre-request script sends each request to the proxy with a broker token.
  run_client "Postman collection (newman)" "$proxy_url" \
    env E2E_PROXY_URL="$proxy_url" node postman_client.cjs
fi

# $1 (default 2) free loopback ports (held together while picked, so they differ).
free_ports() {
  python3 -c 'import socket, sys
s = [socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))' "${1:-2}"
}

# `sfmc-proxy serve` with the config $1, logging to $2: started_pid is its
# pid. Ready when it logs that it listens (it binds first): at most 30 s.
start_serve() {
  local config=$1 log=$2 tries=0
  "$bin" --config "$config" serve >"$log" 2>&1 &
  started_pid=$!
  until grep -q 'sfmc-proxy listening' "$log"; do
    if ! kill -0 "$started_pid" 2>/dev/null || [ "$tries" -ge 300 ]; then
      echo "FAIL: sfmc-proxy serve did not start listening:" >&2
      cat "$config" "$log" >&2
      return 1
    fi
    tries=$((tries + 1))
    sleep 0.1
  done
}

# A person's login: `sfmc-proxy serve` with an authorization-code tenant on the
# demo's fake tenant (which takes its own client id and secret for this grant
# too); the browser logs in through its /_proxy/login.
start_login_proxy() {
  local ports proxy_port callback_port
  ports=$(free_ports) || return 1
  read -r proxy_port callback_port <<<"$ports"
  login_proxy_url=http://127.0.0.1:$proxy_port/
  redirect_uri=https://127.0.0.1:$callback_port/callback
  printf '%s\n' \
    '[server]' "listen = \"127.0.0.1:$proxy_port\"" '' \
    '[token]' "store_file = \"$work/state/tokens.json\"" '' \
    '[tenants.web]' "auth_url = \"$fake_url\"" \
    'client_id = "fake-client-id"' 'client_secret = "fake-client-secret"' \
    'grant = "authorization_code"' "redirect_uri = \"$redirect_uri\"" >"$work/proxy.toml"
  start_serve "$work/proxy.toml" "$work/serve.log" || return 1
  serve_pid=$started_pid
}

# The status page: `sfmc-proxy serve` with three tenants on the demo's fake
# tenant — demo (its credentials, business units 100 and 200, prefetched),
# broken (a wrong client secret: SFMC's invalid_client) and web (an
# authorization-code tenant nobody logged in to).
start_status_proxy() {
  local ports proxy_port callback_port
  ports=$(free_ports) || return 1
  read -r proxy_port callback_port <<<"$ports"
  status_proxy_url=http://127.0.0.1:$proxy_port/
  printf '%s\n' \
    '[server]' "listen = \"127.0.0.1:$proxy_port\"" '' \
    '[token]' "store_file = \"$work/status-state/tokens.json\"" '' \
    '[tenants.demo]' "auth_url = \"$fake_url\"" 'default = true' \
    'client_id = "fake-client-id"' 'client_secret = "fake-client-secret"' \
    'account_id = "100"' 'account_ids = ["100", "200"]' '' \
    '[tenants.broken]' "auth_url = \"$fake_url\"" \
    'client_id = "fake-client-id"' 'client_secret = "not-the-secret"' '' \
    '[tenants.web]' "auth_url = \"$fake_url\"" \
    'client_id = "fake-client-id"' 'client_secret = "fake-client-secret"' \
    'grant = "authorization_code"' \
    "redirect_uri = \"https://127.0.0.1:$callback_port/callback\"" >"$work/status.toml"
  start_serve "$work/status.toml" "$work/status.log" || return 1
  status_pid=$started_pid
}

if [ "$target" = proxy ]; then
  step "sfmc-proxy serve with an authorization-code tenant (web) on the fake"
  if start_login_proxy; then
    echo "proxy $login_proxy_url, redirect_uri $redirect_uri"
    run_client "browser login (Chromium)" "${login_proxy_url}_proxy/login?tenant=web" \
      env E2E_PROXY_URL="$login_proxy_url" E2E_TENANT=web E2E_REDIRECT_URI="$redirect_uri" \
      E2E_FAKE_URL="$fake_url" E2E_CHROMIUM="$chromium" node browser_login.mjs
  else
    failed=$((failed + 1))
    failures+=("browser login (Chromium)")
  fi

  step "sfmc-proxy serve with tenants demo, broken and web, for the status page"
  if start_status_proxy; then
    echo "proxy $status_proxy_url"
    mkdir -p "$root/target"
    run_client "status page (Chromium)" "${status_proxy_url}_proxy/status" \
      env E2E_PROXY_URL="$status_proxy_url" E2E_SCREENSHOT="$root/target/status-page.png" \
      E2E_CHROMIUM="$chromium" node status_page.mjs
  else
    failed=$((failed + 1))
    failures+=("status page (Chromium)")
  fi
fi

# A fleet: three `sfmc-proxy serve` replicas of tenant "demo" on the demo's
# fake tenant, sharing tokens through a real redis-server ([redis]), behind
# Debian's HAProxy (round robin). The SDKs authenticate at the load balancer
# and each of their calls may land on another replica: the broker's local
# tokens are sealed for the fleet, and the fleet asks SFMC for one token.
start_fleet() {
  local ports p i
  ports=$(free_ports 4) || return 1
  read -r -a p <<<"$ports"
  lb_url=http://127.0.0.1:${p[3]}/
  replica_urls=()
  redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 \
    --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" &
  fleet_pids+=($!)
  for i in 0 1 2; do
    printf '%s\n' \
      '[server]' "listen = \"127.0.0.1:${p[$i]}\"" '' \
      '[redis]' "url = \"unix://$work/redis.sock\"" \
      'encryption_key = "e2e-fleet-encryption-key-0123456789abcdef"' '' \
      '[tenants.demo]' "auth_url = \"$fake_url\"" \
      'client_id = "fake-client-id"' 'client_secret = "fake-client-secret"' \
      'account_id = "100"' >"$work/fleet-$i.toml"
    start_serve "$work/fleet-$i.toml" "$work/fleet-$i.log" || return 1
    fleet_pids+=("$started_pid")
    replica_urls+=("http://127.0.0.1:${p[$i]}/")
  done
  printf '%s\n' 'defaults' '  mode http' '  timeout connect 5s' '  timeout client 60s' \
    '  timeout server 60s' '' 'frontend fleet' "  bind 127.0.0.1:${p[3]}" \
    '  default_backend replicas' '' 'backend replicas' '  balance roundrobin' \
    '  option httpchk GET /_proxy/health' \
    "  server r0 127.0.0.1:${p[0]} check inter 1s" \
    "  server r1 127.0.0.1:${p[1]} check inter 1s" \
    "  server r2 127.0.0.1:${p[2]} check inter 1s" >"$work/haproxy.cfg"
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  fleet_pids+=($!)
  local tries=0
  until python3 -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "_proxy/health", timeout=2)' "$lb_url" 2>/dev/null; do
    if [ "$tries" -ge 100 ]; then
      echo "FAIL: HAProxy did not answer on $lb_url:" >&2
      cat "$work/haproxy.cfg" "$work/haproxy.log" >&2
      return 1
    fi
    tries=$((tries + 1))
    sleep 0.1
  done
}


if [ "$target" = proxy ]; then
  step "a fleet: three replicas sharing tokens through Redis, behind HAProxy"
  for need in redis-server:redis-server haproxy:haproxy; do
    command -v "${need%%:*}" >/dev/null && continue
    if [ "$(id -u)" -ne 0 ]; then
      echo "FAIL: ${need%%:*} is missing and this is not root: install Debian's ${need##*:}" \
        "(sudo apt-get install --no-install-recommends ${need##*:}), then run again" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need##*:}" >/dev/null
  done
  if start_fleet; then
    echo "load balancer $lb_url over ${replica_urls[*]}"
    run_client "FuelSDK-Python via HAProxy" "$lb_url" "$venv/bin/python" fuelsdk_client.py
    run_client "fuel-auth + fuel-rest via HAProxy" "$lb_url" node fuel_rest_client.js
    run_client "sfmc-sdk via HAProxy" "$lb_url" node sfmc_sdk_client.mjs
    run_client "one token for the fleet" "${replica_urls[*]}" \
      python3 fleet_counts.py "${replica_urls[@]}"
  else
    failed=$((failed + 1))
    failures+=("fleet behind HAProxy")
  fi
fi

if [ "$failed" -gt 0 ]; then
  printf '\nfailed: %s; the demo'\''s output and log:\n' "${failures[*]}"
  tail -n 40 "$work/demo.out" "$work/demo.log" || true
  if [ -f "$work/serve.log" ]; then
    printf '\nthe login proxy'\''s log:\n'
    tail -n 40 "$work/serve.log" || true
  fi
  if [ -f "$work/status.log" ]; then
    printf '\nthe status page proxy'\''s log:\n'
    tail -n 40 "$work/status.log" || true
  fi
fi
echo
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
