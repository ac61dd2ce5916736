// The status page as a person sees it, in a real headless browser: Debian's
// Chromium, driven by playwright-core, opens the proxy's /_proxy/status and
// what it shows is read from the DOM: each tenant's name and state badge,
// "age …" and "expires in …" for a token, SFMC's own words for a refused
// package, the login command for a login tenant. A screenshot is written for
// a human to look at. Then "drop cached token" is clicked on one key and the
// page after it must say so and show that key without a token. The page must
// break none of its own Content-Security-Policy and ask for nothing beyond
// loopback.
//
// Settings (environment; run.sh sets them):
//   E2E_PROXY_URL      the proxy, e.g. http://127.0.0.1:8080/, with tenants
//                      demo (default; business units 100 and 200), broken (a
//                      wrong client secret) and web (authorization code, no
//                      login yet), as run.sh configures them
//   E2E_SCREENSHOT     where to write the PNG, e.g. target/status-page.png
//   E2E_CHROMIUM       optional: the browser (default /usr/bin/chromium)
//   E2E_STEP_TIMEOUT   optional: seconds for each step (default 10)
//
// Exits 0 when everything holds, 1 with a "FAIL:" line when something does
// not, 2 on a usage error. Every wait is bounded; the whole run is cut at 5
// steps' worth of time.

import './loopback-guard.cjs'; // first: before anything connects
import { launch } from './chromium.mjs';
import redactModule from './redact.cjs';

const { redact } = redactModule;

const NAME = 'status page';

function setting(name, fallback) {
    const value = (process.env[name] || '').trim() || fallback;
    if (!value) {
        console.error(`${NAME}: FAIL: ${name} is not set (see the top of status_page.mjs)`);
        process.exit(2);
    }
    return value;
}

const proxyUrl = setting('E2E_PROXY_URL').replace(/\/*$/, '/');
const screenshot = setting('E2E_SCREENSHOT');
const chromiumPath = setting('E2E_CHROMIUM', '/usr/bin/chromium');
const stepMs = 1000 * Number(setting('E2E_STEP_TIMEOUT', '10'));
if (!(stepMs > 0)) {
    console.error(`${NAME}: FAIL: E2E_STEP_TIMEOUT must be a positive number of seconds`);
    process.exit(2);
}

class Failure extends Error {}
const fail = (message) => {
    throw new Failure(message);
};

const watchdog = setTimeout(() => {
    console.error(`${NAME}: FAIL: not done within ${(5 * stepMs) / 1000} s`);
    process.exit(1);
}, 5 * stepMs);
watchdog.unref();

// From Node (not the browser): a request for business unit 200, so that the
// page has a second key of `demo` to drop.
async function requestForBusinessUnit(mid) {
    const url = new URL('hub/v1/e2e-status', proxyUrl);
    let response;
    try {
        response = await fetch(url, {
            headers: { 'X-SFMC-Account-Id': mid },
            signal: AbortSignal.timeout(stepMs),
        });
    } catch (error) {
        fail(`GET ${url} failed: ${error.message}${error.cause ? ` (${error.cause.message})` : ''}`);
    }
    const text = await response.text();
    if (response.status !== 200) fail(`GET ${url} for MID ${mid} -> ${response.status}: ${text}`);
}

// What a person reads: the visible text of an element.
async function seen(page, selector) {
    const element = page.locator(selector);
    if ((await element.count()) !== 1) {
        const body = await page.locator('body').innerText({ timeout: stepMs }).catch(() => '');
        fail(`the page has ${await element.count()} of ${selector}, not one; it shows:\n${body}`);
    }
    return (await element.innerText({ timeout: stepMs })).replace(/\s+/g, ' ').trim();
}

function expect(text, pattern, what) {
    const ok = typeof pattern === 'string' ? text.includes(pattern) : pattern.test(text);
    if (!ok) fail(`${what}: expected ${pattern} in "${text}"`);
}

async function checkPage(page) {
    expect(await seen(page, 'header h1'), 'sfmc-proxy', 'the header');
    expect(await seen(page, 'header .meta'), /version \d+\.\d+\.\d+ · up \d+/, 'the header');
    const states = { demo: 'ready', broken: 'failing', web: 'login required' };
    for (const [tenant, state] of Object.entries(states)) {
        const section = `section[data-tenant="${tenant}"]`;
        expect(await seen(page, `${section} h2 .name`), tenant, `tenant ${tenant}'s name`);
        expect(await seen(page, `${section} .badge`), state.toUpperCase(), `tenant ${tenant}'s state`);
    }
    const own = await seen(page, 'section[data-tenant="demo"] tr[data-account-id="100"] td.token');
    expect(own, /^age \d+s · expires in 1[78]m/, "demo's token (the fake's 1080 s)");
    const other = await seen(page, 'section[data-tenant="demo"] tr[data-account-id="200"] td.token');
    expect(other, /^age \d+s · expires in/, "demo's token for MID 200");
    const counted = await seen(page, 'section[data-tenant="demo"] tr[data-account-id="200"] td.requests');
    if (counted !== '1') fail(`demo's MID 200 row counts ${counted} requests, not the 1 sent`);
    const refused = await seen(page, 'section[data-tenant="broken"] .problem');
    expect(refused, 'invalid_client', "broken's error");
    expect(refused, 'Invalid client ID. Use the client ID in Marketing Cloud Installed Packages.', "SFMC's words");
    const login = await seen(page, 'section[data-tenant="web"] .login');
    // With the config the proxy was started with, as an absolute path.
    expect(login, /sfmc-proxy --config \/\S*status\.toml login --tenant web/, "web's login command");
    const whole = await page.content();
    if (whole.includes('fake-client-secret')) fail('the page shows the client secret');
    console.log(`${NAME}: demo ready (${own}), broken failing (SFMC: invalid_client), web login required`);
}

async function dropOne(page) {
    const row = 'section[data-tenant="demo"] tr[data-account-id="200"]';
    const [response] = await Promise.all([
        page.waitForNavigation({ waitUntil: 'load', timeout: stepMs }),
        page.click(`${row} button`, { timeout: stepMs }),
    ]);
    const landed = new URL(page.url());
    if (!response || response.status() !== 200 || landed.pathname !== '/_proxy/status') {
        fail(`after "drop cached token" the browser is on ${page.url()} (HTTP ${response?.status()})`);
    }
    if (landed.searchParams.get('dropped') !== 'demo' || landed.searchParams.get('account_id') !== '200') {
        fail(`the page after the drop is ${page.url()}, not ?dropped=demo&account_id=200`);
    }
    expect(await seen(page, '.notice'), 'Dropped the cached token of demo · MID 200', 'the notice');
    expect(await seen(page, `${row} td.token`), 'no token', 'the dropped key');
    console.log(`${NAME}: clicked "drop cached token" for demo MID 200 -> 303 -> the page says it is dropped`);
}

async function main() {
    await requestForBusinessUnit('200');
    const browser = await launch({ executablePath: chromiumPath, timeout: stepMs, fail });
    const violations = [];
    try {
        const { page } = browser;
        page.on('console', (message) => {
            if (message.type() === 'error') violations.push(message.text());
        });
        const url = `${proxyUrl}_proxy/status`;
        const response = await page.goto(url, { waitUntil: 'load', timeout: stepMs });
        if (!response || response.status() !== 200) {
            fail(`${url} answered HTTP ${response?.status()}: ${await response?.text().catch(() => '')}`);
        }
        const type = response.headers()['content-type'] || '';
        if (!type.startsWith('text/html')) fail(`${url} answered ${type}, not HTML, to the browser`);
        await checkPage(page);
        await page.screenshot({ path: screenshot, fullPage: true, timeout: stepMs });
        console.log(`${NAME}: screenshot ${screenshot}`);
        await dropOne(page);
        if (violations.length) fail(`the browser reported errors: ${violations.join(' | ')}`);
        if (browser.strays.length) fail(`the browser tried to leave the machine: ${browser.strays.join(', ')}`);
    } finally {
        await browser.close();
    }
    console.log(`${NAME}: ok`);
}

main()
    .then(() => process.exit(0))
    .catch((error) => {
        const message = error instanceof Failure ? error.message : error.stack || String(error);
        console.error(`${NAME}: FAIL: ${redact(message, 1500)}`);
        process.exit(1);
    });
