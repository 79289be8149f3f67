// presence:update and presence:heartbeat (001). A PresenceSnapshot { userId, isOnline, lastSeen,
// sockets: [{ socketId, connectedAt, lastSeen, userAgent, ip }] } is emitted namespace-wide (each
// app socket on both nodes receives it once) when a user's first app socket connects, when their
// last one goes, and on presence:heartbeat. Transitions are throttled (2 s in the harness) by
// delaying, never dropping. Presence is per namespace: a chat-only connection is not app presence.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  PRESENCE_THROTTLE_MS,
  PRESENCE_TTL_MS,
  closeAll,
  connect,
  count,
  eventsOf,
  expectNo,
  sleep,
  waitFor,
} from '../helpers.mjs';
import {
  PRESENCE_DEADLINE_MS,
  appUser,
  assertSnapshot,
  connectApp,
  presenceOf,
  waitForCount,
} from './helpers.mjs';

afterEach(closeAll);

const about = (userId) => (s) => s.userId === userId;

/** Quiet time long enough for a throttled duplicate to show up. */
const SETTLE_MS = PRESENCE_THROTTLE_MS + 1000;

test('a user coming online is broadcast to every app socket on both nodes, each receiving it once', async () => {
  const O1 = await appUser('obs');
  const O2 = await appUser('obs');
  const A = await appUser();
  const o1 = await connectApp(O1, NODE1);
  const o2 = await connectApp(O2, NODE2);
  const a = await connectApp(A, NODE1);
  for (const s of [o1, o2, a]) {
    const snap = await waitFor(s, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
    assertSnapshot(snap);
    assert.deepEqual(snap.sockets.map((e) => e.socketId), [a.id], "the snapshot lists the user's socket");
  }
  await sleep(SETTLE_MS);
  for (const s of [o1, o2, a]) {
    assert.equal(count(s, 'presence:update', about(A.id)), 1, `one presence:update about the user on ${s.__name}`);
  }
});

test('the snapshot: socketId is the client socket.id, ip null, userAgent string or null, times epoch ms or null', async () => {
  const O = await appUser('obs');
  const A = await appUser();
  const o = await connectApp(O, NODE1);
  const a = await connectApp(A, NODE2, { extraHeaders: { 'user-agent': 'switchboard-contract/1.0' } });
  const snap = await waitFor(o, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  assertSnapshot(snap);
  assert.equal(snap.userId, A.id);
  assert.equal(snap.isOnline, true);
  assert.equal(snap.sockets.length, 1);
  const [entry] = snap.sockets;
  assert.equal(entry.socketId, a.id);
  assert.equal(entry.ip, null);
  assert.ok(entry.userAgent === null || typeof entry.userAgent === 'string');
  for (const v of [snap.lastSeen, entry.connectedAt, entry.lastSeen]) {
    assert.ok(v === null || (Number.isInteger(v) && v > 1e12), `epoch milliseconds or null: ${v}`);
  }
});

test('the last socket disconnecting broadcasts isOnline false with no sockets, on both nodes', async () => {
  const O1 = await appUser('obs');
  const O2 = await appUser('obs');
  const A = await appUser();
  const o1 = await connectApp(O1, NODE1);
  const o2 = await connectApp(O2, NODE2);
  const a = await connectApp(A, NODE2);
  for (const s of [o1, o2]) await waitFor(s, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);

  a.close();
  for (const s of [o1, o2]) {
    const snap = await waitFor(s, 'presence:update', presenceOf(A.id, false), PRESENCE_DEADLINE_MS);
    assertSnapshot(snap);
    assert.equal(snap.userId, A.id);
    assert.equal(snap.isOnline, false);
    assert.deepEqual(snap.sockets, []);
  }
  await sleep(SETTLE_MS);
  for (const s of [o1, o2]) assert.equal(count(s, 'presence:update', presenceOf(A.id, false)), 1, 'offline once');
});

test('two sockets on two nodes: closing one keeps the user online, closing both broadcasts offline', async () => {
  const O = await appUser('obs');
  const A = await appUser();
  const o = await connectApp(O, NODE2);
  const a1 = await connectApp(A, NODE1);
  const a2 = await connectApp(A, NODE2);
  await waitFor(o, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);

  a1.close();
  // Long enough for a throttled broadcast and for the closed socket's presence entry to expire.
  await expectNo(o, 'presence:update', PRESENCE_DEADLINE_MS - 2000, presenceOf(A.id, false));
  assert.ok(a2.connected);

  a2.close();
  const snap = await waitFor(o, 'presence:update', presenceOf(A.id, false), PRESENCE_DEADLINE_MS);
  assertSnapshot(snap);
});

test('presence:heartbeat (no payload) broadcasts an online snapshot of the user to everyone, the other node included', async () => {
  const B = await appUser('obs');
  const A = await appUser();
  const b = await connectApp(B, NODE2);
  const a = await connectApp(A, NODE1);
  await waitFor(b, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  await sleep(PRESENCE_THROTTLE_MS); // out of the throttle window of the online transition
  const nb = count(b, 'presence:update', presenceOf(A.id, true));
  const na = count(a, 'presence:update', presenceOf(A.id, true));

  a.emit('presence:heartbeat');
  await waitForCount(b, 'presence:update', presenceOf(A.id, true), nb + 1, PRESENCE_DEADLINE_MS);
  await waitForCount(a, 'presence:update', presenceOf(A.id, true), na + 1, PRESENCE_DEADLINE_MS);
  const snap = eventsOf(b).filter((e) => e.event === 'presence:update' && e.data?.userId === A.id).at(-1).data;
  assertSnapshot(snap);
  assert.equal(snap.isOnline, true);
  assert.ok(snap.sockets.some((e) => e.socketId === a.id), 'the snapshot lists the heartbeating socket');

  await sleep(SETTLE_MS);
  assert.equal(count(b, 'presence:update', presenceOf(A.id, true)), nb + 1, 'the heartbeat is broadcast once');
  assert.equal(count(a, 'presence:update', presenceOf(A.id, true)), na + 1, "once on the user's own socket too");
});

test('presence:heartbeat with an arbitrary payload is the same: the payload is ignored', async () => {
  const B = await appUser('obs');
  const A = await appUser();
  const b = await connectApp(B, NODE1);
  const a = await connectApp(A, NODE2);
  await waitFor(b, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  await sleep(PRESENCE_THROTTLE_MS);
  const nb = count(b, 'presence:update', presenceOf(A.id, true));

  a.emit('presence:heartbeat', { userId: B.id, isOnline: false, anything: [1, 2, 3] }, 'extra', 42);
  await waitForCount(b, 'presence:update', presenceOf(A.id, true), nb + 1, PRESENCE_DEADLINE_MS);
  // The payload named B offline: it is ignored, B's presence is untouched.
  await expectNo(b, 'presence:update', 500, presenceOf(B.id, false));
  assert.ok(a.connected);
});

test('presence:heartbeat with null or a string payload is accepted too', async () => {
  const B = await appUser('obs');
  const A = await appUser();
  const b = await connectApp(B, NODE2);
  const a = await connectApp(A, NODE1);
  await waitFor(b, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  for (const payload of [null, 'ping']) {
    await sleep(PRESENCE_THROTTLE_MS);
    const nb = count(b, 'presence:update', presenceOf(A.id, true));
    a.emit('presence:heartbeat', payload);
    await waitForCount(b, 'presence:update', presenceOf(A.id, true), nb + 1, PRESENCE_DEADLINE_MS);
  }
  assert.ok(a.connected);
});

test('the throttle delays, never drops: after a quick reconnect cycle the last broadcast is offline', async () => {
  const O = await appUser('obs');
  const A = await appUser();
  const o = await connectApp(O, NODE1);
  let a = await connectApp(A, NODE2);
  await waitFor(o, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  a.close();
  a = await connectApp(A, NODE1);
  a.close();
  await waitFor(o, 'presence:update', presenceOf(A.id, false), PRESENCE_DEADLINE_MS);
  await sleep(SETTLE_MS);
  const updates = eventsOf(o).filter((e) => e.event === 'presence:update' && e.data?.userId === A.id);
  assert.equal(updates.at(-1).data.isOnline, false, 'the last broadcast matches the state');
});

test('the throttle delays, never drops: online right after offline ends online', async () => {
  const O = await appUser('obs');
  const A = await appUser();
  const o = await connectApp(O, NODE2);
  const a1 = await connectApp(A, NODE1);
  await waitFor(o, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  a1.close();
  await waitFor(o, 'presence:update', presenceOf(A.id, false), PRESENCE_DEADLINE_MS);
  const onlines = count(o, 'presence:update', presenceOf(A.id, true));
  const a2 = await connectApp(A, NODE2); // inside the throttle window of the offline broadcast
  await waitForCount(o, 'presence:update', presenceOf(A.id, true), onlines + 1, PRESENCE_DEADLINE_MS);
  await sleep(SETTLE_MS);
  const updates = eventsOf(o).filter((e) => e.event === 'presence:update' && e.data?.userId === A.id);
  assert.equal(updates.at(-1).data.isOnline, true, 'the last broadcast matches the state');
  assert.ok(updates.at(-1).data.sockets.some((e) => e.socketId === a2.id));
});

test('presence is per namespace: a chat-only connection (same JWT) produces no app presence:update', async () => {
  const O = await appUser('obs');
  const A = await appUser();
  const o = await connectApp(O, NODE2);
  const chat = await connect(NODE1, A.token, { name: `${A.id}@chat` });
  assert.ok(chat.connected, 'the chat namespace accepts the same JWT');
  await expectNo(o, 'presence:update', PRESENCE_TTL_MS + PRESENCE_THROTTLE_MS, about(A.id));

  // Connecting to the app namespace is what makes the user online here…
  const a = await connectApp(A, NODE1);
  const snap = await waitFor(o, 'presence:update', presenceOf(A.id, true), PRESENCE_DEADLINE_MS);
  assert.deepEqual(snap.sockets.map((e) => e.socketId), [a.id], 'only the app socket is listed');

  // …and leaving it makes them offline here, although the chat socket is still connected.
  a.close();
  await waitFor(o, 'presence:update', presenceOf(A.id, false), PRESENCE_DEADLINE_MS);
  assert.ok(chat.connected);
});
