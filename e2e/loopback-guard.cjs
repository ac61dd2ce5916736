'use strict';
// Loaded first by the e2e clients: any name lookup or TCP connection beyond the
// loopback interface throws, so that a client that would reach the internet (a
// default URL, an HTTP proxy from the environment) fails loudly instead.

const dns = require('node:dns');
const net = require('node:net');

function isLoopback(host) {
    if (host === undefined || host === null || host === '') return true; // Node's default: localhost
    const name = String(host).replace(/^\[|\]$/g, '');
    if (name === 'localhost' || name.endsWith('.localhost')) return true;
    if (net.isIPv4(name)) return name.startsWith('127.');
    if (net.isIPv6(name)) return name === '::1' || /^::ffff:127\./i.test(name);
    return false;
}

function refuse(what, host) {
    return new Error(`e2e: refused to ${what} ${JSON.stringify(host)}: this test must not leave the machine`);
}

const realLookup = dns.lookup;
dns.lookup = function lookup(hostname, ...rest) {
    if (!isLoopback(hostname)) throw refuse('resolve', hostname);
    return realLookup.call(this, hostname, ...rest);
};

const realConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function connect(...args) {
    // net.connect() passes its normalised [options, callback] array as one argument.
    const first = Array.isArray(args[0]) ? args[0][0] : args[0];
    const options = first !== null && typeof first === 'object' ? first : { port: first, host: args[1] };
    // A TCP connection has a port; options.path alone is a Unix socket (for HTTP
    // requests it can also hold the request path, so it proves nothing).
    const tcp = options.port !== undefined && options.port !== null;
    if (tcp && !isLoopback(options.host)) throw refuse('connect to', options.host);
    return realConnect.apply(this, args);
};

module.exports = { isLoopback };
