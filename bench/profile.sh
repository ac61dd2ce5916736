#!/usr/bin/env bash
# Instruction profile of sfmc-proxy's hot path with valgrind's callgrind, which
# counts instructions rather than time and so gives the same answer on a busy
# machine (perf's hardware counters are "not supported" in this VM).
#
#   bench/profile.sh                  # builds `--profile profiling`, 1 KiB responses
#   SIZE=64k bench/profile.sh         # 64 KiB responses
#   BIN=path/to/sfmc-proxy bench/profile.sh
#   RUST_LOG=info bench/profile.sh    # with the access log (default: warn, none)
#
# Prints instructions per proxied request and leaves the callgrind file in
# bench/results/profile/ for callgrind_annotate or kcachegrind (not committed).
# Loopback only: an nginx origin on 127.0.0.1:19080, the proxy on :19082.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; }
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
if [ -z "${BIN:-}" ]; then
  cargo build --profile profiling --locked --bin sfmc-proxy
  BIN=target/profiling/sfmc-proxy
fi
SIZE=${SIZE:-1k}
OUT=bench/results/profile; mkdir -p "$OUT"
W=$(mktemp -d /dev/shm/sfmc-profile-XXXXXX); chmod 755 "$W"; mkdir -m 777 "$W/tmp" "$W/www"
trap 'kill $VG $NG 2>/dev/null || true; rm -rf "$W"' EXIT
python3 -c "
import sys; sys.path.insert(0, 'bench'); import bench
open('$W/www/1k.json','wb').write(bench.json_body(1024)); open('$W/www/64k.json','wb').write(bench.json_body(65536))"
cat > "$W/origin.conf" <<NGINX
worker_processes 1; pid $W/origin.pid; error_log $W/origin.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $W/tmp/b; proxy_temp_path $W/tmp/p;
  types { application/json json; }
  server { listen 127.0.0.1:19080;
    location = /v2/token { default_type application/json;
      return 200 '{"access_token":"profile-token","token_type":"Bearer","expires_in":1080,"rest_instance_url":"http://127.0.0.1:19080/"}'; }
    location /data/ { alias $W/www/; } } }
NGINX
cat > "$W/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:19082"
[tenants.profile]
auth_url = "http://127.0.0.1:19080/"
client_id = "profile-client"
client_secret = "profile-secret"
TOML
taskset -c 1 nginx -p "$W" -e "$W/origin.log" -c "$W/origin.conf" -g 'daemon off;' & NG=$!
RUST_LOG="${RUST_LOG:-warn}" taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
  "$BIN" --config "$W/proxy.toml" 2>"$W/valgrind.log" & VG=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:19082/data/$SIZE.json" && break; sleep 0.3; done
taskset -c 1 wrk -t1 -c16 -d3s "http://127.0.0.1:19082/data/$SIZE.json" >/dev/null   # warm-up
callgrind_control -z "$VG" >/dev/null                                                 # count from here
taskset -c 1 wrk -t1 -c16 -d"${DURATION:-15}"s "http://127.0.0.1:19082/data/$SIZE.json" > "$W/wrk.txt"
callgrind_control -d "$VG" >/dev/null                                                 # ... to here
kill "$VG"; wait "$VG" 2>/dev/null || true
requests=$(grep -oE '[0-9]+ requests in' "$W/wrk.txt" | cut -d' ' -f1)
total=$(callgrind_annotate "$OUT/callgrind.out.1" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | tr -d ',' | awk '{print $1}')
echo "requests: $requests  instructions: $total  per request: $((total / requests))"
echo "profile: $OUT/callgrind.out.1  (callgrind_annotate --inclusive=yes $OUT/callgrind.out.1 | less)"
