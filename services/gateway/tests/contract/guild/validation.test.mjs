// Errors and validation (000): every malformed message:create gets error:validation
// { code: 'E_VALIDATION', message } (and { ok: false, code, message } when acked); a missing
// channel error:not_found E_CHANNEL_NOT_FOUND; a non-member error:permission E_FORBIDDEN. Nothing
// is stored or broadcast, and the socket stays connected and keeps working. Malformed payloads of
// any event never disconnect the socket nor disturb another socket.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, eventsOf, expectNo, sleep, waitFor } from '../helpers.mjs';
import {
  DELIVERY_MS,
  assertFailAck,
  assertGuildError,
  channelHistory,
  connectGuild,
  createMessage,
  emitAck,
  errorsAfter,
  guildUser,
  joinChannel,
  joinServer,
  mark,
  newGuild,
  newId,
  nonce,
  waitAfter,
  waitCount,
} from './helpers.mjs';

afterEach(closeAll);

/** A channel with sender A (a on node 1, joined nowhere) and receiver B (b on node 2, joined). */
async function scene() {
  const g = await newGuild({ members: 2 });
  const [A, B] = g.users;
  const a = await connectGuild(A, NODE1);
  const b = await connectGuild(B, NODE2);
  await joinChannel(b, g.channelId);
  return { ...g, A, B, a, b };
}

/** The socket still works: a valid message from it reaches the receiver. */
async function stillWorks(a, b, channelId) {
  assert.ok(a.connected, 'the sender stays connected');
  assert.ok(b.connected, 'the receiver stays connected');
  const dto = await createMessage(a, channelId, `still works ${nonce()}`);
  await waitFor(b, 'message:new', (m) => m.id === dto.id, DELIVERY_MS);
  return dto;
}

/**
 * Emits `args` twice, without and with an ack; expects `event` { code } both times (and the ack
 * { ok: false, code, message }); then nothing reached the receiver and nothing was stored.
 */
async function expectRefusedCreate({ a, b, channelId }, args, event, code) {
  const from = mark(a);
  a.emit('message:create', ...args);
  assertGuildError(await waitAfter(a, from, event, () => true, DELIVERY_MS), code);
  const res = await emitAck(a, 'message:create', ...args);
  assertFailAck(res, code);
  const [, second] = await waitCount(a, event, 2);
  assertGuildError(second, code);
  await expectNo(b, 'message:new', QUIET_MS);
  const others = errorsAfter(a, from).filter((e) => e.event !== event);
  assert.deepEqual(others, [], `no other error event: ${JSON.stringify(others)}`);
  if (channelId !== undefined) assert.deepEqual(await channelHistory(channelId), [], 'nothing stored');
}

/** Malformed message:create argument lists, given a valid channel id. */
const malformed = (channelId) => [
  ['empty content ""', [{ channelId, content: '' }]],
  ['content of 4,001 characters', [{ channelId, content: 'x'.repeat(4001) }]],
  ['content of 4,001 emoji (code points, not bytes)', [{ channelId, content: '😀'.repeat(4001) }]],
  ['a 100 KB content', [{ channelId, content: 'y'.repeat(100 * 1024) }]],
  ['no content', [{ channelId }]],
  ['content as a number', [{ channelId, content: 42 }]],
  ['content as null', [{ channelId, content: null }]],
  ['content as an array', [{ channelId, content: ['hi'] }]],
  ['content as an object', [{ channelId, content: { text: 'hi' } }]],
  ['content as a boolean', [{ channelId, content: true }]],
  ['no channelId', [{ content: 'hello' }]],
  ['channelId "abc"', [{ channelId: 'abc', content: 'hello' }]],
  ['channelId 1.5', [{ channelId: 1.5, content: 'hello' }]],
  ['channelId -1', [{ channelId: -1, content: 'hello' }]],
  ['channelId {}', [{ channelId: {}, content: 'hello' }]],
  ['channelId as an array', [{ channelId: [channelId], content: 'hello' }]],
  ['channelId null', [{ channelId: null, content: 'hello' }]],
  ['a string payload', ['hello']],
  ['a number payload', [42]],
  ['an array payload', [[channelId, 'hello']]],
  ['a null payload', [null]],
  ['a boolean payload', [true]],
];

// One test per shape, each with fresh users (so that no rate window is shared).
for (const [what] of malformed(0)) {
  test(`message:create with ${what} is error:validation E_VALIDATION: nothing stored or broadcast, the socket keeps working`, async () => {
    const s = await scene();
    const [, args] = malformed(s.channelId).find(([w]) => w === what);
    await expectRefusedCreate(s, args, 'error:validation', 'E_VALIDATION');
    await stillWorks(s.a, s.b, s.channelId);
    assert.equal((await channelHistory(s.channelId)).length, 1, 'only the valid message is stored');
  });
}

test('message:create in a channel that does not exist is error:not_found E_CHANNEL_NOT_FOUND (event and ack)', async () => {
  const s = await scene();
  await expectRefusedCreate(s, [{ channelId: newId(), content: 'into the void' }], 'error:not_found', 'E_CHANNEL_NOT_FOUND');
  const from = mark(s.a);
  s.a.emit('message:create', { channelId: String(newId()), content: 'into the void' });
  assertGuildError(await waitAfter(s.a, from, 'error:not_found', () => true, DELIVERY_MS), 'E_CHANNEL_NOT_FOUND');
  await stillWorks(s.a, s.b, s.channelId);
});

test('message:create by a non-member is error:permission E_FORBIDDEN (event and ack): nothing stored or broadcast', async () => {
  const s = await scene();
  const O = await guildUser();
  const o = await connectGuild(O, NODE1);
  await expectRefusedCreate({ ...s, a: o }, [{ channelId: s.channelId, content: 'let me in' }], 'error:permission', 'E_FORBIDDEN');
  assert.ok(o.connected, 'the refused socket stays connected');
  await stillWorks(s.a, s.b, s.channelId);
});

test('a malformed payload of any event never disconnects the socket nor disturbs another socket', async () => {
  const g = await newGuild({ members: 3 });
  const [A, B, C] = g.users;
  const { serverId, channelId } = g;
  const a = await connectGuild(A, NODE1);
  const a2 = await connectGuild(A, NODE2); // the same user's other socket
  const b = await connectGuild(B, NODE2);
  const c = await connectGuild(C, NODE1); // another user on the same node
  for (const s of [a, a2, b, c]) await joinChannel(s, channelId);
  for (const s of [a2, b, c]) await joinServer(s, serverId);
  const idBefore = a.id;
  const from2 = mark(a2);
  const fromB = mark(b);
  const fromC = mark(c);

  const junk = [[], [null], [42], ['x'], [true], [[1, 2]], [{}], [{ serverId: 'abc', channelId: 'abc' }],
    [{ serverId: {}, channelId: {} }], [{ serverId: -1, channelId: 1.5 }], [{ serverId: 'z'.repeat(100_000) }]];
  for (const event of ['server:join', 'channel:join', 'typing:start', 'typing:stop']) {
    for (const args of junk) a.emit(event, ...args);
  }
  // message:create: a few shapes only (the rate window's budget is 20).
  for (const args of [[], [null], ['x'], [{ channelId: {}, content: 'x' }], [{ channelId, content: '' }]]) {
    a.emit('message:create', ...args);
  }
  a.emit('no:such:event', { whatever: true });
  a.emit('message:create', { channelId, content: { $ne: null } }, 'extra', 'args');
  await sleep(1000);

  assert.ok(a.connected, 'the emitting socket is still connected');
  assert.equal(a.id, idBefore, 'and was not reconnected');
  for (const s of [a2, b, c]) {
    assert.ok(s.connected, `${s.__name} is still connected`);
  }
  assert.deepEqual(errorsAfter(a2, from2), [], "the user's other socket got none of the errors");
  for (const [s, from] of [[b, fromB], [c, fromC]]) {
    // Presence transitions of the sockets above may still arrive; anything else would be junk's.
    const seen = eventsOf(s)
      .slice(from)
      .filter((e) => e.event !== 'presence:update')
      .map((e) => `${e.event} ${JSON.stringify(e.data)?.slice(0, 100)}`);
    assert.deepEqual(seen, [], `${s.__name} saw nothing of it: ${seen.join(' | ')}`);
  }

  // Everything still works, in both directions, on both nodes.
  const fromA = await createMessage(a, channelId, `after the storm ${nonce()}`);
  for (const s of [a2, b, c]) await waitFor(s, 'message:new', (m) => m.id === fromA.id, DELIVERY_MS);
  const fromBMsg = await createMessage(b, channelId, `still fine ${nonce()}`);
  for (const s of [a, a2, c]) await waitFor(s, 'message:new', (m) => m.id === fromBMsg.id, DELIVERY_MS);
  a.emit('typing:start', { channelId });
  await waitFor(b, 'typing:update', (u) => Number(u.userId) === A.id && u.isTyping === true, DELIVERY_MS);
  await joinServer(a, serverId);
  assert.deepEqual(
    (await channelHistory(channelId)).map((h) => h.content).sort(),
    [fromA.content, fromBMsg.content].sort(),
    'only the two valid messages are stored',
  );
});
