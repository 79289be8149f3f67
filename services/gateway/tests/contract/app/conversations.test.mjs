// conversations:join / conversations:leave (001): acks, refusals (FORBIDDEN, also for a
// conversation that does not exist), validation (VALIDATION_ERROR), joining without an ack, and
// what membership of the `conversation:<id>` room changes. Room-only deliveries are published with
// POST /v1/rooms/conversation/{id}/events, which reaches the room and nobody else.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  QUIET_MS,
  ack,
  ackArgs,
  closeAll,
  count,
  expectNo,
  rid,
  sleep,
  waitFor,
} from '../helpers.mjs';
import {
  DELIVERY_MS,
  addParticipant,
  appUser,
  assertAppError,
  connectApp,
  joinConversation,
  leaveConversation,
  newConversation,
  postMessage,
  publishToConversation,
  putConversation,
  removeParticipant,
  waitReady,
} from './helpers.mjs';

afterEach(closeAll);

/** Publishes a room-only event and answers a predicate matching it. */
async function roomPing(conversationId, node = NODE1) {
  const marker = rid('ping');
  await publishToConversation(conversationId, 'custom:room-ping', { marker }, node);
  return (d) => d.marker === marker;
}

test('conversations:join by a participant answers { success: true, conversationId } on both nodes', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const a = await connectApp(users[0], NODE1);
  const b = await connectApp(users[1], NODE2);
  assert.deepEqual(await ack(a, 'conversations:join', { conversationId }), { success: true, conversationId });
  assert.deepEqual(await ack(b, 'conversations:join', { conversationId }), { success: true, conversationId });
  // Joining again is harmless.
  assert.deepEqual(await ack(a, 'conversations:join', { conversationId }), { success: true, conversationId });
});

test('a joined socket receives conversation-room publishes on either node; a participant that did not join does not', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const joined = await connectApp(A, NODE1);
  const notJoined = await connectApp(B, NODE2);
  const joined2 = await connectApp(B, NODE1);
  await joinConversation(joined, conversationId);
  await joinConversation(joined2, conversationId);
  const match = await roomPing(conversationId, NODE2);
  for (const s of [joined, joined2]) await waitFor(s, 'custom:room-ping', match, DELIVERY_MS);
  await expectNo(notJoined, 'custom:room-ping', QUIET_MS);
  assert.equal(count(joined, 'custom:room-ping'), 1, 'once');
});

test('conversations:join by a non-participant is FORBIDDEN and does not join the room', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const outsider = await appUser();
  const o = await connectApp(outsider, NODE2);
  const res = await ack(o, 'conversations:join', { conversationId });
  assertAppError(res, 'FORBIDDEN');
  assert.ok(o.connected, 'the socket stays connected');

  const member = await connectApp(users[0], NODE1);
  await joinConversation(member, conversationId);
  const match = await roomPing(conversationId);
  await waitFor(member, 'custom:room-ping', match, DELIVERY_MS);
  await expectNo(o, 'custom:room-ping', QUIET_MS);
});

test('conversations:join of a conversation that does not exist is FORBIDDEN, as for a non-participant', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE1);
  assertAppError(await ack(s, 'conversations:join', { conversationId: rid('conv-missing') }), 'FORBIDDEN');
});

test('correlation ids are per request', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE2);
  const ids = new Set();
  for (let i = 0; i < 3; i++) {
    const res = await ack(s, 'conversations:join', { conversationId: rid('conv-missing') });
    assertAppError(res, 'FORBIDDEN');
    ids.add(res.correlationId);
  }
  assert.equal(ids.size, 3, 'each request has its own trace id');
});

const invalidJoinPayloads = [
  ['no argument at all', []],
  ['null instead of an object', [null]],
  ['a number instead of an object', [7]],
  ['a string instead of an object', ['conv-1']],
  ['a boolean instead of an object', [true]],
  ['an array instead of an object', [[{ conversationId: 'conv-1' }]]],
  ['an object without conversationId', [{}]],
  ['an object with conversationId misspelled', [{ conversationID: 'conv-1' }]],
  ['conversationId as a number', [{ conversationId: 42 }]],
  ['conversationId null', [{ conversationId: null }]],
  ['conversationId as an object', [{ conversationId: {} }]],
  ['conversationId as a nested query object', [{ conversationId: { $ne: null } }]],
  ['conversationId as an array', [{ conversationId: ['conv-1'] }]],
  ['conversationId as a boolean', [{ conversationId: true }]],
  ['an empty conversationId', [{ conversationId: '' }]],
  ['a 257-character conversationId', [{ conversationId: 'c'.repeat(257) }]],
  ['a 1,000-character conversationId', [{ conversationId: 'c'.repeat(1000) }]],
];

for (const [what, args] of invalidJoinPayloads) {
  test(`conversations:join with ${what} is VALIDATION_ERROR`, async () => {
    const user = await appUser();
    const s = await connectApp(user, NODE1);
    assertAppError(await ackArgs(s, 'conversations:join', args), 'VALIDATION_ERROR');
    assert.ok(s.connected, 'the socket stays connected');
  });
}

test('a 256-character conversationId is well-formed: FORBIDDEN when it does not exist, not VALIDATION_ERROR', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE2);
  assertAppError(await ack(s, 'conversations:join', { conversationId: `z${'9'.repeat(255)}` }), 'FORBIDDEN');
});

test('after malformed joins the socket still joins and receives', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const a = await connectApp(users[0], NODE1);
  for (const [, args] of invalidJoinPayloads) {
    assertAppError(await ackArgs(a, 'conversations:join', args), 'VALIDATION_ERROR');
  }
  await joinConversation(a, conversationId);
  const msg = await postMessage(conversationId, users[1].id, 'after the storm', NODE2);
  await waitFor(a, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
});

test('conversations:join without an ack callback still joins (and nothing breaks)', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const s = await connectApp(users[0], NODE2);
  s.emit('conversations:join', { conversationId });
  // Malformed payloads without a callback are ignored quietly too.
  s.emit('conversations:join');
  s.emit('conversations:join', null);
  s.emit('conversations:join', { conversationId: 5 });
  s.emit('conversations:join', { conversationId: rid('conv-missing') });
  await sleep(500);
  assert.ok(s.connected, 'still connected');
  const match = await roomPing(conversationId, NODE1);
  await waitFor(s, 'custom:room-ping', match, DELIVERY_MS);
});

test('conversations:leave answers { success: true, conversationId }, and is idempotent', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const s = await connectApp(users[0], NODE1);
  await joinConversation(s, conversationId);
  await leaveConversation(s, conversationId);
  await leaveConversation(s, conversationId);
});

test('conversations:leave of a conversation never joined answers { success: true, conversationId }', async () => {
  const { conversationId, users } = await newConversation({ members: 1 });
  const s = await connectApp(users[0], NODE2);
  await leaveConversation(s, conversationId);
});

test('conversations:leave without an ack callback leaves', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const stays = await connectApp(users[0], NODE1);
  const leaver = await connectApp(users[1], NODE2);
  await joinConversation(stays, conversationId);
  await joinConversation(leaver, conversationId);
  leaver.emit('conversations:leave', { conversationId });
  await sleep(500);
  const match = await roomPing(conversationId, NODE2);
  await waitFor(stays, 'custom:room-ping', match, DELIVERY_MS);
  await expectNo(leaver, 'custom:room-ping', QUIET_MS);
});

test('after conversations:leave, room-only deliveries stop; messages still arrive once through the user room', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const stays = await connectApp(A, NODE1);
  const leaver = await connectApp(B, NODE2);
  await joinConversation(stays, conversationId);
  await joinConversation(leaver, conversationId);

  // Joined: both get the room publish.
  const before = await roomPing(conversationId);
  await waitFor(stays, 'custom:room-ping', before, DELIVERY_MS);
  await waitFor(leaver, 'custom:room-ping', before, DELIVERY_MS);

  await leaveConversation(leaver, conversationId);
  const after = await roomPing(conversationId, NODE2);
  await waitFor(stays, 'custom:room-ping', after, DELIVERY_MS); // it was published
  await expectNo(leaver, 'custom:room-ping', QUIET_MS, after);

  // B is still a participant: messages:new of the conversation reach B's user room, once.
  const msg = await postMessage(conversationId, A.id, 'after leaving', NODE1);
  await waitFor(leaver, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
  await waitFor(stays, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
  await sleep(QUIET_MS);
  assert.equal(count(leaver, 'messages:new', (p) => p.message.id === msg.id), 1, 'once');
});

test('a conversation created after connecting can be joined at once', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE1);
  await waitReady(s, user.id);
  const conversationId = await putConversation(rid('conv-late'));
  await addParticipant(conversationId, user.id);
  await joinConversation(s, conversationId);
});

test('a participant added after a refused join may then join', async () => {
  const conversationId = await putConversation();
  const user = await appUser();
  const s = await connectApp(user, NODE2);
  assertAppError(await ack(s, 'conversations:join', { conversationId }), 'FORBIDDEN');
  await addParticipant(conversationId, user.id, 'member');
  await joinConversation(s, conversationId);
});

test("revoking a participant takes their sockets out of the conversation room at once, on every node", async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const a = await connectApp(A, NODE1);
  const b1 = await connectApp(B, NODE2);
  const b2 = await connectApp(B, NODE1);
  await joinConversation(a, conversationId);
  await joinConversation(b1, conversationId);
  await joinConversation(b2, conversationId);

  await removeParticipant(conversationId, B.id);
  const match = await roomPing(conversationId, NODE2);
  await waitFor(a, 'custom:room-ping', match, DELIVERY_MS);
  await expectNo(b1, 'custom:room-ping', QUIET_MS);
  await expectNo(b2, 'custom:room-ping', 0);

  // No longer a participant: no messages either, and not among the recipients.
  const msg = await postMessage(conversationId, A.id, 'after the revoke', NODE2);
  const got = await waitFor(a, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
  assert.deepEqual(got.recipients, [A.id]);
  await expectNo(b1, 'messages:new', QUIET_MS);
  await expectNo(b2, 'messages:new', 0);

  // And joining again is refused.
  assertAppError(await ack(b1, 'conversations:join', { conversationId }), 'FORBIDDEN');
});

test('conversations:leave with a malformed payload never disconnects; an ack, if any, is VALIDATION_ERROR', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE1);
  for (const args of [[], [null], [42], ['x'], [{}], [{ conversationId: 5 }], [{ conversationId: '' }]]) {
    let res;
    try {
      res = await ackArgs(s, 'conversations:leave', args, 2000);
    } catch {
      res = undefined; // not answering is acceptable for leave
    }
    if (res !== undefined) assertAppError(res, 'VALIDATION_ERROR');
    assert.ok(s.connected, `still connected after conversations:leave ${JSON.stringify(args)}`);
  }
});
