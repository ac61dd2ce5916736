// sfmc-proxy: send this collection's requests to the proxy instead of SFMC.
//
// Use as the collection-level Pre-request Script, in place of the official
// collection's one (that one asks SFMC for a token with your client secret;
// through the proxy nothing here holds a secret). Requests keep their
// `https://{{et_subdomain}}.rest.marketingcloudapis.com/...` URLs: this script
// changes the scheme, host and port of any *.marketingcloudapis.com (or
// *.exacttargetapis.com) URL to `proxy_url` before the request is sent, and
// keeps its path and query (after any path in `proxy_url`).
//
// It also asks the proxy's token broker (`POST {proxy_url}/v2/token`) for a
// local token and stores it as `dne_etAccessToken`, the variable the official
// collection's REST and SOAP requests use (`Authorization: Bearer ...`,
// `<fueloauth>`). The broker answers with the live local token it already
// gave this client while at least half its lifetime is left, so asking before
// every request costs no token request to SFMC and survives a proxy restart.
// et_clientId is a tenant's name in proxy.toml (or its real client id): the
// token, and so every request, is bound to that tenant. et_clientSecret is its
// local secret (broker.client_secrets; anything on a loopback proxy without
// one), et_mid the business unit.
//
// Needs the Postman desktop app or the Postman Agent on the proxy's machine:
// the web app's browser requests carry an Origin the proxy refuses.

const context = pm.environment.name ? pm.environment : pm.collectionVariables;
const proxyUrl = String(pm.variables.get('proxy_url') || 'http://127.0.0.1:8080').trim();
const proxy = /^(https?):\/\/(\[[^\]]+\]|[^/:?#]+)(?::(\d+))?(\/[^?#]*)?$/i.exec(proxyUrl);
if (!proxy) {
    throw new Error(`proxy_url must be like http://127.0.0.1:8080, not ${JSON.stringify(proxyUrl)}`);
}
const [, scheme, host, port, prefix = ''] = proxy;
const prefixPath = prefix.split('/').filter(Boolean);

// `{{et_subdomain}}` is not resolved yet when this runs: match the host as written.
const SFMC_HOST = /(^|\.)(marketingcloudapis|exacttargetapis)\.com$/i;

function toProxy(url) {
    if (!SFMC_HOST.test(url.getHost())) return false;
    url.protocol = scheme.toLowerCase();
    url.host = host.startsWith('[') ? [host] : host.split('.');
    url.port = port;
    url.auth = undefined;
    if (prefixPath.length) url.path = prefixPath.concat(url.path || []);
    return true;
}

const url = pm.request.url;
const rewritten = toProxy(url);
const isTokenRequest = /(^|\/)v2\/token$/.test(url.getPath());

if (rewritten && !isTokenRequest) {
    pm.sendRequest({
        url: `${scheme}://${host}${port ? ':' + port : ''}${prefix.replace(/\/+$/, '')}/v2/token`,
        method: 'POST',
        header: { 'Content-Type': 'application/json' },
        body: {
            mode: 'raw',
            raw: JSON.stringify({
                grant_type: 'client_credentials',
                client_id: pm.variables.get('et_clientId'),
                client_secret: pm.variables.get('et_clientSecret') || 'local',
                account_id: pm.variables.get('et_mid') || undefined,
            }),
        },
    }, (err, res) => {
        const body = !err && res.code === 200 ? res.json() : null;
        if (body && body.access_token) {
            context.set('dne_etAccessToken', body.access_token);
            context.set('dne_tokenRefreshTime', Date.now());
        } else {
            context.unset('dne_etAccessToken');
            const why = err ? err.message : `${res.code} ${res.text()}`;
            console.error(`sfmc-proxy: no local token from ${proxyUrl}/v2/token: ${why}`);
        }
    });
}
