'use strict';
// Postman, as newman runs it: examples/postman/'s sample collection with its
// environment, through the proxy. The collection's URLs are SFMC's own
// (https://{{et_subdomain}}.rest.marketingcloudapis.com/...); its collection-level
// Pre-request Script (examples/postman/sfmc-proxy.prerequest.js, embedded) must
// send every request to proxy_url, and take a local token from the proxy's
// /v2/token for the requests' {{dne_etAccessToken}}.
//
// Settings (environment):
//   E2E_PROXY_URL   the proxy, e.g. http://127.0.0.1:8080/ (newman's --env-var proxy_url=…)
//
// Passes when every request ran against the loopback proxy and every one of
// the collection's tests passed (and there were tests). Exits 0 / 1, 2 on a
// usage error.

const { isLoopback } = require('./loopback-guard.cjs');
const fs = require('node:fs');
const path = require('node:path');
const newman = require('newman');

const NAME = 'postman (newman)';
const DIR = path.join(__dirname, '..', 'examples', 'postman');
const COLLECTION = path.join(DIR, 'sfmc-proxy-sample.postman_collection.json');
const ENVIRONMENT = path.join(DIR, 'sfmc-proxy.postman_environment.json');
const SCRIPT = path.join(DIR, 'sfmc-proxy.prerequest.js');
// Four requests, each with its tests: fewer assertions means a test went missing.
const MIN_ASSERTIONS = 12;

function fail(message) {
    console.error(`${NAME}: FAIL: ${message}`);
    process.exit(1);
}

// What is shipped: SFMC's hosts in the collection, and the .js file embedded as
// the collection-level pre-request script, so the two cannot drift apart.
function checkShipped(collection) {
    const urls = [];
    const walk = (items) => items.forEach((item) => (item.item ? walk(item.item) : urls.push(item.request.url.raw)));
    walk(collection.item);
    const notSfmc = urls.filter((u) => !/^https:\/\/\{\{et_subdomain\}\}\.(auth|rest|soap)\.marketingcloudapis\.com\//.test(u));
    if (urls.length === 0 || notSfmc.length) fail(`the collection's URLs must be SFMC's own, not ${JSON.stringify(notSfmc)}`);
    const pre = (collection.event || []).filter((e) => e.listen === 'prerequest');
    const file = fs.readFileSync(SCRIPT, 'utf8').replace(/\n$/, '');
    if (pre.length !== 1 || pre[0].script.exec.join('\n') !== file) {
        fail(`the collection-level pre-request script is not ${path.basename(SCRIPT)} as it is`);
    }
    return urls.length;
}

function main() {
    const proxyUrl = (process.env.E2E_PROXY_URL || '').trim();
    if (!proxyUrl) {
        console.error(`${NAME}: FAIL: E2E_PROXY_URL is not set`);
        process.exit(2);
    }
    if (!isLoopback(new URL(proxyUrl).hostname)) fail(`E2E_PROXY_URL must be on loopback, not ${proxyUrl}`);
    const collection = JSON.parse(fs.readFileSync(COLLECTION, 'utf8'));
    const requests = checkShipped(collection);
    newman.run({
        collection,
        environment: ENVIRONMENT,
        envVar: [{ key: 'proxy_url', value: proxyUrl }],
        reporters: ['cli'],
        reporter: { cli: { noBanner: true } },
        color: 'off',
        timeoutRequest: 20000,
        ignoreRedirects: true,
    }, (error, summary) => {
        if (error) fail(`newman could not run: ${error.message}`);
        const { stats, failures, executions } = summary.run;
        const problems = failures.map((f) => `${f.source && f.source.name}: ${f.error && f.error.message}`);
        // (executions also holds the script's own calls to /v2/token: count items)
        const ran = new Set(executions.map((e) => e.item.id)).size;
        if (ran !== requests) problems.push(`${ran} of the collection's ${requests} requests ran`);
        for (const { request } of executions) {
            const host = request.url.getHost();
            if (!isLoopback(host)) problems.push(`a request went to ${host}, not the proxy`);
        }
        if (stats.assertions.total < MIN_ASSERTIONS) {
            problems.push(`only ${stats.assertions.total} assertions ran (expected at least ${MIN_ASSERTIONS})`);
        }
        if (problems.length) fail(problems.join('; '));
        console.log(`${NAME}: OK: ${ran} requests (${executions.length} with the token calls) to ${proxyUrl}, ` +
            `${stats.assertions.total} assertions passed`);
    });
}

main();
