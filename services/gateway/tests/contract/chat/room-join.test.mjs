// room:join / room:leave (002): acks, refusals, validation, and that leaving stops broadcasts.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  ackArgs,
  addMember,
  assertErrorAck,
  assertOk,
  closeAll,
  connectUser,
  expectNo,
  join,
  newChat,
  newUser,
  putChat,
  rid,
  send,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

test('joining a chat you are a member of answers { ok: true }', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const a = await connectUser(users[0], NODE1);
  const b = await connectUser(users[1], NODE2);
  assert.deepEqual(await ack(a, 'room:join', { chatId }), { ok: true });
  assert.deepEqual(await ack(b, 'room:join', { chatId }), { ok: true });
  // Joining again is harmless.
  assert.deepEqual(await ack(a, 'room:join', { chatId }), { ok: true });
});

test('joining a chat of which you are not a member is FORBIDDEN', async () => {
  const { chatId } = await newChat({ members: 2 });
  const outsider = await newUser();
  const s = await connectUser(outsider, NODE2);
  assertErrorAck(await ack(s, 'room:join', { chatId }), 'FORBIDDEN');
});

test('joining a chat that does not exist is FORBIDDEN, as for a non-member', async () => {
  const user = await newUser();
  const s = await connectUser(user, NODE1);
  assertErrorAck(await ack(s, 'room:join', { chatId: rid('c-missing') }), 'FORBIDDEN');
});

test('a refused join does not put the socket in the room', async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const outsider = await newUser();
  const s = await connectUser(outsider, NODE2);
  assertErrorAck(await ack(s, 'room:join', { chatId }), 'FORBIDDEN');
  const member = await connectUser(users[0], NODE1);
  const sent = await send(member, chatId);
  await expectNo(s, 'message:new', 1000, (m) => m.clientId === sent.clientId);
});

const invalidJoinPayloads = [
  ['an object without chatId', [{}]],
  ['chatId as a number', [{ chatId: 42 }]],
  ['chatId null', [{ chatId: null }]],
  ['chatId as an object', [{ chatId: {} }]],
  ['chatId as an array', [{ chatId: ['x'] }]],
  ['an empty chatId', [{ chatId: '' }]],
  ['null instead of an object', [null]],
  ['a string instead of an object', ['c-some-chat']],
  ['a number instead of an object', [7]],
  ['an array instead of an object', [[{ chatId: 'x' }]]],
  ['no argument at all', []],
];

for (const event of ['room:join', 'room:leave']) {
  for (const [what, args] of invalidJoinPayloads) {
    test(`${event} with ${what} is VALIDATION_ERROR`, async () => {
      const user = await newUser();
      const s = await connectUser(user, NODE1);
      assertErrorAck(await ackArgs(s, event, args), 'VALIDATION_ERROR');
      assert.ok(s.connected, 'the socket stays connected');
    });
  }
}

test('room:leave is idempotent: twice answers { ok: true } both times', async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const s = await connectUser(users[0], NODE2);
  await join(s, chatId);
  assert.deepEqual(await ack(s, 'room:leave', { chatId }), { ok: true });
  assert.deepEqual(await ack(s, 'room:leave', { chatId }), { ok: true });
});

test('room:leave of a chat never joined answers { ok: true }', async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const s = await connectUser(users[0], NODE1);
  assertOk(await ack(s, 'room:leave', { chatId }));
});

test('after room:leave no message:new of that chat arrives', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const sender = await connectUser(users[0], NODE1);
  const leaver = await connectUser(users[1], NODE2);
  await join(sender, chatId);
  await join(leaver, chatId);

  // Joined: it arrives (this also proves delivery works before the leave).
  const before = await send(sender, chatId, 'before leaving');
  await waitFor(leaver, 'message:new', (m) => m.clientId === before.clientId, 5000);

  assert.deepEqual(await ack(leaver, 'room:leave', { chatId }), { ok: true });
  const after = await send(sender, chatId, 'after leaving');
  // The sender (still in the room) gets it, so it was broadcast; the leaver does not.
  await waitFor(sender, 'message:new', (m) => m.clientId === after.clientId, 5000);
  await expectNo(leaver, 'message:new', 1000, (m) => m.clientId === after.clientId);
});

test('a chat created after connecting can be joined at once', async () => {
  const user = await newUser();
  const s = await connectUser(user, NODE2);
  const chatId = rid('c');
  await putChat(chatId, { type: 'group', title: 'late', createdBy: user.id });
  await addMember(chatId, user.id);
  assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true });
});
