// A person's login, in a real headless browser: Debian's Chromium, driven by
// playwright-core, opens the proxy's /_proxy/login page, is sent to the fake
// SFMC tenant's /v2/authorize page, clicks "Allow", is redirected to the
// tenant's redirect_uri (the TLS listener the proxy started for this login)
// and must land on the callback page saying "Logged in". Then, through the
// proxy and without the browser, a REST call must return 200 and
// /_proxy/ready must turn 200.
//
// Settings (environment; run.sh sets them):
//   E2E_PROXY_URL      the proxy, e.g. http://127.0.0.1:8080/
//   E2E_TENANT         the authorization-code tenant to log in, e.g. web
//   E2E_REDIRECT_URI   that tenant's redirect_uri, e.g. https://127.0.0.1:8443/callback
//   E2E_FAKE_URL       optional: the fake tenant's URL (the page "Allow" is on)
//   E2E_CHROMIUM       optional: the browser (default /usr/bin/chromium)
//   E2E_STEP_TIMEOUT   optional: seconds for each step (default 10)
//
// Exits 0 when everything holds, 1 with a "FAIL:" line when something does not,
// 2 on a usage error. Every wait is bounded; the whole run is cut at 5 steps'
// worth of time (50 s by default, inside run.sh's 60 s).

import './loopback-guard.cjs'; // first: before anything connects
import { launch } from './chromium.mjs';
import redactModule from './redact.cjs';

const { redact } = redactModule;

const NAME = 'browser login';
const PATH = '/hub/v1/e2e-browser';

function setting(name, fallback) {
    const value = (process.env[name] || '').trim() || fallback;
    if (!value) {
        console.error(`${NAME}: FAIL: ${name} is not set (see the top of browser_login.mjs)`);
        process.exit(2);
    }
    return value;
}

const proxyUrl = setting('E2E_PROXY_URL').replace(/\/*$/, '/');
const tenant = setting('E2E_TENANT');
const redirectUri = setting('E2E_REDIRECT_URI');
const fakeUrl = (process.env.E2E_FAKE_URL || '').trim();
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

// Whatever happens, the process ends: a hung browser or server cannot hold the
// run (run.sh's `timeout` is the outer bound).
const watchdog = setTimeout(() => {
    console.error(`${NAME}: FAIL: not done within ${(5 * stepMs) / 1000} s`);
    process.exit(1);
}, 5 * stepMs);
watchdog.unref();

// Node's side (fetch), guarded by loopback-guard.cjs.
async function get(path) {
    const url = new URL(path.replace(/^\//, ''), proxyUrl);
    let response;
    try {
        response = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(stepMs) });
    } catch (error) {
        fail(`GET ${url} failed: ${error.message}${error.cause ? ` (${error.cause.message})` : ''}`);
    }
    const text = await response.text();
    let json = null;
    try {
        json = JSON.parse(text);
    } catch {
        // not JSON; the caller says what it expected
    }
    return { status: response.status, text, json };
}

async function browserLogin(page) {
    const start = `${proxyUrl}_proxy/login?tenant=${encodeURIComponent(tenant)}`;
    // The proxy answers 302 to the fake's /v2/authorize; the browser follows.
    const landed = await page.goto(start, { waitUntil: 'load', timeout: stepMs });
    if (!landed || landed.status() !== 200) {
        const body = landed ? await landed.text().catch(() => '') : '';
        fail(`${start} ended on ${page.url()} with HTTP ${landed?.status()}: ${body}`);
    }
    if (!new URL(page.url()).pathname.endsWith('/v2/authorize')) {
        fail(`${start} led to ${page.url()}, not the tenant's /v2/authorize page`);
    }
    if (fakeUrl && !page.url().startsWith(fakeUrl)) {
        fail(`${start} led to ${page.url()}, not the fake tenant at ${fakeUrl}`);
    }
    console.log(`  ${start} -> ${page.url().split('?')[0]} (the fake's consent page)`);

    // "Allow" posts the form; the fake redirects to redirect_uri?code=…&state=…,
    // whose listener exchanges the code before it answers the page.
    const [callback] = await Promise.all([
        page.waitForResponse(
            (r) => r.request().isNavigationRequest() && r.url().startsWith(redirectUri.split('?')[0]),
            { timeout: stepMs }
        ),
        page.click('#allow', { timeout: stepMs }),
    ]);
    const result = page.locator('#result');
    await result.waitFor({ state: 'attached', timeout: stepMs });
    const text = (await result.textContent({ timeout: stepMs })) || '';
    const landedOn = new URL(page.url());
    const where = `${landedOn.origin}${landedOn.pathname}`;
    if (!landedOn.searchParams.get('code') || !landedOn.searchParams.get('state')) {
        fail(`the browser landed on ${where} without a code and a state`);
    }
    if (callback.status() !== 200 || !text.startsWith('Logged in')) {
        fail(`the callback page ${where} answered HTTP ${callback.status()}: ${text}`);
    }
    console.log(`  clicked Allow -> ${where}?code=…&state=… -> HTTP 200 "${text}"`);
}

async function main() {
    const before = await get('/_proxy/ready');
    if (before.status !== 503 || before.json?.tenants?.[tenant]?.error !== 'login_required') {
        fail(`before the login /_proxy/ready should be 503 with ${tenant} login_required, was ${before.status}: ${before.text}`);
    }
    console.log(`${NAME}: before: /_proxy/ready -> 503, ${tenant}: login_required`);

    const browser = await launch({ executablePath: chromiumPath, timeout: stepMs, fail });
    try {
        console.log(`${NAME}: ${chromiumPath} ${browser.context.browser()?.version() ?? ''}`.trimEnd());
        await browserLogin(browser.page);
        if (browser.strays.length) fail(`the browser tried to leave the machine: ${browser.strays.join(', ')}`);
    } finally {
        await browser.close();
    }

    const rest = await get(PATH);
    if (rest.status !== 200) fail(`GET ${PATH} through the proxy -> ${rest.status}: ${rest.text}`);
    if (rest.json?.token_number !== undefined && rest.json.path !== PATH) {
        fail(`the fake saw the path ${rest.json.path}, not ${PATH}`);
    }
    console.log(`${NAME}: after: REST GET ${PATH} through the proxy -> 200`);
    const after = await get('/_proxy/ready');
    if (after.status !== 200 || after.json?.tenants?.[tenant]?.ready !== true) {
        fail(`after the login /_proxy/ready should be 200 with ${tenant} ready, was ${after.status}: ${after.text}`);
    }
    console.log(`${NAME}: after: /_proxy/ready -> 200, ${tenant} ready`);
    console.log(`${NAME}: ok`);
}

main()
    .then(() => process.exit(0))
    .catch((error) => {
        const message = error instanceof Failure ? error.message : error.stack || String(error);
        console.error(`${NAME}: FAIL: ${redact(message, 1500)}`);
        process.exit(1);
    });
