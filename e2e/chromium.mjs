// Debian's Chromium, headless, in a throw-away profile, kept on the machine:
// what browser_login.mjs and status_page.mjs both drive (through
// playwright-core, which never downloads a browser). See e2e/README.md for
// why each flag is there.

import guardModule from './loopback-guard.cjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const { isLoopback } = guardModule;

const hostOf = (url) => {
    try {
        return new URL(url).hostname;
    } catch {
        return '';
    }
};

// Starts the browser; `fail` is called with a message when it cannot start.
// Returns { context, page, strays, close }: `strays` collects every URL the
// browser asked for beyond loopback, `close` ends it and removes the profile.
export async function launch({ executablePath, timeout, fail }) {
    const profile = mkdtempSync(join(tmpdir(), 'sfmc-proxy-chromium-'));
    let context;
    try {
        context = await chromium.launchPersistentContext(profile, {
            executablePath,
            headless: true,
            timeout,
            viewport: { width: 1360, height: 900 },
            args: [
                '--headless',
                '--no-sandbox', // root, and no user namespaces to sandbox in
                '--disable-gpu',
                '--disable-quic',
                '--no-first-run',
                '--disable-background-networking',
                '--disable-component-update',
                '--disable-sync',
                // The login's redirect_uri listener serves a self-signed
                // certificate that the proxy makes on the spot for each login
                // (SFMC takes only https redirect URIs); a person clicks
                // through the browser's warning once, the tests accept it. It
                // applies to this throw-away profile only.
                '--ignore-certificate-errors',
                // Nothing beyond loopback. Even with the flags above this
                // Chromium asks for update.googleapis.com and
                // accounts.google.com at start (seen through a loopback
                // proxy here): every request but to loopback (which
                // bypasses proxies) goes to this closed loopback "proxy"
                // and fails, and no name but 127.0.0.1 resolves.
                '--proxy-server=http://127.0.0.1:9',
                '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
            ],
        });
    } catch (error) {
        rmSync(profile, { recursive: true, force: true });
        fail(`cannot start ${executablePath}: ${error.message.split('\n')[0]}`);
    }
    const strays = [];
    context.on('request', (request) => {
        if (!isLoopback(hostOf(request.url())) && !request.url().startsWith('data:')) {
            strays.push(request.url());
        }
    });
    const page = context.pages()[0] || (await context.newPage());
    const close = async () => {
        await context.close().catch(() => {});
        rmSync(profile, { recursive: true, force: true });
    };
    return { context, page, strays, close };
}
