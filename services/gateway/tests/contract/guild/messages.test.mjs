// message:create (000): persisted, acknowledged with { ok: true, message } when the client asks,
// and broadcast as message:new (MessageDTO) to every socket of channel:<id> except the sending
// socket; server membership suffices to send; the identity is the socket's, never the payload's;
// 20 messages per 10 s per user across the cluster; integration-API messages reach the whole room.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, count, expectNo, sleep, waitFor } from '../helpers.mjs';
import {
  DELIVERY_MS,
  assertFailAck,
  assertGuildError,
  assertMessageDTO,
  channelHistory,
  connectGuild,
  createMessage,
  emitAck,
  joinChannel,
  newGuild,
  nonce,
  postMessage,
  waitCount,
} from './helpers.mjs';

afterEach(closeAll);

/** A channel with A (a on node 1) and B (b on node 2), both joined. */
async function scene(members = 2) {
  const g = await newGuild({ members });
  const [A, B] = g.users;
  const a = await connectGuild(A, NODE1);
  const b = await connectGuild(B, NODE2);
  await joinChannel(a, g.channelId);
  await joinChannel(b, g.channelId);
  return { ...g, A, B, a, b };
}

const userOf = (u) => ({ id: u.id, username: u.username });

test('message:create is acknowledged { ok: true, message: MessageDTO } and reaches the other node as the same message:new', async () => {
  const { channelId, A, a, b } = await scene();
  const content = 'Hello';
  const dto = await createMessage(a, channelId, content);
  assertMessageDTO(dto, { channelId, content, user: userOf(A) });
  const m = await waitFor(b, 'message:new', (x) => x.id === dto.id, DELIVERY_MS);
  assertMessageDTO(m, { id: dto.id, channelId, content, user: userOf(A) });
  assert.deepEqual(m, dto, 'message:new is the acknowledged message');
  await expectNo(a, 'message:new', QUIET_MS);
  assert.equal(count(b, 'message:new', (x) => x.id === dto.id), 1, 'received once');
});

test('the sending socket is excluded, not the sending user: its other socket in the room receives message:new', async () => {
  const { channelId, A, a, b } = await scene();
  const a2 = await connectGuild(A, NODE2); // A's second socket, on the other node, in the room
  await joinChannel(a2, channelId);
  const a3 = await connectGuild(A, NODE1); // A's third socket, not in the room
  const dto = await createMessage(a, channelId, `multi-device ${nonce()}`);
  for (const s of [a2, b]) {
    const m = await waitFor(s, 'message:new', (x) => x.id === dto.id, DELIVERY_MS);
    assert.deepEqual(m, dto);
  }
  await expectNo(a, 'message:new', QUIET_MS);
  await expectNo(a3, 'message:new', 0);
});

test('message:create without an ack callback is persisted and broadcast just the same', async () => {
  const { channelId, A, a, b } = await scene();
  const content = `no ack ${nonce()}`;
  a.emit('message:create', { channelId, content });
  const m = await waitFor(b, 'message:new', (x) => x.content === content, DELIVERY_MS);
  assertMessageDTO(m, { channelId, content, user: userOf(A) });
  const history = await channelHistory(channelId, NODE2);
  assert.ok(history.some((h) => String(h.id) === String(m.id) && h.content === content), 'in history');
  await expectNo(a, 'message:new', QUIET_MS);
  await expectNo(a, 'error:validation', 0);
});

test('a created message is in the channel history (GET /v1/rooms/channel/{id}/messages)', async () => {
  const { channelId, A, B, a, b } = await scene();
  const first = await createMessage(a, channelId, `first ${nonce()}`);
  const second = await createMessage(b, channelId, `second ${nonce()}`);
  const history = await channelHistory(channelId);
  const byId = new Map(history.map((h) => [String(h.id), h]));
  for (const [dto, sender] of [[first, A], [second, B]]) {
    const h = byId.get(String(dto.id));
    assert.ok(h, `message ${dto.id} is in history: ${JSON.stringify(history).slice(0, 500)}`);
    assert.equal(h.content, dto.content);
    assert.equal(String(h.senderId), String(sender.id), 'senderId is the sending user');
  }
  assert.equal(history.length, 2, 'exactly the two messages');
  assert.notEqual(first.id, second.id);
});

test('no channel:join is needed to send: membership of the server suffices', async () => {
  const g = await newGuild({ members: 2 });
  const [A, B] = g.users;
  const a = await connectGuild(A, NODE1); // joins nothing
  const b = await connectGuild(B, NODE2);
  await joinChannel(b, g.channelId);
  const dto = await createMessage(a, g.channelId, `unjoined sender ${nonce()}`);
  const m = await waitFor(b, 'message:new', (x) => x.id === dto.id, DELIVERY_MS);
  assert.deepEqual(m, dto);
  await expectNo(a, 'message:new', QUIET_MS);
});

test('the channel id may be a numeric string; channel_id, id and user.id are rendered as numbers', async () => {
  const { channelId, A, a, b } = await scene();
  const content = `string id ${nonce()}`;
  const dto = await createMessage(a, String(channelId), content);
  assertMessageDTO(dto, { channelId, content, user: userOf(A) });
  const m = await waitFor(b, 'message:new', (x) => x.content === content, DELIVERY_MS);
  assert.equal(typeof m.channel_id, 'number');
  assert.equal(typeof m.id, 'number');
  assert.equal(typeof m.user.id, 'number');
});

test('content is counted in code points: 4,000 characters and 4,000 emoji are accepted, whole', async () => {
  const { channelId, a, b } = await scene();
  const plain = 'x'.repeat(4000);
  const emoji = '😀'.repeat(4000); // 4,000 code points, 8,000 UTF-16 units, 16,000 UTF-8 bytes
  for (const content of [plain, emoji]) {
    const dto = await createMessage(a, channelId, content);
    const m = await waitFor(b, 'message:new', (x) => x.id === dto.id, DELIVERY_MS);
    assert.equal(m.content, content, 'delivered whole');
    assert.equal([...m.content].length, 4000);
  }
  const history = await channelHistory(channelId);
  assert.deepEqual(history.map((h) => h.content).sort(), [plain, emoji].sort(), 'stored whole');
});

test('whitespace counts: content of spaces only is not empty and is accepted', async () => {
  const { channelId, a, b } = await scene();
  const dto = await createMessage(a, channelId, '   ');
  const m = await waitFor(b, 'message:new', (x) => x.id === dto.id, DELIVERY_MS);
  assert.equal(m.content, '   ');
});

test('a forged identity in the payload is ignored: user is the socket\'s own user', async () => {
  const { channelId, A, B, a, b } = await scene();
  const content = `forged ${nonce()}`;
  const res = await emitAck(a, 'message:create', {
    channelId,
    content,
    userId: B.id,
    user_id: B.id,
    user: { id: B.id, username: B.username },
  });
  assert.equal(res?.ok, true, JSON.stringify(res));
  assertMessageDTO(res.message, { channelId, content, user: userOf(A) });
  const m = await waitFor(b, 'message:new', (x) => x.content === content, DELIVERY_MS);
  assert.deepEqual(m.user, userOf(A), 'message:new carries the socket\'s user');
  const h = (await channelHistory(channelId)).find((x) => x.content === content);
  assert.equal(String(h.senderId), String(A.id), 'stored as the socket\'s user');
});

test('messages posted through the integration API reach the whole channel room, the sender\'s sockets included', async () => {
  const { channelId, A, a, b } = await scene();
  const a2 = await connectGuild(A, NODE2);
  await joinChannel(a2, channelId);
  const content = `from the backend ${nonce()}`;
  const posted = await postMessage(channelId, A.id, content, NODE2);
  for (const s of [a, a2, b]) {
    const m = await waitFor(s, 'message:new', (x) => x.content === content, DELIVERY_MS);
    assertMessageDTO(m, { channelId, content, user: userOf(A) });
    assert.equal(String(m.id), String(posted.id), 'the posted message');
  }
  await sleep(QUIET_MS);
  for (const s of [a, a2, b]) assert.equal(count(s, 'message:new', (x) => x.content === content), 1, `${s.__name}: once`);
});

test('rate limit: 20 messages per 10 s per user across both nodes; the 21st is error:validation E_RATE_LIMITED and not stored', async () => {
  const { channelId, A, a, b } = await scene();
  const a2 = await connectGuild(A, NODE2);
  const tag = nonce();
  const sends = [];
  for (let i = 0; i < 10; i++) {
    sends.push(emitAck(a, 'message:create', { channelId, content: `${tag} n1 ${i}` }));
    sends.push(emitAck(a2, 'message:create', { channelId, content: `${tag} n2 ${i}` }));
  }
  const acks = await Promise.all(sends);
  for (const res of acks) assert.equal(res?.ok, true, `the first 20 are accepted: ${JSON.stringify(res)?.slice(0, 300)}`);

  const res = await emitAck(a, 'message:create', { channelId, content: `${tag} 21st` });
  assertFailAck(res, 'E_RATE_LIMITED');
  assertGuildError(await waitFor(a, 'error:validation', () => true, DELIVERY_MS), 'E_RATE_LIMITED');

  // B received the 20, not the 21st; the 21st is not stored.
  await waitCount(b, 'message:new', 20, (m) => m.content.startsWith(tag), DELIVERY_MS);
  await expectNo(b, 'message:new', QUIET_MS, (m) => m.content === `${tag} 21st`);
  const history = await channelHistory(channelId);
  assert.equal(history.filter((h) => h.content.startsWith(tag)).length, 20, 'exactly 20 stored');
  assert.ok(!history.some((h) => h.content === `${tag} 21st`), 'the 21st is not stored');

  // The limit is per user: B still sends; A's sockets stay connected.
  const fromB = await createMessage(b, channelId, `B is not limited ${nonce()}`);
  await waitFor(a, 'message:new', (m) => m.id === fromB.id, DELIVERY_MS);
  assert.ok(a.connected && a2.connected, "A's sockets stay connected");
});
