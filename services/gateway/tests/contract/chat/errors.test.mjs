// Error handling (002): every documented code is reachable and shaped
// { ok: false, error, message, correlationId }; malformed payloads of every shape answer
// VALIDATION_ERROR (or, for events without an ack, nothing), never crash anything, and never
// reach the database.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  ackArgs,
  admin,
  allChatMessages,
  assertErrorAck,
  closeAll,
  connectUser,
  eventsOf,
  expectRefused,
  forgeJwt,
  join,
  newChat,
  newUser,
  nowSeconds,
  rid,
  send,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

test('VALIDATION_ERROR, FORBIDDEN, RATE_LIMITED and NOT_FOUND acks, and the UNAUTHORIZED handshake', async () => {
  const chat = await newChat({ members: 2 });
  const [A] = chat.users;
  const { chatId } = chat;
  const a = await connectUser(A, NODE1);

  assertErrorAck(await ack(a, 'room:join', {}), 'VALIDATION_ERROR');
  assertErrorAck(await ack(a, 'room:join', { chatId: rid('c-missing') }), 'FORBIDDEN');
  const outsiders = await newChat({ members: 1 });
  assertErrorAck(await ack(a, 'message:send', { chatId: outsiders.chatId, body: 'x', clientId: uuid() }), 'FORBIDDEN');

  const m = await send(a, chatId, 'to be read');
  assertErrorAck(await ack(a, 'receipt:read', { chatId, messageId: '987654321987' }), 'NOT_FOUND');
  // A message that exists, in a chat A is not a member of.
  const theirs = await admin('POST', `/v1/rooms/chat/${encodeURIComponent(outsiders.chatId)}/messages`, {
    senderId: outsiders.users[0].id,
    content: 'private',
    clientId: uuid(),
  });
  assertErrorAck(await ack(a, 'receipt:read', { chatId: outsiders.chatId, messageId: String(theirs.id) }), 'FORBIDDEN');
  assert.ok(m.serverId);

  // RATE_LIMITED, with a user who has sent nothing yet.
  const hasty = await connectUser(chat.users[1], NODE2);
  for (let i = 0; i < 10; i++) await send(hasty, chatId, `burst ${i}`);
  const limited = await ack(hasty, 'message:send', { chatId, body: 'eleventh', clientId: uuid() });
  assertErrorAck(limited, 'RATE_LIMITED');
  assert.equal(limited.message, 'Maximum 10 messages per 10 seconds');

  const err = await expectRefused(NODE2, forgeJwt({ sub: A.id, exp: nowSeconds() - 10 }));
  assert.equal(err.message, 'UNAUTHORIZED');
});

test('correlation ids differ between requests', async () => {
  const a = await connectUser(await newUser(), NODE2);
  const ids = new Set();
  for (let i = 0; i < 3; i++) {
    const res = await ack(a, 'room:join', { chatId: rid('c-missing') });
    assertErrorAck(res, 'FORBIDDEN');
    ids.add(res.correlationId);
  }
  assert.equal(ids.size, 3, 'each request has its own trace');
});

const HUGE = 'x'.repeat(100 * 1024);

/** Malformed argument lists, for an event whose valid payload has fields `fields`. */
function malformed(valid) {
  const shapes = [
    ['no argument', []],
    ['null', [null]],
    ['a number', [42]],
    ['a string', ['hello']],
    ['a boolean', [true]],
    ['an array', [[valid]]],
    ['an empty object', [{}]],
  ];
  for (const key of Object.keys(valid)) {
    const rest = { ...valid };
    delete rest[key];
    shapes.push([`without ${key}`, [rest]]);
    for (const [what, value] of [
      ['a number', 123],
      ['null', null],
      ['an object', {}],
      ['an array', []],
      ['a boolean', false],
    ]) {
      shapes.push([`${key} as ${what}`, [{ ...valid, [key]: value }]]);
    }
    shapes.push([`${key} empty`, [{ ...valid, [key]: '' }]]);
  }
  return shapes;
}

test('malformed payloads of every shape for every acked event answer VALIDATION_ERROR; nothing is written', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const { chatId } = chat;
  const a = await connectUser(A, NODE1);
  const b = await connectUser(B, NODE2);
  await join(a, chatId);
  await join(b, chatId);
  const valid = await send(b, chatId, 'the one valid message before');

  const events = {
    'room:join': { chatId },
    'room:leave': { chatId },
    'message:send': { chatId, body: 'hello', clientId: 'cid-malformed' },
    'receipt:read': { chatId, messageId: valid.serverId },
  };
  let checked = 0;
  for (const [event, payload] of Object.entries(events)) {
    for (const [what, args] of malformed(payload)) {
      let res;
      try {
        res = await ackArgs(a, event, args, 10000);
      } catch (e) {
        assert.fail(`${event} with ${what}: no ack (${e.message})`);
      }
      try {
        assertErrorAck(res, 'VALIDATION_ERROR');
      } catch (e) {
        e.message = `${event} with ${what}: ${e.message}`;
        throw e;
      }
      checked++;
    }
  }
  // Oversized and nested wrong types for message:send specifically.
  for (const [what, payload] of [
    ['a 100 KB body', { chatId, body: HUGE, clientId: uuid() }],
    ['body as a number', { chatId, body: 123, clientId: uuid() }],
    ['chatId as an object', { chatId: {}, body: 'x', clientId: uuid() }],
    ['clientId as an array', { chatId, body: 'x', clientId: [] }],
    ['body as an object', { chatId, body: { text: 'x' }, clientId: uuid() }],
    ['a 129-character clientId', { chatId, body: 'x', clientId: 'c'.repeat(129) }],
    ['chatId as a nested object', { chatId: { $ne: null }, body: 'x', clientId: uuid() }],
  ]) {
    assertErrorAck(await ack(a, 'message:send', payload, 10000), 'VALIDATION_ERROR');
    assert.ok(a.connected, `still connected after ${what}`);
    checked++;
  }
  assert.ok(checked > 50, `checked ${checked} malformed payloads`);
  assert.ok(a.connected, 'the socket survived every malformed payload');
  assert.ok(b.connected, "the other user's socket was not disturbed");

  // presence:ping takes {}; whatever else it is given, it answers (ok or VALIDATION_ERROR).
  for (const args of [[], [null], [42], ['x'], [[1]]]) {
    const res = await ackArgs(a, 'presence:ping', args, 10000);
    if (res.ok === true) assert.equal(typeof res.data?.serverTime, 'string');
    else assertErrorAck(res, 'VALIDATION_ERROR');
  }

  // Both sockets still work, in both directions.
  const fromA = await send(a, chatId, 'after the storm');
  await waitFor(b, 'message:new', (m) => m.clientId === fromA.clientId, 5000);
  const fromB = await send(b, chatId, 'still fine');
  await waitFor(a, 'message:new', (m) => m.clientId === fromB.clientId, 5000);

  // Nothing half-written: the history holds exactly the valid messages.
  const history = await allChatMessages(chatId, B.token, NODE1);
  assert.deepEqual(
    history.map((m) => m._id).sort(),
    [valid.serverId, fromA.serverId, fromB.serverId].sort(),
    `history: ${JSON.stringify(history.map((m) => m.body.slice(0, 20)))}`,
  );
});

test('malformed typing events are ignored without crashing anything', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await connectUser(A, NODE2);
  const b = await connectUser(B, NODE1);
  await join(a, chat.chatId);
  await join(b, chat.chatId);
  for (const event of ['typing:start', 'typing:stop']) {
    for (const args of [[], [null], [42], ['x'], [[chat.chatId]], [{}], [{ chatId: 5 }], [{ chatId: {} }], [{ chatId: HUGE }]]) {
      a.emit(event, ...args);
    }
  }
  await sleep(1000);
  assert.ok(a.connected, 'the emitting socket is still connected');
  assert.ok(b.connected, 'the other socket is still connected');
  assert.equal(eventsOf(b).filter((e) => e.event === 'typing:update').length, 0, 'nothing was broadcast');
  // And typing still works afterwards.
  a.emit('typing:start', { chatId: chat.chatId });
  await waitFor(b, 'typing:update', (u) => u.userId === A.id && u.state === 'start', 5000);
});

test('unknown events are ignored; the socket keeps working', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await connectUser(A, NODE1);
  const b = await connectUser(B, NODE2);
  await join(b, chat.chatId);
  a.emit('no:such:event', { anything: true });
  a.emit('message:new', { chatId: chat.chatId, body: 'spoofed broadcast' });
  await sleep(500);
  assert.ok(a.connected);
  assert.equal(eventsOf(b).filter((e) => e.event === 'message:new').length, 0, 'clients cannot inject broadcasts');
  const sent = await send(a, chat.chatId, 'real one');
  await waitFor(b, 'message:new', (m) => m.clientId === sent.clientId, 5000);
});
