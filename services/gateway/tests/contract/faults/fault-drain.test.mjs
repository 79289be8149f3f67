// Graceful shutdown of a gateway node (SIGTERM, as Kubernetes does): the node turns unready,
// tells its sockets `server:draining`, then closes their transport, so socket.io-client
// reconnects by itself (a namespace disconnect, "io server disconnect", would stop it from
// reconnecting). The other node keeps serving, the drained client recovers its session there
// (connection state recovery), and its messages still flow.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  GATEWAY_PIDS,
  NODE1,
  NODE2,
  closeAll,
  connectUser,
  http,
  join,
  newChat,
  send,
  sleep,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

test('SIGTERM drains a node: unready, a reconnect hint, transport closed so clients reconnect', async () => {
  assert.equal(GATEWAY_PIDS.length, 2, 'SB_GATEWAY_PIDS names both gateway nodes');
  const { chatId, users } = await newChat({ members: 2 });
  const [A, B] = users;
  const a = await connectUser(A, NODE1, { reconnection: true, reconnectionDelay: 200 });
  const b = await connectUser(B, NODE2);
  await join(a, chatId);
  await join(b, chatId);
  const id = a.id;

  const hint = waitFor(a, 'server:draining', () => true, 10000);
  const disconnected = new Promise((resolve) => a.once('disconnect', (reason) => resolve(reason)));
  process.kill(GATEWAY_PIDS[0], 'SIGTERM');

  // Unready while draining (polled: the window lasts the drain grace, 1 s by default).
  let sawUnready = false;
  for (let i = 0; i < 60 && !sawUnready; i++) {
    try {
      const r = await http('GET', '/readyz', { token: null, node: NODE1 });
      sawUnready = r.status === 503;
    } catch {
      break; // the node has stopped listening
    }
    if (!sawUnready) await sleep(50);
  }
  assert.ok(sawUnready, '/readyz answered 503 while the node drained');

  await hint;
  const reason = await disconnected;
  assert.notEqual(reason, 'io server disconnect', 'the client is not told to stay away');
  assert.equal(a.active, true, 'socket.io-client will reconnect by itself');

  // Behind a load balancer the client lands on the surviving node (here it is pointed there)
  // and recovers its session: same id, its room, what was said while it reconnected.
  a.io.uri = NODE2;
  const back = a.connected ? Promise.resolve() : new Promise((resolve) => a.once('connect', resolve));
  const missed = await send(b, chatId, 'while the drained client reconnects');
  await back;
  assert.equal(a.recovered, true, 'the drained client recovered its session on the other node');
  assert.equal(a.id, id, 'with the same id');
  await waitFor(a, 'message:new', (m) => m._id === missed.serverId, 5000);
  const sent = await send(a, chatId, 'after the drain');
  await waitFor(b, 'message:new', (m) => m._id === sent.serverId, 5000);
});
