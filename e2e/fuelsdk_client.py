#!/usr/bin/env python3
"""FuelSDK-Python (PyPI: Salesforce-FuelSDK) end to end: one REST call, one SOAP Retrieve.

The SDK is used as its users use it: an ET_Client with OAuth2 settings, then the
SDK's own objects. ET_Client posts to `authenticationurl + "/v2/token"` and then
takes every address from the token response: REST goes to `rest_instance_url +
path` (a double slash after the host when the URL ends in "/", as SFMC's do) and
SOAP to `soap_instance_url + "service.asmx"` (lower case).

Settings (environment):
  E2E_AUTH_URL       `authenticationurl`, used verbatim (e.g. http://127.0.0.1:8080/)
  E2E_CLIENT_ID      `clientid` (through the proxy: the tenant name, e.g. demo)
  E2E_CLIENT_SECRET  `clientsecret` (through a loopback proxy: anything)
  E2E_ACCOUNT_ID     `accountId`, the business unit's MID
  E2E_WSDL           optional; default: partner-api-retrieve.wsdl beside this file
  E2E_DEBUG=1        optional; suds logs its envelopes (tokens included)

Exits 0 when both calls succeed, 1 when one fails, 2 on a usage error. Any
attempt to connect beyond the loopback interface fails the run: the test must
never leave the machine.
"""

import ipaddress
import os
import re
import shutil
import socket
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = "fuelsdk-python"


# Bearer tokens, fueloauth values and access_tokens in a failure message (an echo
# or an error body may hold one) are not printed, and long bodies are cut.
TOKENISH = re.compile(r"(?i)(bearer\s+|fueloauth[^>]*>|access_token['\"]?\s*[:=]\s*['\"]?)[^\s'\"<,}]+")


def redact(text, limit=800):
    text = TOKENISH.sub(r"\1[redacted]", str(text))
    return text if len(text) <= limit else text[:limit] + "…"


def fail(message, code=1):
    print(f"{NAME}: FAIL: {redact(message)}", file=sys.stderr)
    sys.exit(code)


def setting(name):
    value = os.environ.get(name, "").strip()
    if not value:
        fail(f"{name} is not set (see the top of {os.path.basename(__file__)})", 2)
    return value


def is_loopback(host):
    if host is None:
        return False
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def loopback_only():
    """Refuse any name lookup or connection that is not loopback, loudly."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if not is_loopback(host):
            raise OSError(f"e2e: refused to resolve {host!r}: this test must not leave the machine")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            raise OSError(f"e2e: refused to connect to {address[0]!r}: this test must not leave the machine")
        return real_connect(sock, address)

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect


def build_client(wsdl):
    import FuelSDK

    params = {
        "clientid": setting("E2E_CLIENT_ID"),
        "clientsecret": setting("E2E_CLIENT_SECRET"),
        "authenticationurl": setting("E2E_AUTH_URL"),
        "useOAuth2Authentication": "True",
        "accountId": setting("E2E_ACCOUNT_ID"),
        # A non-empty local file: without it the SDK downloads the WSDL from SFMC.
        "wsdl_file_local_loc": wsdl,
    }
    debug = os.environ.get("E2E_DEBUG") == "1"
    try:
        return FuelSDK.ET_Client(False, debug, params)
    except Exception as error:  # the SDK raises bare Exceptions
        endpoint = params["authenticationurl"].strip() + "/v2/token"  # as the SDK builds it
        fail(f"token request to {endpoint} failed: {error!r}")


def rest_call(client, mid):
    """ET_Campaign is one of FuelSDK's REST-backed objects: GET {rest}/hub/v1/campaigns."""
    import FuelSDK

    campaigns = FuelSDK.ET_Campaign()
    campaigns.auth_stub = client
    campaigns.props = {"$pageSize": "2"}
    try:
        response = campaigns.get()
    except Exception as error:
        return f"GET hub/v1/campaigns raised {error!r}"
    if not response.status or response.code != 200:
        return f"GET hub/v1/campaigns -> {response.code}: {response.results or response.message!r}"
    echo = response.results if isinstance(response.results, dict) else {}
    if "token_number" in echo:  # the fake tenant's echo: check what SFMC saw
        if not echo.get("path", "").endswith("/hub/v1/campaigns"):
            return f"the fake saw the path {echo.get('path')!r}, not .../hub/v1/campaigns"
        if echo.get("account_id") != mid:
            return f"the fake saw a token for MID {echo.get('account_id')!r}, not {mid!r}"
        print(f"  REST  GET {echo['path']}?{echo.get('query')} -> 200 (the fake saw MID {echo['account_id']})")
    else:
        print(f"  REST  GET hub/v1/campaigns -> 200")
    return None


def soap_call(client, mid):
    """ET_List.get: a SOAP Retrieve of List objects with a simple filter."""
    import FuelSDK

    lists = FuelSDK.ET_List()
    lists.auth_stub = client
    search = {"Property": "ListName", "SimpleOperator": "equals", "Value": "e2e"}
    try:
        response = lists.get(["ID", "ListName", "CustomerKey"], search)
    except Exception as error:
        return f"Retrieve List raised {error!r}"
    if not response.status or response.code != 200 or response.message != "OK":
        detail = response.results or response.message
        return f"Retrieve List -> HTTP {response.code}, status {response.message!r}: {detail!r}"
    results = list(response.results or [])
    for result in results:
        client_id = getattr(getattr(result, "Client", None), "ID", None)
        if client_id is not None and str(client_id) != mid:
            return f"a Retrieve result belongs to MID {client_id}, not {mid}"
    print(f"  SOAP  Retrieve List -> OK, {len(results)} result(s), MID {mid}")
    return None


def main():
    loopback_only()
    wsdl = os.environ.get("E2E_WSDL") or os.path.join(HERE, "partner-api-retrieve.wsdl")
    wsdl = os.path.abspath(wsdl)
    if not os.path.isfile(wsdl) or os.path.getsize(wsdl) == 0:
        fail(f"no WSDL at {wsdl}: FuelSDK would try to download one from SFMC", 2)
    mid = setting("E2E_ACCOUNT_ID")
    # suds caches the parsed WSDL under the temp dir for a day: use a fresh one.
    scratch = tempfile.mkdtemp(prefix="fuelsdk-e2e-")
    tempfile.tempdir = scratch
    try:
        client = build_client(wsdl)
        print(f"{NAME}: token from {client.auth_url.strip()}/v2/token; "
              f"REST base {client.base_api_url}, SOAP {client.soap_endpoint}")
        failures = [f for f in (rest_call(client, mid), soap_call(client, mid)) if f]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for failure in failures:
        print(f"{NAME}: FAIL: {redact(failure)}", file=sys.stderr)
    if failures:
        sys.exit(1)
    print(f"{NAME}: ok (REST and SOAP)")


if __name__ == "__main__":
    main()
