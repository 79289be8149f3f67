// typing:start / typing:stop (000): typing:update { channelId, userId, username, isTyping } to
// the sockets that joined channel:<id>, never to the typing user's own sockets; the typer needs
// membership of the channel's server, not a channel:join; typing stops by itself 3 s after the
// last typing:start; a non-member gets error:permission E_FORBIDDEN, a missing channel
// error:not_found E_CHANNEL_NOT_FOUND, and nothing is broadcast.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, TYPING_TTL_MS, closeAll, count, expectNo, sleep, waitFor } from '../helpers.mjs';
import {
  DELIVERY_MS,
  assertGuildError,
  connectGuild,
  eventsAfter,
  guildUser,
  joinChannel,
  joinServer,
  mark,
  newGuild,
  newId,
  waitAfter,
  waitCount,
} from './helpers.mjs';

afterEach(closeAll);

const typingOf = (channelId, userId, isTyping) => (u) =>
  Number(u.channelId) === channelId && Number(u.userId) === userId && u.isTyping === isTyping;

/** A channel with typer A (a on node 1, joined nowhere) and receiver B (b on node 2, joined). */
async function scene() {
  const g = await newGuild({ members: 2 });
  const [A, B] = g.users;
  const a = await connectGuild(A, NODE1);
  const b = await connectGuild(B, NODE2);
  await joinChannel(b, g.channelId);
  return { ...g, A, B, a, b };
}

test('typing:start reaches the channel room on the other node as typing:update { channelId, userId, username, isTyping: true }', async () => {
  const { channelId, A, a, b } = await scene();
  a.emit('typing:start', { channelId });
  const update = await waitFor(b, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  assert.deepEqual(update, { channelId, userId: A.id, username: A.username, isTyping: true });
  await expectNo(a, 'typing:update', QUIET_MS);
  await expectNo(a, 'error:permission', 0);
});

test('typing:stop reaches the room as typing:update isTyping: false', async () => {
  const { channelId, A, a, b } = await scene();
  a.emit('typing:start', { channelId });
  await waitFor(b, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  a.emit('typing:stop', { channelId });
  const update = await waitFor(b, 'typing:update', typingOf(channelId, A.id, false), DELIVERY_MS);
  assert.deepEqual(update, { channelId, userId: A.id, username: A.username, isTyping: false });
  await expectNo(a, 'typing:update', QUIET_MS);
});

test('typing takes the channel id as a numeric string too and renders numbers', async () => {
  const { channelId, A, B, a, b } = await scene();
  a.emit('typing:start', { channelId: String(channelId) });
  const update = await waitFor(b, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  assert.equal(typeof update.channelId, 'number');
  assert.equal(typeof update.userId, 'number');
  // And in the other direction, from node 2 to node 1.
  await joinChannel(a, channelId);
  b.emit('typing:start', { channelId: String(channelId) });
  const back = await waitFor(a, 'typing:update', typingOf(channelId, B.id, true), DELIVERY_MS);
  assert.deepEqual(back, { channelId, userId: B.id, username: B.username, isTyping: true });
});

test("the typing user's own sockets get nothing, even one that joined the channel on the other node", async () => {
  const { channelId, A, a, b } = await scene();
  await joinChannel(a, channelId);
  const a2 = await connectGuild(A, NODE2);
  await joinChannel(a2, channelId);
  a.emit('typing:start', { channelId });
  await waitFor(b, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  a.emit('typing:stop', { channelId });
  await waitFor(b, 'typing:update', typingOf(channelId, A.id, false), DELIVERY_MS);
  await expectNo(a2, 'typing:update', QUIET_MS);
  await expectNo(a, 'typing:update', 0);
});

test('only sockets that joined the channel receive typing:update', async () => {
  const g = await newGuild({ members: 3 });
  const [A, B, C] = g.users;
  const a = await connectGuild(A, NODE1);
  const b = await connectGuild(B, NODE2);
  await joinChannel(b, g.channelId);
  const c = await connectGuild(C, NODE2); // a member in the server room, not the channel's
  await joinServer(c, g.serverId);
  a.emit('typing:start', { channelId: g.channelId });
  await waitFor(b, 'typing:update', typingOf(g.channelId, A.id, true), DELIVERY_MS);
  await expectNo(c, 'typing:update', QUIET_MS);
});

test('typing stops by itself 3 s after the last typing:start: isTyping false without typing:stop', async () => {
  const { channelId, A, a, b } = await scene();
  a.emit('typing:start', { channelId });
  await waitFor(b, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  const update = await waitFor(b, 'typing:update', typingOf(channelId, A.id, false), TYPING_TTL_MS + 5000);
  assert.deepEqual(update, { channelId, userId: A.id, username: A.username, isTyping: false });
  await expectNo(a, 'typing:update', 0);
});

test('a repeated typing:start is not broadcast again and postpones the automatic stop', async () => {
  const { channelId, A, a, b } = await scene();
  const from = mark(b);
  a.emit('typing:start', { channelId });
  await waitAfter(b, from, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  // Starts every half TTL for twice the TTL: still typing all along, announced once.
  for (let i = 0; i < 4; i++) {
    await sleep(TYPING_TTL_MS / 2);
    a.emit('typing:start', { channelId });
  }
  await sleep(TYPING_TTL_MS / 2);
  const updates = () => eventsAfter(b, from, 'typing:update');
  assert.equal(updates().filter(typingOf(channelId, A.id, false)).length, 0, 'no automatic stop while starts keep coming');
  assert.equal(updates().filter(typingOf(channelId, A.id, true)).length, 1, 'a repeated start is not broadcast again');
  await waitAfter(b, from, 'typing:update', typingOf(channelId, A.id, false), TYPING_TTL_MS + 5000);
});

test('typing again after the automatic stop starts a new typing:update isTyping true', async () => {
  const { channelId, A, a, b } = await scene();
  a.emit('typing:start', { channelId });
  await waitFor(b, 'typing:update', typingOf(channelId, A.id, false), TYPING_TTL_MS + 5000);
  const from = mark(b);
  a.emit('typing:start', { channelId });
  await waitAfter(b, from, 'typing:update', typingOf(channelId, A.id, true), DELIVERY_MS);
  a.emit('typing:stop', { channelId });
  await waitAfter(b, from, 'typing:update', typingOf(channelId, A.id, false), DELIVERY_MS);
});

test("a non-member's typing is error:permission E_FORBIDDEN and nothing is broadcast", async () => {
  const { channelId, b } = await scene();
  const O = await guildUser();
  const o = await connectGuild(O, NODE1);
  o.emit('typing:start', { channelId });
  assertGuildError(await waitFor(o, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  o.emit('typing:stop', { channelId });
  const [, second] = await waitCount(o, 'error:permission', 2);
  assertGuildError(second, 'E_FORBIDDEN');
  await sleep(QUIET_MS);
  assert.equal(count(b, 'typing:update', (u) => Number(u.userId) === O.id), 0, 'nothing from the non-member was broadcast');
  assert.equal(count(b, 'typing:update'), 0);
  assert.ok(o.connected, 'the refused socket stays connected');
});

test('typing in a channel that does not exist is error:not_found E_CHANNEL_NOT_FOUND', async () => {
  const { a, b } = await scene();
  a.emit('typing:start', { channelId: newId() });
  assertGuildError(await waitFor(a, 'error:not_found', () => true, DELIVERY_MS), 'E_CHANNEL_NOT_FOUND');
  await expectNo(b, 'typing:update', QUIET_MS);
  await expectNo(a, 'error:permission', 0);
  assert.ok(a.connected);
});
