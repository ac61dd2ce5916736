'use strict';
// Failure messages may quote a server's body (an echo, an error): tokens in it
// (Bearer values, fueloauth, access_token) are not printed, long text is cut.
const TOKENISH = /(bearer\s+|fueloauth[^>]*>|access_token['"]?\s*[:=]\s*['"]?)[^\s'"<,}]+/gi;

function redact(text, limit = 800) {
    const clean = String(text).replace(TOKENISH, '$1[redacted]');
    return clean.length <= limit ? clean : clean.slice(0, limit) + '…';
}

module.exports = { redact };
