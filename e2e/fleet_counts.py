"""After the SDKs ran through the load balancer: the fleet sent SFMC one
token request, and every replica served API calls (so the calls really were
spread, and the local tokens one replica issued were honoured by the others).

Usage: fleet_counts.py REPLICA_URL...   (each ending in "/"; loopback only)
Exits 0 when both hold, 1 (with a FAIL line) when not.
"""

import re
import sys
import urllib.parse
import urllib.request

TOKENS = re.compile(r'^sfmc_proxy_token_requests_total\{[^}]*result="ok"[^}]*\} (\S+)$', re.M)
SERVED = re.compile(r'^sfmc_proxy_requests_total\{tenant="demo",api="(?:rest|soap)"[^}]*\} (\S+)$', re.M)


def main(urls):
    tokens = 0.0
    for url in urls:
        if urllib.parse.urlsplit(url).hostname not in ("127.0.0.1", "localhost"):
            sys.exit(f"FAIL: {url} is not loopback")
        text = urllib.request.urlopen(url + "_proxy/metrics", timeout=5).read().decode()
        sent = sum(float(n) for n in TOKENS.findall(text))
        served = sum(float(n) for n in SERVED.findall(text))
        print(f"{url}: {served:.0f} API calls served, {sent:.0f} token requests sent")
        tokens += sent
        if served < 1:
            sys.exit(f"FAIL: {url} served no API call: the load balancer did not spread them")
    if tokens != 1:
        sys.exit(f"FAIL: the fleet sent {tokens:.0f} token requests to SFMC, not 1")
    print("one token request for the whole fleet")


if __name__ == "__main__":
    main(sys.argv[1:])
