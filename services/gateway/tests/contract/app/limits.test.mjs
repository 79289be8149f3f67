// The 5 KB inbound cap of /ws/app (001, SOCKET_MAX_PAYLOAD_BYTES = 5,120 bytes of the event's
// JSON arguments): an event over it is dropped and answered with
// error { code: 'socket_error:payload_too_large', message }; its ack is never called; the socket
// stays connected and works; other sockets are undisturbed. Unknown events get no answer.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  PRESENCE_THROTTLE_MS,
  QUIET_MS,
  ack,
  closeAll,
  count,
  expectNo,
  rid,
  sleep,
  waitFor,
} from '../helpers.mjs';
import {
  DELIVERY_MS,
  MAX_PAYLOAD_BYTES,
  PRESENCE_DEADLINE_MS,
  appUser,
  connectApp,
  emitTracked,
  joinConversation,
  jsonBytes,
  newConversation,
  postMessage,
  presenceOf,
  publishToConversation,
  waitForCount,
  waitReady,
  waitSocketError,
} from './helpers.mjs';

afterEach(closeAll);

const TOO_LARGE = 'socket_error:payload_too_large';

async function roomPing(conversationId, node = NODE1) {
  const marker = rid('ping');
  await publishToConversation(conversationId, 'custom:room-ping', { marker }, node);
  return (d) => d.marker === marker;
}

test('an event over 5,120 bytes is dropped: error payload_too_large, no ack, still connected, the next join works', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const a = await connectApp(A, NODE1);
  const b = await connectApp(B, NODE2);
  await joinConversation(b, conversationId);

  const payload = { conversationId, padding: 'x'.repeat(6000) };
  assert.ok(jsonBytes([payload]) > MAX_PAYLOAD_BYTES);
  const calls = emitTracked(a, 'conversations:join', payload);
  await waitSocketError(a, TOO_LARGE);
  await sleep(QUIET_MS);
  assert.equal(calls.length, 0, `the ack is not called: ${JSON.stringify(calls)}`);
  assert.ok(a.connected, 'the socket stays connected');
  assert.equal(count(a, 'error'), 1, 'one error for one event');

  // The dropped join did not join the room.
  const dropped = await roomPing(conversationId, NODE2);
  await waitFor(b, 'custom:room-ping', dropped, DELIVERY_MS);
  await expectNo(a, 'custom:room-ping', QUIET_MS);

  // A normal join right after succeeds, and the room now reaches the socket.
  await joinConversation(a, conversationId);
  const joined = await roomPing(conversationId, NODE2);
  await waitFor(a, 'custom:room-ping', joined, DELIVERY_MS);
});

test('a payload just under the cap (4,000 characters of padding) is processed normally', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const a = await connectApp(users[0], NODE2);
  const payload = { conversationId, padding: 'x'.repeat(4000) };
  assert.ok(jsonBytes([payload]) < MAX_PAYLOAD_BYTES);
  assert.deepEqual(await ack(a, 'conversations:join', payload), { success: true, conversationId });
  await sleep(200);
  assert.equal(count(a, 'error'), 0, 'no error');
});

test('the cap counts bytes, not characters: 2,000 three-byte characters (6,000 bytes) are over it', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const a = await connectApp(users[0], NODE1);
  const payload = { conversationId, padding: '€'.repeat(2000) };
  assert.ok(JSON.stringify([payload]).length < MAX_PAYLOAD_BYTES, 'under the cap in characters');
  assert.ok(jsonBytes([payload]) > MAX_PAYLOAD_BYTES, 'over the cap in bytes');
  const calls = emitTracked(a, 'conversations:join', payload);
  await waitSocketError(a, TOO_LARGE);
  await sleep(QUIET_MS);
  assert.equal(calls.length, 0, 'the ack is not called');
  assert.ok(a.connected);
});

test('repeated oversized events (10 KB to 100 KB) are each answered and never disconnect the socket', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const a = await connectApp(users[0], NODE1);
  const sizes = [10 * 1024, 20 * 1024, 50 * 1024, 100 * 1024, 10 * 1024];
  const calls = [];
  for (const n of sizes) calls.push(emitTracked(a, 'conversations:join', { conversationId, padding: 'x'.repeat(n) }));
  await waitForCount(a, 'error', (e) => e.code === TOO_LARGE, sizes.length, DELIVERY_MS);
  await sleep(QUIET_MS);
  assert.equal(count(a, 'error', (e) => e.code === TOO_LARGE), sizes.length, 'one error per event');
  for (const c of calls) assert.equal(c.length, 0, 'no ack called');
  assert.ok(a.connected);
  await joinConversation(a, conversationId);
});

test('an oversized presence:heartbeat is dropped: error, and no presence broadcast; a normal one then broadcasts', async () => {
  const O = await appUser('obs');
  const A = await appUser();
  const o = await connectApp(O, NODE2);
  const a = await connectApp(A, NODE1);
  await waitFor(o, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  await sleep(PRESENCE_THROTTLE_MS);
  const before = count(o, 'presence:update', presenceOf(A.id, true));

  a.emit('presence:heartbeat', { padding: 'x'.repeat(10 * 1024) });
  await waitSocketError(a, TOO_LARGE);
  await sleep(PRESENCE_THROTTLE_MS + 1000);
  assert.equal(count(o, 'presence:update', presenceOf(A.id, true)), before, 'the dropped heartbeat broadcast nothing');

  a.emit('presence:heartbeat');
  await waitForCount(o, 'presence:update', presenceOf(A.id, true), before + 1, PRESENCE_DEADLINE_MS);
});

test('another socket on the same node is undisturbed by an oversized event', async () => {
  const { conversationId, users } = await newConversation({ members: 3 });
  const [A, B, C] = users;
  const a = await connectApp(A, NODE1);
  const b = await connectApp(B, NODE1); // same node as the offender
  const c = await connectApp(C, NODE2);
  await joinConversation(b, conversationId);

  for (let i = 0; i < 3; i++) a.emit('conversations:join', { conversationId, padding: 'x'.repeat(10 * 1024) });
  await waitForCount(a, 'error', (e) => e.code === TOO_LARGE, 3, DELIVERY_MS);

  // Everybody, the offender included, still receives.
  const msg = await postMessage(conversationId, C.id, 'after the oversized events', NODE2);
  for (const s of [a, b, c]) await waitFor(s, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
  assert.ok(b.connected && a.connected && c.connected);
  assert.equal(count(b, 'error'), 0, 'the other socket got no error');
  assert.equal(count(c, 'error'), 0, 'nor did the socket on the other node');
  await joinConversation(b, conversationId);
});

test('unknown events (the chat contract, made-up names) get no answer and do not disconnect', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const a = await connectApp(users[0], NODE2);
  await waitReady(a, users[0].id);
  const calls = [
    emitTracked(a, 'message:send', { chatId: conversationId, body: 'hi', clientId: 'c-1' }),
    emitTracked(a, 'room:join', { chatId: conversationId }),
    emitTracked(a, 'presence:ping', {}),
    emitTracked(a, 'no:such:event', { anything: true }),
    emitTracked(a, 'messages:new', { conversationId, message: { body: 'spoofed' } }),
  ];
  a.emit('conversations:unknown');
  await sleep(QUIET_MS);
  for (const c of calls) assert.equal(c.length, 0, `no answer: ${JSON.stringify(c)}`);
  assert.equal(count(a, 'error'), 0, 'no error event');
  assert.equal(count(a, 'messages:new'), 0, 'clients cannot inject broadcasts');
  assert.ok(a.connected, 'still connected');
  await joinConversation(a, conversationId);
});
