// system:disconnect (001, reserved in the document, implemented by Switchboard):
// POST /v1/users/{id}/disconnect { reason } makes every app socket of the user, on every node,
// receive system:disconnect { reason } and then be disconnected by the server
// ('io server disconnect'). Other users stay connected. Disconnecting is not revoking.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, eventsOf, expectNo, http, sleep, waitFor } from '../helpers.mjs';
import {
  DELIVERY_MS,
  appUser,
  connectApp,
  joinConversation,
  newConversation,
  postMessage,
  waitReady,
  watchDisconnect,
} from './helpers.mjs';

afterEach(closeAll);

const enc = encodeURIComponent;

async function disconnectUser(userId, reason, node = NODE1) {
  const res = await http('POST', `/v1/users/${enc(userId)}/disconnect`, { body: { reason }, node });
  assert.ok(res.status >= 200 && res.status < 300, `POST /v1/users/{id}/disconnect → ${res.status} ${res.text}`);
}

test("POST /v1/users/{id}/disconnect: each app socket of the user on both nodes gets system:disconnect { reason } then 'io server disconnect'", async () => {
  const A = await appUser();
  const B = await appUser();
  const a1 = await connectApp(A, NODE1);
  const a2 = await connectApp(A, NODE2);
  const a3 = await connectApp(A, NODE2, { transports: ['polling'] });
  const b = await connectApp(B, NODE1);
  for (const s of [a1, a2, a3]) await waitReady(s, A.id);
  const watches = [a1, a2, a3].map((s) => watchDisconnect(s));

  await disconnectUser(A.id, 'maintenance', NODE2);
  for (const [i, s] of [a1, a2, a3].entries()) {
    const { reason, before } = await watches[i];
    assert.equal(reason, 'io server disconnect', `${s.__name}: disconnected by the server`);
    assert.ok(before.includes('system:disconnect'), `${s.__name}: system:disconnect arrived before the disconnect`);
    const payload = eventsOf(s).find((e) => e.event === 'system:disconnect').data;
    assert.deepEqual(payload, { reason: 'maintenance' });
  }
  await sleep(QUIET_MS);
  assert.ok(b.connected, 'another user stays connected');
  await expectNo(b, 'system:disconnect', 0);
});

test('the reason is passed through unchanged', async () => {
  const A = await appUser();
  const a = await connectApp(A, NODE2);
  await waitReady(a, A.id);
  const watch = watchDisconnect(a);
  await disconnectUser(A.id, 'account suspended: policy #42 ✓', NODE1);
  const { reason, before } = await watch;
  assert.equal(reason, 'io server disconnect');
  assert.ok(before.includes('system:disconnect'), 'system:disconnect arrived before the disconnect');
  const payload = eventsOf(a).find((e) => e.event === 'system:disconnect').data;
  assert.deepEqual(payload, { reason: 'account suspended: policy #42 ✓' });
});

test('disconnected sockets do not reconnect by themselves and receive nothing more', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const a = await connectApp(A, NODE1);
  const b = await connectApp(B, NODE2);
  await joinConversation(a, conversationId);
  const watch = watchDisconnect(a);
  await disconnectUser(A.id, 'maintenance');
  await watch;
  const msg = await postMessage(conversationId, B.id, 'after the kick', NODE2);
  await waitFor(b, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
  await expectNo(a, 'messages:new', QUIET_MS);
  assert.equal(a.connected, false);
});

test('the user can connect again afterwards (disconnecting is not revoking)', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const a = await connectApp(A, NODE1);
  const watch = watchDisconnect(a);
  await disconnectUser(A.id, 'maintenance', NODE2);
  await watch;

  const again = await connectApp(A, NODE2);
  await waitReady(again, A.id);
  await joinConversation(again, conversationId);
  const msg = await postMessage(conversationId, B.id, 'welcome back', NODE1);
  await waitFor(again, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
});

test('a user with several sockets on one node: all of them are disconnected, other users on that node are not', async () => {
  const A = await appUser();
  const B = await appUser();
  const mine = [];
  for (let i = 0; i < 3; i++) mine.push(await connectApp(A, NODE2));
  const other = await connectApp(B, NODE2);
  const watches = mine.map((s) => watchDisconnect(s));
  await disconnectUser(A.id, 'maintenance', NODE1);
  for (const w of watches) assert.equal((await w).reason, 'io server disconnect');
  await sleep(QUIET_MS);
  assert.ok(other.connected);
});
