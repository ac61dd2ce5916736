'use strict';
// fuel-auth + fuel-rest (the Node FuelSDK's auth and REST clients) end to end:
// an OAuth2 (authVersion 2) token, then one REST GET with fuel-rest.
//
// Settings (environment):
//   E2E_AUTH_URL       the Authentication Base URI (e.g. http://127.0.0.1:8080/);
//                      fuel-auth posts to `authUrl` as given, so it gets "<base>/v2/token"
//   E2E_CLIENT_ID      through the proxy: the tenant name (e.g. demo)
//   E2E_CLIENT_SECRET  through a loopback proxy: anything
//   E2E_ACCOUNT_ID     the business unit's MID (authOptions.accountId)
//
// How fuel-rest 3.2.2 picks the URL with authVersion 2 (lib/helpers.js,
// resolveUriForOAuth2): it resolves `uri` against `origin`, LOWER-CASES the
// result, splits it at the first ".com/" and appends what follows to the token
// response's rest_instance_url. So the request always goes to rest_instance_url
// (here: the proxy), and `origin` only has to contain ".com/": keep its default
// (https://www.exacttargetapis.com, never contacted). Passing the proxy's URL
// as `origin` (no ".com/" in it) would send the request to
// "<rest_instance_url>undefined". Paths and queries reach the server lower-cased.
//
// Exits 0 when the call succeeds, 1 when it fails, 2 on a usage error.

const { isLoopback } = require('./loopback-guard.cjs');
const { redact } = require('./redact.cjs');
const FuelAuth = require('fuel-auth');
const FuelRest = require('fuel-rest');

const NAME = 'fuel-auth+fuel-rest';
const PATH = '/hub/v1/campaigns';

function setting(name) {
    const value = (process.env[name] || '').trim();
    if (!value) {
        console.error(`${NAME}: FAIL: ${name} is not set (see the top of fuel_rest_client.js)`);
        process.exit(2);
    }
    return value;
}

async function main() {
    const base = setting('E2E_AUTH_URL');
    const accountId = setting('E2E_ACCOUNT_ID');
    const authUrl = new URL('v2/token', base.endsWith('/') ? base : base + '/').href;
    const auth = new FuelAuth({
        clientId: setting('E2E_CLIENT_ID'),
        clientSecret: setting('E2E_CLIENT_SECRET'),
        authUrl,
        authOptions: { authVersion: 2, accountId },
    });
    let token;
    try {
        token = await auth.getAccessToken();
    } catch (error) {
        throw new Error(`token request to ${authUrl} failed: ${error.message}`);
    }
    if (!token.accessToken) {
        const { error, error_description: description } = token;
        throw new Error(`no access_token from ${authUrl}: ${error || ''} ${description || JSON.stringify(token)}`);
    }
    const restUrl = token.rest_instance_url;
    console.log(`${NAME}: token from ${authUrl}; rest_instance_url ${restUrl}`);

    const rest = new FuelRest({ auth }); // origin: default, see above
    const { res, body } = await rest.get({ uri: PATH });
    const sentTo = res.request.uri.href;
    if (!sentTo.startsWith(restUrl) || !isLoopback(res.request.uri.hostname)) {
        throw new Error(`fuel-rest sent the request to ${sentTo}, not to rest_instance_url ${restUrl}`);
    }
    if (res.statusCode !== 200) {
        throw new Error(`GET ${sentTo} -> ${res.statusCode}: ${JSON.stringify(body)}`);
    }
    if (body && body.token_number !== undefined) {
        // The fake tenant's echo: check what SFMC saw.
        if (body.path !== PATH) throw new Error(`the fake saw the path ${body.path}, not ${PATH}`);
        if (body.account_id !== accountId) {
            throw new Error(`the fake saw a token for MID ${body.account_id}, not ${accountId}`);
        }
        console.log(`  REST  GET ${body.path} -> 200 (the fake saw MID ${body.account_id})`);
    } else {
        console.log(`  REST  GET ${sentTo} -> 200`);
    }
    console.log(`${NAME}: ok (REST)`);
}

main().catch((error) => {
    console.error(`${NAME}: FAIL: ${redact(error.message)}`);
    process.exit(1);
});
