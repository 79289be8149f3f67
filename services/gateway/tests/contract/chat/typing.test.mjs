// typing:start / typing:stop (002): fire-and-forget, to the room except the sender, on every
// node; stops by itself after the typing TTL (3 s in this cluster); non-members are ignored.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  TYPING_TTL_MS,
  ack,
  closeAll,
  connectUser,
  count,
  eventsOf,
  expectNo,
  join,
  newChat,
  newUser,
  sleep,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

async function room() {
  const chat = await newChat({ members: 2 });
  const a = await connectUser(chat.users[0], NODE1);
  const b = await connectUser(chat.users[1], NODE2);
  await join(a, chat.chatId);
  await join(b, chat.chatId);
  return { ...chat, a, b };
}

const isTyping = (chatId, userId, state) => (u) => u.chatId === chatId && u.userId === userId && u.state === state;

test('typing:start reaches the other node as typing:update start; the sender gets nothing', async () => {
  const { chatId, users, a, b } = await room();
  a.emit('typing:start', { chatId });
  const update = await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'start'), 5000);
  assert.deepEqual(update, { chatId, userId: users[0].id, state: 'start' });
  await expectNo(a, 'typing:update', 800);
});

test('typing:stop reaches the room as typing:update stop', async () => {
  const { chatId, users, a, b } = await room();
  a.emit('typing:start', { chatId });
  await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'start'), 5000);
  a.emit('typing:stop', { chatId });
  const update = await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'stop'), 5000);
  assert.deepEqual(update, { chatId, userId: users[0].id, state: 'stop' });
  await expectNo(a, 'typing:update', 500);
});

test('typing stops by itself after the typing TTL without typing:stop', async () => {
  const { chatId, users, a, b } = await room();
  a.emit('typing:start', { chatId });
  await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'start'), 5000);
  const update = await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'stop'), TYPING_TTL_MS + 5000);
  assert.deepEqual(update, { chatId, userId: users[0].id, state: 'stop' });
});

test('a repeated typing:start is not broadcast again (broadcasts are throttled); the stop comes once', async () => {
  const { chatId, users, a, b } = await room();
  a.emit('typing:start', { chatId });
  await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'start'), 5000);
  a.emit('typing:start', { chatId });
  a.emit('typing:start', { chatId });
  a.emit('typing:stop', { chatId });
  await waitFor(b, 'typing:update', isTyping(chatId, users[0].id, 'stop'), 5000);
  a.emit('typing:stop', { chatId });
  await sleep(500);
  const updates = eventsOf(b).filter((e) => e.event === 'typing:update' && e.data?.chatId === chatId);
  assert.deepEqual(updates.map((e) => e.data.state), ['start', 'stop']);
});

test('typing in both directions across the nodes', async () => {
  const { chatId, users, a, b } = await room();
  b.emit('typing:start', { chatId });
  await waitFor(a, 'typing:update', isTyping(chatId, users[1].id, 'start'), 5000);
  b.emit('typing:stop', { chatId });
  await waitFor(a, 'typing:update', isTyping(chatId, users[1].id, 'stop'), 5000);
  await expectNo(b, 'typing:update', 300);
});

test("a non-member's typing reaches nobody and gets no error", async () => {
  const { chatId, a, b } = await room();
  const outsider = await newUser();
  const o = await connectUser(outsider, NODE1);
  o.emit('typing:start', { chatId });
  o.emit('typing:stop', { chatId });
  await sleep(1000);
  assert.equal(count(a, 'typing:update', (u) => u.userId === outsider.id), 0, 'A saw no typing from a non-member');
  assert.equal(count(b, 'typing:update', (u) => u.userId === outsider.id), 0, 'B saw no typing from a non-member');
  const received = eventsOf(o).map((e) => e.event);
  assert.deepEqual(received, [], `the non-member got no event at all (no error): ${received.join(', ')}`);
  assert.ok(o.connected, 'and stays connected');
  const pong = await ack(o, 'presence:ping', {});
  assert.equal(pong.ok, true);
});

test('typing in a chat that does not exist is silently ignored', async () => {
  const user = await newUser();
  const s = await connectUser(user, NODE2);
  s.emit('typing:start', { chatId: 'c-does-not-exist' });
  await sleep(800);
  assert.deepEqual(eventsOf(s).map((e) => e.event), []);
  assert.ok(s.connected);
});
