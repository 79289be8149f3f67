// server:member_joined / server:member_left (000): an integration-API grant or revoke of a server
// membership is announced to server:<id> on every node; a removed member's sockets leave the
// server room and its channel rooms at once, on every node, and are refused from then on.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, expectNo, waitFor } from '../helpers.mjs';
import {
  DELIVERY_MS,
  addServerMember,
  assertFailAck,
  assertGuildError,
  connectGuild,
  emitAck,
  errorsAfter,
  guildUser,
  joinChannel,
  joinServer,
  mark,
  newGuild,
  nonce,
  postMessage,
  removeServerMember,
  roomEvent,
  waitAfter,
} from './helpers.mjs';

afterEach(closeAll);

const errorsOf = (s, from) => errorsAfter(s, from).map((e) => e.event);

const about = (serverId, userId) => (e) => Number(e.serverId) === serverId && Number(e.userId) === userId;

test('an admin PUT of a server membership sends server:member_joined { serverId, userId, username } to server:<id> on both nodes', async () => {
  const { serverId, channelId, users } = await newGuild({ members: 3 });
  const [O1, O2, P] = users;
  const o1 = await connectGuild(O1, NODE1);
  const o2 = await connectGuild(O2, NODE2);
  await joinServer(o1, serverId);
  await joinServer(o2, serverId);
  const p = await connectGuild(P, NODE2); // a member outside the server room
  await joinChannel(p, channelId);
  const U = await guildUser();
  const u = await connectGuild(U, NODE1); // connected before the grant

  await addServerMember(serverId, U.id);
  for (const s of [o1, o2]) {
    const e = await waitFor(s, 'server:member_joined', about(serverId, U.id), DELIVERY_MS);
    assert.deepEqual(e, { serverId, userId: U.id, username: U.username });
  }
  await expectNo(p, 'server:member_joined', QUIET_MS);

  // The grant works at once for the new member's open socket.
  await joinServer(u, serverId);
  await joinChannel(u, channelId);
});

test('an admin DELETE of a server membership sends server:member_left { serverId, userId, username } to server:<id>', async () => {
  const { serverId, users } = await newGuild({ members: 3, channels: 0 });
  const [O1, O2, R] = users;
  const o1 = await connectGuild(O1, NODE1);
  const o2 = await connectGuild(O2, NODE2);
  await joinServer(o1, serverId);
  await joinServer(o2, serverId);

  await removeServerMember(serverId, R.id);
  for (const s of [o1, o2]) {
    const e = await waitFor(s, 'server:member_left', about(serverId, R.id), DELIVERY_MS);
    assert.deepEqual(e, { serverId, userId: R.id, username: R.username });
  }
});

test("after a DELETE the removed member's sockets leave server:<id> and its channel rooms at once, on both nodes", async () => {
  const { serverId, channelId, users } = await newGuild({ members: 2 });
  const [O, R] = users;
  const o = await connectGuild(O, NODE2);
  const r1 = await connectGuild(R, NODE1);
  const r2 = await connectGuild(R, NODE2);
  for (const s of [o, r1, r2]) {
    await joinServer(s, serverId);
    await joinChannel(s, channelId);
  }
  // Before: a message and a server-room publish reach R's sockets.
  const before = `before ${nonce()}`;
  await postMessage(channelId, O.id, before);
  const n0 = nonce();
  await roomEvent('server', serverId, 'guild:probe', { n: n0 }, NODE2);
  for (const s of [o, r1, r2]) {
    await waitFor(s, 'message:new', (m) => m.content === before, DELIVERY_MS);
    await waitFor(s, 'guild:probe', (d) => d.n === n0, DELIVERY_MS);
  }

  const from1 = mark(r1);
  const from2 = mark(r2);
  await removeServerMember(serverId, R.id);
  await waitFor(o, 'server:member_left', about(serverId, R.id), DELIVERY_MS);

  const after = `after ${nonce()}`;
  await postMessage(channelId, O.id, after, NODE1);
  const n = nonce();
  await roomEvent('server', serverId, 'guild:probe', { n }, NODE1);
  await waitFor(o, 'message:new', (m) => m.content === after, DELIVERY_MS);
  await waitFor(o, 'guild:probe', (d) => d.n === n, DELIVERY_MS);
  o.emit('typing:start', { channelId });
  for (const [s, from] of [[r1, from1], [r2, from2]]) {
    await expectNo(s, 'message:new', QUIET_MS, (m) => m.content === after);
    await expectNo(s, 'guild:probe', 0, (d) => d.n === n);
    await expectNo(s, 'typing:update', 0);
    assert.deepEqual(errorsOf(s, from), [], 'no error event');
    assert.ok(s.connected, 'the removed member stays connected');
  }

  // And from then on R is refused: sending, typing and joining again.
  const fromSend = mark(r1);
  const res = await emitAck(r1, 'message:create', { channelId, content: 'still here?' });
  assertFailAck(res, 'E_FORBIDDEN');
  assertGuildError(await waitAfter(r1, fromSend, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  const fromTyping = mark(r2);
  r2.emit('typing:start', { channelId });
  assertGuildError(await waitAfter(r2, fromTyping, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  const fromJoin = mark(r1);
  r1.emit('server:join', { serverId });
  assertGuildError(await waitAfter(r1, fromJoin, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  const fromChan = mark(r2);
  r2.emit('channel:join', { channelId });
  assertGuildError(await waitAfter(r2, fromChan, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  await expectNo(o, 'message:new', QUIET_MS, (m) => m.content === 'still here?');
});

test('a member removed and granted again receives the server room events after joining again', async () => {
  const { serverId, users } = await newGuild({ members: 2, channels: 0 });
  const [O, R] = users;
  const o = await connectGuild(O, NODE1);
  const r = await connectGuild(R, NODE2);
  await joinServer(o, serverId);
  await joinServer(r, serverId);
  await removeServerMember(serverId, R.id);
  await waitFor(o, 'server:member_left', about(serverId, R.id), DELIVERY_MS);
  await addServerMember(serverId, R.id);
  await waitFor(o, 'server:member_joined', about(serverId, R.id), DELIVERY_MS);
  await joinServer(r, serverId);
  const n = nonce();
  await roomEvent('server', serverId, 'guild:probe', { n });
  await waitFor(r, 'guild:probe', (d) => d.n === n, DELIVERY_MS);
});
