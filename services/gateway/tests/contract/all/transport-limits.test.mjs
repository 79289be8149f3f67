// Transport limits, the same in every namespace: the configured packet cap (1 MiB in the
// harness, SWITCHBOARD_MAX_PAYLOAD_BYTES) holds for WebSocket frames as it does for polling
// bodies, before any handshake; and no contract takes binary attachments, so a packet that
// announces one closes its connection instead of being buffered. Other sockets carry on.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import WebSocket from 'ws';
import { NODE1, NODE2, ack, closeAll, connectUser, newChat, waitForDisconnect } from '../helpers.mjs';

afterEach(closeAll);

const CAP = 1_048_576;

/** A raw Engine.IO WebSocket (no Socket.IO handshake), open once the server's OPEN packet came. */
function rawEngineSocket(node) {
  const url = `${node.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
  const ws = new WebSocket(url);
  const opened = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no Engine.IO OPEN packet within 5 s')), 5000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      assert.ok(String(data).startsWith('0{'), `an OPEN packet first, got ${String(data).slice(0, 80)}`);
      resolve(ws);
    });
    ws.once('error', reject);
  });
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  return { ws, opened, closed };
}

/** The next message on a raw socket other than a ping (answered with a pong); rejects after `ms`. */
function nextMessage(ws, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms);
    const onMessage = (data) => {
      const text = String(data);
      if (text === '2') {
        ws.send('3');
        return;
      }
      clearTimeout(timer);
      ws.off('message', onMessage);
      resolve(text);
    };
    ws.on('message', onMessage);
  });
}

/** A Socket.IO CONNECT to `/` whose auth token makes the frame `bytes` long. */
const connectPacket = (bytes) => `40{"token":"${'x'.repeat(bytes - 15)}"}`;

test('a WebSocket frame over the packet cap closes the connection before any handshake', async () => {
  // Under the cap, a large CONNECT is answered (a refused handshake) and the connection stays.
  const small = rawEngineSocket(NODE1);
  const ws = await small.opened;
  ws.send(connectPacket(CAP / 2));
  assert.match(await nextMessage(ws), /^44/, 'a connect_error for the oversized token');
  assert.equal(ws.readyState, WebSocket.OPEN);
  ws.close();

  // Over the cap, the same packet closes the connection.
  const big = rawEngineSocket(NODE2);
  const ws2 = await big.opened;
  ws2.send(connectPacket(CAP + 1024));
  const code = await Promise.race([
    big.closed,
    nextMessage(ws2, 5000).then((m) => {
      throw new Error(`answered instead of closed: ${m.slice(0, 80)}`);
    }),
  ]);
  assert.notEqual(code, undefined);
});

test('a packet announcing a binary attachment closes its connection; another socket carries on', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const [a, b] = users;
  const attacker = await connectUser(a, NODE1);
  const bystander = await connectUser(b, NODE2);
  const gone = waitForDisconnect(attacker, 5000);
  attacker.emit('room:join', Buffer.alloc(16));
  await gone;
  assert.equal(attacker.connected, false);
  assert.deepEqual(await ack(bystander, 'room:join', { chatId }), { ok: true });
});
