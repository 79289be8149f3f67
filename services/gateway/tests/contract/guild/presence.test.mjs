// presence:update (000): { serverId, onlineUserIds } to server:<id> when one of its members comes
// online on /guild (first socket) or goes offline (last socket), across the nodes; throttled (2 s)
// by delaying, never dropping. "Online" means connected to /guild: the chat namespace does not
// count. A node being killed is covered elsewhere (fault suites), not here.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, PRESENCE_THROTTLE_MS, QUIET_MS, closeAll, connect, mintToken, sleep, waitFor } from '../helpers.mjs';
import {
  addServerMember,
  asc,
  assertPresence,
  connectGuild,
  eventsAfter,
  expectNoAfter,
  guildUser,
  joinServer,
  mark,
  newGuild,
  presenceWith,
  putServer,
  newId,
  waitAfter,
  PRESENCE_DEADLINE_MS,
} from './helpers.mjs';

afterEach(closeAll);

/** A server with members O (observer, joined on node 2) and M (not connected yet). */
async function scene() {
  const g = await newGuild({ members: 2, channels: 0 });
  const [O, M] = g.users;
  const o = await connectGuild(O, NODE2);
  await joinServer(o, g.serverId);
  await waitFor(o, 'presence:update', presenceWith(g.serverId, [O.id]), PRESENCE_DEADLINE_MS);
  return { ...g, O, M, o };
}

test('a member coming online reaches server:<id> on the other node; going offline too', async () => {
  const { serverId, O, M, o } = await scene();
  const from = mark(o);
  const m = await connectGuild(M, NODE1);
  const online = await waitAfter(o, from, 'presence:update', presenceWith(serverId, [O.id, M.id]), PRESENCE_DEADLINE_MS);
  assertPresence(online, serverId, [O.id, M.id]);

  const fromOnline = mark(o);
  m.close();
  const offline = await waitAfter(o, fromOnline, 'presence:update', presenceWith(serverId, [O.id], [M.id]), PRESENCE_DEADLINE_MS);
  assertPresence(offline, serverId, [O.id]);
});

test('two sockets on two nodes: closing one keeps the member online, closing both sends offline', async () => {
  const { serverId, O, M, o } = await scene();
  const m1 = await connectGuild(M, NODE1);
  const m2 = await connectGuild(M, NODE2);
  await waitFor(o, 'presence:update', presenceWith(serverId, [O.id, M.id]), PRESENCE_DEADLINE_MS);

  const from = mark(o);
  m1.close();
  // Long enough for a throttled broadcast and for a socket's presence entry to expire.
  await expectNoAfter(o, from, 'presence:update', PRESENCE_DEADLINE_MS - 2000, presenceWith(serverId, [], [M.id]));
  assert.ok(m2.connected);

  m2.close();
  const offline = await waitAfter(o, from, 'presence:update', presenceWith(serverId, [O.id], [M.id]), PRESENCE_DEADLINE_MS);
  assertPresence(offline, serverId, [O.id]);
});

test('after a quick disconnect/reconnect/disconnect the last broadcast says offline (throttle delays, never drops)', async () => {
  const { serverId, O, M, o } = await scene();
  let m = await connectGuild(M, NODE1);
  await waitFor(o, 'presence:update', presenceWith(serverId, [M.id]), PRESENCE_DEADLINE_MS);
  m.close();
  m = await connectGuild(M, NODE2);
  m.close();
  await waitFor(o, 'presence:update', presenceWith(serverId, [O.id], [M.id]), PRESENCE_DEADLINE_MS);
  await sleep(PRESENCE_THROTTLE_MS + 1000);
  const updates = eventsAfter(o, 0, 'presence:update', (p) => Number(p.serverId) === serverId);
  assertPresence(updates.at(-1), serverId, [O.id]);
});

test('after a quick disconnect/reconnect the last broadcast says online', async () => {
  const { serverId, O, M, o } = await scene();
  let m = await connectGuild(M, NODE1);
  await waitFor(o, 'presence:update', presenceWith(serverId, [M.id]), PRESENCE_DEADLINE_MS);
  m.close();
  m = await connectGuild(M, NODE2);
  // Whatever was coalesced or delayed has been broadcast by now.
  await sleep(PRESENCE_DEADLINE_MS);
  const updates = eventsAfter(o, 0, 'presence:update', (p) => Number(p.serverId) === serverId);
  assertPresence(updates.at(-1), serverId, [O.id, M.id]);
  assert.ok(m.connected);
});

test('online is per namespace: a member connected only to the chat namespace is not in onlineUserIds', async () => {
  const g = await newGuild({ members: 3, channels: 0 });
  const [O, M, C] = g.users;
  const { serverId } = g;
  await connect(NODE1, await mintToken(String(C.id)), { name: `${C.id}@chat` }); // chat (/), not /guild
  await sleep(QUIET_MS);
  const o = await connectGuild(O, NODE2);
  await joinServer(o, serverId);
  const snapshot = await waitFor(o, 'presence:update', presenceWith(serverId, [O.id]), PRESENCE_DEADLINE_MS);
  assertPresence(snapshot, serverId, [O.id]);

  await connectGuild(M, NODE1);
  const online = await waitFor(o, 'presence:update', presenceWith(serverId, [O.id, M.id]), PRESENCE_DEADLINE_MS);
  assertPresence(online, serverId, [O.id, M.id]);
  const withC = eventsAfter(o, 0, 'presence:update', presenceWith(serverId, [C.id]));
  assert.deepEqual(withC, [], 'the chat-only member never appears online');
});

test('presence:update reaches only sockets that did server:join and lists only the server\'s members', async () => {
  const g = await newGuild({ members: 3, channels: 0 });
  const [O, M, P] = g.users;
  const { serverId } = g;
  const N = await guildUser(); // connected, not a member
  const o = await connectGuild(O, NODE2);
  await joinServer(o, serverId);
  const p = await connectGuild(P, NODE1); // a member that did not join the server room
  const n = await connectGuild(N, NODE1);
  const from = mark(o);

  await connectGuild(M, NODE1);
  // P is online (connected to /guild) even without server:join; N is online but not a member.
  const online = await waitAfter(o, from, 'presence:update', presenceWith(serverId, [M.id, P.id]), PRESENCE_DEADLINE_MS);
  assertPresence(online, serverId, asc([O.id, M.id, P.id]));
  await sleep(QUIET_MS);
  assert.deepEqual(eventsAfter(p, 0, 'presence:update'), [], 'the member outside the server room gets none');
  assert.deepEqual(eventsAfter(n, 0, 'presence:update'), [], 'the non-member gets none');
});

test('a member of two servers coming online is broadcast to both server rooms', async () => {
  const { serverId, O, M, o } = await scene();
  const second = await putServer(newId());
  const Q = await guildUser();
  await addServerMember(second, Q.id);
  await addServerMember(second, M.id);
  const q = await connectGuild(Q, NODE1);
  await joinServer(q, second);
  const fromO = mark(o);
  const fromQ = mark(q);

  await connectGuild(M, NODE1);
  const inFirst = await waitAfter(o, fromO, 'presence:update', presenceWith(serverId, [M.id]), PRESENCE_DEADLINE_MS);
  assertPresence(inFirst, serverId, [O.id, M.id]);
  const inSecond = await waitAfter(q, fromQ, 'presence:update', presenceWith(second, [M.id]), PRESENCE_DEADLINE_MS);
  assertPresence(inSecond, second, [Q.id, M.id]);
  assert.deepEqual(eventsAfter(q, 0, 'presence:update', (x) => Number(x.serverId) === serverId), [], 'each room gets its own server only');
});
