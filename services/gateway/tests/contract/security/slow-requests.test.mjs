// Attack: slowloris and oversized request heads over raw TCP. A client that sends half a
// request head and stalls (or trickles it a byte at a time) must be disconnected after
// SWITCHBOARD_REQUEST_HEAD_TIMEOUT_MS (2 s in the security cluster; waited for up to 10 s), never
// served; a head over SWITCHBOARD_MAX_REQUEST_HEAD_BYTES (16 KiB) gets 431 or a closed
// connection, never 200 or a WebSocket upgrade (101), on the API and the Engine.IO path alike.
// A head under the bound is served as usual.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, test } from 'node:test';
import { NODE1, NODE2 } from '../helpers.mjs';
import { LIMITS, assertNodesUp, getRequest, hostPort, rawHttp, useControlClient } from './common.mjs';

useControlClient();

after(() => assertNodesUp('after the slow and oversized requests'));

const CLOSE_WITHIN_MS = 10000;
const host = (node) => new URL(node).host;

/** The server's answer, if any, must be a refusal: no status, or a 4xx (never 200 nor 101). */
function assertNotServed(res, what) {
  assert.ok(res.status === null || (res.status >= 400 && res.status < 500), `${what}: refused, got ${JSON.stringify(res.text.slice(0, 120))}`);
}

test('half a request head, then silence: the server closes the connection after the head timeout, unserved', async () => {
  assert.ok(LIMITS.headTimeoutMs > 0 && LIMITS.headTimeoutMs < CLOSE_WITHIN_MS / 2, `a short head timeout (${LIMITS.headTimeoutMs} ms)`);
  const partials = [
    [NODE1, `GET /healthz HTTP/1.1\r\nHost: ${host(NODE1)}\r\nX-Slow: `],
    [NODE2, `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${host(NODE2)}\r\nUpgrade: websocket\r\n`],
    [NODE1, 'POST /v1/tokens HTTP/1.1\r\n'],
    [NODE2, 'GE'],
  ];
  const results = await Promise.all(partials.map(([node, head]) => rawHttp(node, head, { timeoutMs: CLOSE_WITHIN_MS })));
  results.forEach((res, i) => {
    const what = `partial head ${JSON.stringify(partials[i][1].slice(0, 40))}`;
    assert.ok(res.closedByPeer, `${what}: closed by the server within ${CLOSE_WITHIN_MS} ms`);
    assertNotServed(res, what);
  });
});

test('a connection that sends nothing at all is closed after the head timeout too', async () => {
  const results = await Promise.all([NODE1, NODE2].map((node) => rawHttp(node, [], { timeoutMs: CLOSE_WITHIN_MS })));
  results.forEach((res, i) => {
    assert.ok(res.closedByPeer, `an idle connection to node ${i + 1} was closed within ${CLOSE_WITHIN_MS} ms`);
    assertNotServed(res, `idle connection to node ${i + 1}`);
  });
});

test('a head trickled one byte at a time is cut off too (the timeout is for the whole head, not per byte)', async () => {
  const { host: h, port } = hostPort(NODE2);
  const outcome = await new Promise((resolve) => {
    const sock = net.connect({ host: h, port });
    let data = '';
    const head = `GET /healthz HTTP/1.1\r\nHost: ${host(NODE2)}\r\nX-Trickle: ${'a'.repeat(10000)}`;
    let at = 0;
    let drip;
    const done = (closed) => {
      clearInterval(drip);
      clearTimeout(timer);
      sock.destroy();
      resolve({ closed, data });
    };
    const timer = setTimeout(() => done(false), CLOSE_WITHIN_MS);
    sock.on('connect', () => {
      drip = setInterval(() => {
        if (at < head.length && !sock.destroyed) sock.write(head[at++]);
      }, 100);
    });
    sock.on('data', (d) => (data += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => done(true));
  });
  assert.ok(outcome.closed, `the trickling client was disconnected within ${CLOSE_WITHIN_MS} ms`);
  assert.ok(!/^HTTP\/1\.1 (200|101)/.test(outcome.data), `never served: ${outcome.data.slice(0, 80)}`);
});

test('a head over the byte bound is refused (431 or closed), never served nor upgraded', async () => {
  const over = LIMITS.maxHeadBytes + 1024;
  const big = 'b'.repeat(over);
  const cases = [
    [NODE1, 'one huge header', getRequest(NODE1, '/healthz', `X-Big: ${big}\r\n`)],
    [NODE2, 'a huge URI', getRequest(NODE2, `/healthz?pad=${big}`)],
    [
      NODE1,
      'a WebSocket upgrade with a huge cookie',
      `GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: ${host(NODE1)}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: connect.sid=${big}\r\n\r\n`,
    ],
    [NODE2, 'many headers, each small', getRequest(NODE2, '/healthz', Array.from({ length: 200 }, (_, i) => `X-H${i}: vvvv\r\n`).join(''))],
    [NODE1, 'a polling handshake with a huge header', getRequest(NODE1, '/socket.io/?EIO=4&transport=polling', `X-Big: ${big}\r\n`)],
  ];
  for (const [node, what, request] of cases) {
    const res = await rawHttp(node, request, { timeoutMs: CLOSE_WITHIN_MS });
    assertNotServed(res, what);
    if (res.status !== null) assert.equal(res.status, 431, `${what}: 431 Request Header Fields Too Large, got ${res.status}`);
    else assert.ok(res.closedByPeer, `${what}: without an answer, the connection is closed`);
  }
});

test('a head under the bound is served as usual, on both nodes', async () => {
  const padding = 'p'.repeat(Math.floor(LIMITS.maxHeadBytes / 2));
  for (const node of [NODE1, NODE2]) {
    const res = await rawHttp(node, getRequest(node, '/healthz', `X-Pad: ${padding}\r\n`), { timeoutMs: 5000 });
    assert.equal(res.status, 200, `a ${padding.length}-byte header is fine on ${node}: ${res.text.slice(0, 80)}`);
  }
});
