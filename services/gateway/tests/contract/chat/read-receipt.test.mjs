// receipt:read (002): forward-only read cursors, receipt:update to the room (the reader's other
// sockets included), NOT_FOUND / FORBIDDEN, and GET /v1/chats/{chatId}/receipts.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  addMember,
  assertErrorAck,
  assertIso,
  closeAll,
  connectUser,
  count,
  expectNo,
  http,
  join,
  newChat,
  newUser,
  putChat,
  rid,
  send,
  sleep,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

/**
 * A (sender) on node 1; B (reader) with two sockets, b1 on node 1 and b2 on node 2; all joined;
 * A has sent two messages m1 < m2.
 */
async function scene() {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await connectUser(A, NODE1);
  const b1 = await connectUser(B, NODE1);
  const b2 = await connectUser(B, NODE2);
  for (const s of [a, b1, b2]) await join(s, chat.chatId);
  const m1 = await send(a, chat.chatId, 'first');
  const m2 = await send(a, chat.chatId, 'second');
  for (const m of [m1, m2]) await waitFor(b2, 'message:new', (x) => x._id === m.serverId, 5000);
  assert.ok(BigInt(m1.serverId) < BigInt(m2.serverId), 'message ids grow');
  return { ...chat, A, B, a, b1, b2, m1, m2 };
}

test('marking a message read answers { ok, data: { readAt } } and broadcasts receipt:update to the room', async () => {
  const { chatId, B, a, b1, b2, m2 } = await scene();
  const res = await ack(b1, 'receipt:read', { chatId, messageId: m2.serverId });
  assert.equal(res.ok, true, JSON.stringify(res));
  assert.deepEqual(Object.keys(res).sort(), ['data', 'ok']);
  assert.deepEqual(Object.keys(res.data), ['readAt']);
  assertIso(res.data.readAt, 'readAt');

  const expected = { chatId, messageId: m2.serverId, userId: B.id };
  const isIt = (u) => u.chatId === chatId && u.messageId === m2.serverId && u.userId === B.id;
  // The reader's other socket (other node) and the sender (node 1) get it.
  for (const socket of [b2, a]) {
    const update = await waitFor(socket, 'receipt:update', isIt, 5000);
    assert.deepEqual(Object.keys(update).sort(), ['chatId', 'messageId', 'readAt', 'userId']);
    for (const [k, v] of Object.entries(expected)) assert.equal(update[k], v);
    assertIso(update.readAt, 'receipt:update readAt');
    assert.equal(Date.parse(update.readAt), Date.parse(res.data.readAt), 'the broadcast carries the same readAt');
  }
  await sleep(500);
  assert.equal(count(b2, 'receipt:update', isIt), 1, 'once per socket');
  assert.equal(count(a, 'receipt:update', isIt), 1, 'once per socket');
});

test('marking an older message succeeds with the current cursor readAt and broadcasts nothing', async () => {
  const { chatId, a, b1, b2, m1, m2 } = await scene();
  const first = await ack(b1, 'receipt:read', { chatId, messageId: m2.serverId });
  assert.equal(first.ok, true, JSON.stringify(first));
  await waitFor(a, 'receipt:update', (u) => u.messageId === m2.serverId, 5000);

  const older = await ack(b2, 'receipt:read', { chatId, messageId: m1.serverId });
  assert.equal(older.ok, true, JSON.stringify(older));
  assertIso(older.data?.readAt, 'readAt');
  assert.equal(Date.parse(older.data.readAt), Date.parse(first.data.readAt), "the cursor's current readAt");

  // The same message again does not move the cursor either.
  const same = await ack(b2, 'receipt:read', { chatId, messageId: m2.serverId });
  assert.equal(same.ok, true, JSON.stringify(same));
  assert.equal(Date.parse(same.data.readAt), Date.parse(first.data.readAt));

  await expectNo(a, 'receipt:update', 1000, (u) => u.messageId === m1.serverId);
  await expectNo(b1, 'receipt:update', 0, (u) => u.messageId === m1.serverId);
  assert.equal(count(a, 'receipt:update'), 1, 'only the first read was broadcast');
});

test('a newer message moves the cursor and is broadcast again', async () => {
  const { chatId, B, a, b1, m1, m2 } = await scene();
  assert.equal((await ack(b1, 'receipt:read', { chatId, messageId: m1.serverId })).ok, true);
  await waitFor(a, 'receipt:update', (u) => u.messageId === m1.serverId, 5000);
  assert.equal((await ack(b1, 'receipt:read', { chatId, messageId: m2.serverId })).ok, true);
  const u = await waitFor(a, 'receipt:update', (x) => x.messageId === m2.serverId, 5000);
  assert.equal(u.userId, B.id);
});

test('an unknown messageId is NOT_FOUND', async () => {
  const { chatId, b1 } = await scene();
  assertErrorAck(await ack(b1, 'receipt:read', { chatId, messageId: '999999999999' }), 'NOT_FOUND');
});

test('a message of another chat is NOT_FOUND', async () => {
  const { chatId, A, B, a, b1 } = await scene();
  const other = rid('c');
  await putChat(other, { type: 'group', title: 'other', createdBy: A.id });
  await addMember(other, A.id);
  await addMember(other, B.id);
  const elsewhere = await send(a, other, 'in the other chat');
  assertErrorAck(await ack(b1, 'receipt:read', { chatId, messageId: elsewhere.serverId }), 'NOT_FOUND');
  await expectNo(a, 'receipt:update', 800, (u) => u.messageId === elsewhere.serverId);
});

test('a non-member marking read is FORBIDDEN', async () => {
  const { chatId, a, m2 } = await scene();
  const outsider = await newUser();
  const o = await connectUser(outsider, NODE2);
  assertErrorAck(await ack(o, 'receipt:read', { chatId, messageId: m2.serverId }), 'FORBIDDEN');
  await expectNo(a, 'receipt:update', 800, (u) => u.userId === outsider.id);
});

test('GET /v1/chats/{chatId}/receipts lists the read cursors; a non-member gets 403', async () => {
  const { chatId, B, b1, m2 } = await scene();
  const read = await ack(b1, 'receipt:read', { chatId, messageId: m2.serverId });
  assert.equal(read.ok, true);

  for (const node of [NODE1, NODE2]) {
    const res = await http('GET', `/v1/chats/${encodeURIComponent(chatId)}/receipts`, { token: B.token, node });
    assert.equal(res.status, 200, res.text);
    assert.ok(Array.isArray(res.json?.receipts), `{ receipts: [...] }: ${res.text}`);
    for (const r of res.json.receipts) {
      assert.deepEqual(Object.keys(r).sort(), ['messageId', 'readAt', 'userId']);
      assert.match(r.messageId, /^[0-9]+$/);
      assertIso(r.readAt);
    }
    const mine = res.json.receipts.filter((r) => r.userId === B.id);
    assert.equal(mine.length, 1, 'one cursor per user');
    assert.equal(mine[0].messageId, m2.serverId);
    assert.equal(Date.parse(mine[0].readAt), Date.parse(read.data.readAt));
  }

  const outsider = await newUser();
  const forbidden = await http('GET', `/v1/chats/${encodeURIComponent(chatId)}/receipts`, { token: outsider.token });
  assert.equal(forbidden.status, 403, forbidden.text);
  const missing = await http('GET', `/v1/chats/${rid('c-missing')}/receipts`, { token: B.token });
  assert.equal(missing.status, 403, missing.text);
  const anonymous = await http('GET', `/v1/chats/${encodeURIComponent(chatId)}/receipts`, { token: null });
  assert.equal(anonymous.status, 401, anonymous.text);
});
