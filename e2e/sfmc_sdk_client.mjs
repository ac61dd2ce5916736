// sfmc-sdk (the client library under mcdev) end to end: one REST GET and one
// SOAP Retrieve, unmodified, through an auth_url that passes its check.
//
// sfmc-sdk 2.1.2 refuses any auth_url in which this unanchored regex finds no
// match (lib/auth.js):
//     /https:\/\/[\da-z-]{28}\.auth\.marketingcloudapis\.com\//gm
// and then posts the token request with axios to baseURL auth_url + url
// "/v2/token" (trailing slashes of auth_url dropped). The match may sit in the
// URL's fragment, which no HTTP client sends; so the proxy's token URL plus a
// fragment holding an SFMC-shaped URL passes the check and reaches the proxy:
//     http://127.0.0.1:8080/v2/token#https://mcxxxxxxxxxxxxxxxxxxxxxxxxxx.auth.marketingcloudapis.com/
// (axios sends POST /v2/token; nothing is sent to marketingcloudapis.com). REST
// and SOAP then go to the token response's rest_instance_url and
// soap_instance_url + "/Service.asmx". See SFMC_SDK.md.
//
// Settings (environment):
//   E2E_AUTH_URL       the Authentication Base URI (e.g. http://127.0.0.1:8080/)
//   E2E_CLIENT_ID      through the proxy: the tenant name (e.g. demo)
//   E2E_CLIENT_SECRET  through a loopback proxy: anything
//   E2E_ACCOUNT_ID     the business unit's MID (sfmc-sdk requires it)
//
// Exits 0 when both calls succeed, 1 when one fails, 2 on a usage error.

import './loopback-guard.cjs';
import SDK from 'sfmc-sdk';
import redactModule from './redact.cjs';

const { redact } = redactModule;

const NAME = 'sfmc-sdk';
const MARKER = 'https://mcxxxxxxxxxxxxxxxxxxxxxxxxxx.auth.marketingcloudapis.com/';
const PATH = '/hub/v1/campaigns';

function setting(name) {
    const value = (process.env[name] || '').trim();
    if (!value) {
        console.error(`${NAME}: FAIL: ${name} is not set (see the top of sfmc_sdk_client.mjs)`);
        process.exit(2);
    }
    return value;
}

function describe(error) {
    const status = error.response?.status ? `HTTP ${error.response.status}, ` : '';
    return `${error.name || 'Error'}: ${error.message} (${status}code ${error.code})`;
}

async function rest(sdk, accountId) {
    let body;
    try {
        body = await sdk.rest.get(PATH);
    } catch (error) {
        return `GET ${PATH} failed: ${describe(error)}`;
    }
    if (body && body.token_number !== undefined) {
        // The fake tenant's echo: check what SFMC saw.
        if (body.path !== PATH) return `the fake saw the path ${body.path}, not ${PATH}`;
        if (body.account_id !== accountId) {
            return `the fake saw a token for MID ${body.account_id}, not ${accountId}`;
        }
        console.log(`  REST  GET ${body.path} -> 200 (the fake saw MID ${body.account_id})`);
    } else {
        console.log(`  REST  GET ${PATH} -> 200`);
    }
    return null;
}

async function soap(sdk, accountId) {
    let body;
    try {
        body = await sdk.soap.retrieve('List', ['ID', 'ListName', 'CustomerKey'], {
            filter: { leftOperand: 'ListName', operator: 'equals', rightOperand: 'e2e' },
        });
    } catch (error) {
        return `Retrieve List failed: ${describe(error)}`; // a fault's faultstring is the message
    }
    if (body.OverallStatus !== 'OK') return `Retrieve List -> OverallStatus ${body.OverallStatus}`;
    const results = body.Results || [];
    const foreign = results.find((r) => r.Client?.ID !== undefined && String(r.Client.ID) !== accountId);
    if (foreign) return `a Retrieve result belongs to MID ${foreign.Client.ID}, not ${accountId}`;
    console.log(`  SOAP  Retrieve List -> OK, ${results.length} result(s), MID ${accountId}`);
    return null;
}

async function main() {
    const base = setting('E2E_AUTH_URL');
    const accountId = setting('E2E_ACCOUNT_ID');
    const authUrl = `${base.replace(/\/+$/, '')}/v2/token#${MARKER}`;
    const sdk = new SDK({
        client_id: setting('E2E_CLIENT_ID'),
        client_secret: setting('E2E_CLIENT_SECRET'),
        auth_url: authUrl,
        account_id: accountId,
    });
    let session;
    try {
        session = await sdk.auth.getAccessToken();
    } catch (error) {
        throw new Error(`token request with auth_url ${authUrl} failed: ${describe(error)}`);
    }
    console.log(
        `${NAME}: token via auth_url ${authUrl}; rest_instance_url ${session.rest_instance_url}, ` +
            `soap_instance_url ${session.soap_instance_url}`
    );
    const failures = [await rest(sdk, accountId), await soap(sdk, accountId)].filter(Boolean);
    for (const failure of failures) console.error(`${NAME}: FAIL: ${redact(failure)}`);
    if (failures.length) process.exit(1);
    console.log(`${NAME}: ok (REST and SOAP)`);
}

main().catch((error) => {
    console.error(`${NAME}: FAIL: ${redact(error.message)}`);
    process.exit(1);
});
