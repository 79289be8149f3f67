// message:send (002): acks, cross-node broadcast, idempotency, membership, limits, rate limit.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  QUIET_MS,
  ack,
  addMember,
  assertChatMessage,
  assertErrorAck,
  assertIso,
  closeAll,
  connectUser,
  count,
  expectNo,
  join,
  newChat,
  newUser,
  removeMember,
  rid,
  send,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

const RATE_LIMIT_MESSAGE = 'Maximum 10 messages per 10 seconds';

/** A chat of `members` users, A (users[0]) on node 1 and B (users[1]) on node 2, both joined. */
async function twoNodes(members = 2) {
  const chat = await newChat({ members });
  const a = await connectUser(chat.users[0], NODE1);
  const b = await connectUser(chat.users[1], NODE2);
  await join(a, chat.chatId);
  await join(b, chat.chatId);
  return { ...chat, a, b };
}

test('a send is acknowledged and broadcast to the room on both nodes, sender included', async () => {
  const { chatId, users, a, b } = await twoNodes();
  const clientId = uuid();
  const body = 'Hello, World!';
  const res = await ack(a, 'message:send', { chatId, body, clientId });
  assert.equal(res.ok, true, JSON.stringify(res));
  assert.deepEqual(Object.keys(res).sort(), ['data', 'ok']);
  assert.deepEqual(Object.keys(res.data).sort(), ['clientId', 'serverId']);
  assert.equal(res.data.clientId, clientId);
  assert.match(res.data.serverId, /^[0-9]+$/, 'serverId is a decimal string');

  for (const socket of [b, a]) {
    const m = await waitFor(socket, 'message:new', (x) => x.clientId === clientId, 5000);
    assertChatMessage(m, { chatId, _id: res.data.serverId, body, senderId: users[0].id, clientId });
    assert.deepEqual(Object.keys(m).sort(), ['_id', 'body', 'chatId', 'clientId', 'createdAt', 'senderId']);
    assertIso(m.createdAt);
  }
  // Exactly once each.
  await sleep(500);
  assert.equal(count(b, 'message:new', (x) => x.clientId === clientId), 1);
  assert.equal(count(a, 'message:new', (x) => x.clientId === clientId), 1);
});

test('B sends back through node 2 and A on node 1 receives it', async () => {
  const { chatId, users, a, b } = await twoNodes();
  const sent = await send(b, chatId, 'reply from node 2');
  const m = await waitFor(a, 'message:new', (x) => x.clientId === sent.clientId, 5000);
  assertChatMessage(m, { chatId, _id: sent.serverId, body: 'reply from node 2', senderId: users[1].id });
});

test('a retry with the same clientId through the other node gets the same serverId and no second broadcast', async () => {
  const { chatId, users, a, b } = await twoNodes();
  const a2 = await connectUser(users[0], NODE2); // A's second socket, on the other node, not joined
  const clientId = uuid();
  const first = await ack(a, 'message:send', { chatId, body: 'once', clientId });
  assert.equal(first.ok, true, JSON.stringify(first));
  await waitFor(b, 'message:new', (m) => m.clientId === clientId, 5000);

  const again = await ack(a2, 'message:send', { chatId, body: 'once', clientId });
  assert.deepEqual(again, { ok: true, data: { clientId, serverId: first.data.serverId } });
  const sameSocket = await ack(a, 'message:send', { chatId, body: 'once', clientId });
  assert.deepEqual(sameSocket, { ok: true, data: { clientId, serverId: first.data.serverId } });

  await sleep(1000);
  assert.equal(count(b, 'message:new', (m) => m.clientId === clientId), 1, 'B got exactly one message:new');
  assert.equal(count(a, 'message:new', (m) => m.clientId === clientId), 1, 'A got exactly one message:new');
});

test('the same clientId from two different senders makes two messages', async () => {
  const { chatId, a, b } = await twoNodes();
  const clientId = uuid();
  const fromA = await send(a, chatId, 'from A', clientId);
  const fromB = await send(b, chatId, 'from B', clientId);
  assert.notEqual(fromA.serverId, fromB.serverId);
});

test('a member who did not room:join can still send', async () => {
  const { chatId, users, b } = await twoNodes(3);
  const c = await connectUser(users[2], NODE1); // member, never joins the room
  const sent = await send(c, chatId, 'without joining');
  const m = await waitFor(b, 'message:new', (x) => x.clientId === sent.clientId, 5000);
  assertChatMessage(m, { chatId, _id: sent.serverId, senderId: users[2].id, body: 'without joining' });
});

test('a non-member cannot send: FORBIDDEN, and nothing is broadcast', async () => {
  const { chatId, b } = await twoNodes();
  const outsider = await connectUser(await newUser(), NODE1);
  const clientId = uuid();
  assertErrorAck(await ack(outsider, 'message:send', { chatId, body: 'intrusion', clientId }), 'FORBIDDEN');
  await expectNo(b, 'message:new', 1000, (m) => m.clientId === clientId);
});

test('sending to a chat that does not exist is FORBIDDEN', async () => {
  const s = await connectUser(await newUser(), NODE2);
  assertErrorAck(await ack(s, 'message:send', { chatId: rid('c-missing'), body: 'x', clientId: uuid() }), 'FORBIDDEN');
});

test('an empty body is VALIDATION_ERROR and is not broadcast', async () => {
  const { chatId, a, b } = await twoNodes();
  const clientId = uuid();
  assertErrorAck(await ack(a, 'message:send', { chatId, body: '', clientId }), 'VALIDATION_ERROR');
  await expectNo(b, 'message:new', 800, (m) => m.clientId === clientId);
});

test('a whitespace-only body is not empty: accepted as is', async () => {
  const { chatId, a, b } = await twoNodes();
  const sent = await send(a, chatId, '   ');
  const m = await waitFor(b, 'message:new', (x) => x.clientId === sent.clientId, 5000);
  assert.equal(m.body, '   ');
});

test('a body of 8000 code points (emoji) is accepted intact; 8001 is VALIDATION_ERROR', async () => {
  const { chatId, a, b } = await twoNodes();
  const body = '😀'.repeat(8000); // 16000 UTF-16 units, 32000 UTF-8 bytes: lengths are code points
  const sent = await send(a, chatId, body);
  const m = await waitFor(b, 'message:new', (x) => x.clientId === sent.clientId, 10000);
  assert.equal(m.body, body, 'the body arrives unchanged');
  assert.equal([...m.body].length, 8000);

  const tooLong = uuid();
  assertErrorAck(await ack(a, 'message:send', { chatId, body: '😀'.repeat(8001), clientId: tooLong }), 'VALIDATION_ERROR');
  await expectNo(b, 'message:new', 800, (x) => x.clientId === tooLong);
});

test("a body of 8000 'é' is accepted; 8001 'é' is VALIDATION_ERROR", async () => {
  const { chatId, a } = await twoNodes();
  await send(a, chatId, 'é'.repeat(8000));
  assertErrorAck(await ack(a, 'message:send', { chatId, body: 'é'.repeat(8001), clientId: uuid() }), 'VALIDATION_ERROR');
});

test('a body of 8000 ASCII characters is accepted; 8001 is VALIDATION_ERROR', async () => {
  const { chatId, a } = await twoNodes();
  await send(a, chatId, 'x'.repeat(8000));
  assertErrorAck(await ack(a, 'message:send', { chatId, body: 'x'.repeat(8001), clientId: uuid() }), 'VALIDATION_ERROR');
});

test('clientId: missing, empty or 129 characters is VALIDATION_ERROR; 1 and 128 characters, not UUIDs, are fine', async () => {
  const { chatId, a, b } = await twoNodes();
  assertErrorAck(await ack(a, 'message:send', { chatId, body: 'no clientId' }), 'VALIDATION_ERROR');
  assertErrorAck(await ack(a, 'message:send', { chatId, body: 'empty clientId', clientId: '' }), 'VALIDATION_ERROR');
  assertErrorAck(
    await ack(a, 'message:send', { chatId, body: 'long clientId', clientId: 'k'.repeat(129) }),
    'VALIDATION_ERROR',
  );
  const longest = 'k'.repeat(128);
  assert.equal(longest.length, 128);
  const ok128 = await send(a, chatId, '128', longest);
  assert.equal(ok128.clientId, longest);
  const m = await waitFor(b, 'message:new', (x) => x._id === ok128.serverId, 5000);
  assert.equal(m.clientId, longest);
  const one = await send(a, chatId, 'one-char clientId', 'q');
  assert.equal(one.clientId, 'q');
});

/** Sends `n` fresh messages on `socket`, expecting each to succeed. */
async function sendMany(socket, chatId, n, tag) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await send(socket, chatId, `${tag} ${i}`));
  return out;
}

async function expectRateLimited(socket, chatId, observer) {
  const clientId = uuid();
  const res = await ack(socket, 'message:send', { chatId, body: 'one too many', clientId });
  assertErrorAck(res, 'RATE_LIMITED');
  assert.equal(res.message, RATE_LIMIT_MESSAGE);
  if (observer) await expectNo(observer, 'message:new', 800, (m) => m.clientId === clientId);
  return clientId;
}

test('rate limit: 10 sends in a row succeed, the 11th is RATE_LIMITED and not broadcast', async () => {
  const { chatId, a, b } = await twoNodes();
  await sendMany(a, chatId, 10, 'burst');
  await expectRateLimited(a, chatId, b);
  // The limit is per user: B is not affected.
  await send(b, chatId, 'B is not limited');
});

test('rate limit holds across nodes: 5 on node 1 + 5 on node 2, then the 11th on either is limited', async () => {
  const { chatId, users, a, b } = await twoNodes();
  const a2 = await connectUser(users[0], NODE2);
  await sendMany(a, chatId, 5, 'node1');
  await sendMany(a2, chatId, 5, 'node2');
  await expectRateLimited(a, chatId, b);
  await expectRateLimited(a2, chatId, b);
});

test('rate limit holds across a reconnect (to the other node)', async () => {
  const { chatId, users, a, b } = await twoNodes();
  await sendMany(a, chatId, 10, 'before reconnect');
  a.close();
  const again = await connectUser(users[0], NODE2);
  await expectRateLimited(again, chatId, b);
  again.close();
  const third = await connectUser(users[0], NODE1);
  await expectRateLimited(third, chatId, b);
});

test('an idempotent repeat does not consume rate-limit budget', async () => {
  const { chatId, a, b } = await twoNodes();
  const sent = await sendMany(a, chatId, 9, 'budget');
  for (const repeat of sent.slice(0, 3)) {
    const res = await ack(a, 'message:send', { chatId, body: repeat.body, clientId: repeat.clientId });
    assert.deepEqual(res, { ok: true, data: { clientId: repeat.clientId, serverId: repeat.serverId } });
  }
  await send(a, chatId, 'the tenth'); // still within budget: the repeats did not count
  await expectRateLimited(a, chatId, b);
});

test('a member revoked through one node can no longer send or type on the other, even right after sending there', async () => {
  // Each node remembers allowed decisions for a while: the revocation must reach them all.
  const { chatId, users, a, b } = await twoNodes(3);
  const c = await connectUser(users[2], NODE2);
  await join(c, chatId);
  await send(b, chatId); // allowed, and now remembered by node 2
  b.emit('typing:start', { chatId });
  await waitFor(a, 'typing:update', (x) => x.userId === users[1].id && x.state === 'start');
  b.emit('typing:stop', { chatId });
  await waitFor(a, 'typing:update', (x) => x.userId === users[1].id && x.state === 'stop');

  await removeMember(chatId, users[1].id); // through node 1; B is on node 2

  assertErrorAck(await ack(b, 'message:send', { chatId, body: 'after', clientId: uuid() }), 'FORBIDDEN');
  const before = count(c, 'typing:update', (x) => x.userId === users[1].id && x.state === 'start');
  b.emit('typing:start', { chatId });
  await sleep(QUIET_MS);
  assert.equal(count(c, 'typing:update', (x) => x.userId === users[1].id && x.state === 'start'), before);
  // Granting again takes effect at once (refusals are never remembered).
  await addMember(chatId, users[1].id);
  await send(b, chatId);
});
