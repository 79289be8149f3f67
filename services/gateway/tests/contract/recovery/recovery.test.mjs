// Connection state recovery (issue #18), with the real socket.io-client: a client whose
// connection drops and comes back within the window, to the same node, to the other node, or
// through a balancer after its node was SIGKILLed mid-traffic, gets its session back: the same
// id, `socket.recovered`, its rooms, and every message said meanwhile, in order, once. After the
// window it gets a new session and no replay.
//
// Run by the `connection_state_recovery` test function, on a cluster of its own with
// SWITCHBOARD_RECOVERY_WINDOW_MS=4000 and a balancer in front of both nodes. The last test kills
// node 1.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  GATEWAY_PIDS,
  NODE1,
  NODE2,
  QUIET_MS,
  ack,
  closeAll,
  connect,
  connectUser,
  eventsOf,
  join,
  mark,
  newChat,
  send,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

after(closeAll);

const WINDOW_MS = Number(process.env.SB_RECOVERY_WINDOW_MS ?? 4000);
const MISSED = 5;

/** A client that reconnects by itself, quickly. */
function connectRecovering(user, node) {
  return connect(node, user.token, {
    name: `${user.id}@recovering`,
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
  });
}

/** The `message:new` bodies a socket received after `from`, in order. */
function bodiesAfter(socket, from) {
  return eventsOf(socket)
    .slice(from)
    .filter((e) => e.event === 'message:new')
    .map((e) => e.data.body);
}

async function waitForBodies(socket, from, n, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (bodiesAfter(socket, from).length < n && Date.now() < deadline) await sleep(50);
  // Anything more (a duplicate) would arrive right behind.
  await sleep(QUIET_MS);
  return bodiesAfter(socket, from);
}

function nextConnect(socket, timeoutMs = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${socket.__name} did not reconnect`)), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A chat with a recovering member `a` on `node` and a sender `b` on node 2, both joined; `a`
 * has received one message (so it holds an offset). */
async function setUp(node) {
  const { chatId, users } = await newChat({ members: 2 });
  const [a, b] = users;
  const sa = await connectRecovering(a, node);
  const sb = await connectUser(b, NODE2);
  await join(sa, chatId);
  await join(sb, chatId);
  const first = await send(sb, chatId, 'before the drop');
  const received = await waitFor(sa, 'message:new', (m) => m.body === first.body);
  assert.ok(received);
  const last = eventsOf(sa).findLast((e) => e.event === 'message:new');
  assert.equal(typeof last.args.at(-1), 'string', 'a stored event carries its offset last');
  assert.equal(typeof sa._pid, 'string', 'the CONNECT packet gave the client a private id');
  return { chatId, sa, sb };
}

/** Drops `sa`'s transport and keeps it down while `sb` sends `MISSED` messages. */
async function dropWhileSending(sa, sb, chatId, { to } = {}) {
  sa.io.reconnection(false);
  const down = new Promise((resolve) => sa.once('disconnect', resolve));
  // The connection breaks (the TCP connection is destroyed), as when a network drops.
  sa.io.engine.transport.ws.terminate();
  assert.equal(await down, 'transport close');
  const missed = [];
  for (let i = 0; i < MISSED; i++) missed.push((await send(sb, chatId, `missed ${i}`)).body);
  if (to) sa.io.uri = to;
  return missed;
}

async function reconnect(sa) {
  const back = nextConnect(sa);
  sa.io.reconnection(true);
  sa.connect();
  await back;
}

async function assertRecovered(sa, sb, chatId, id, from, missed) {
  assert.equal(sa.recovered, true, 'socket.recovered');
  assert.equal(sa.id, id, 'the same socket id');
  assert.deepEqual(await waitForBodies(sa, from, missed.length), missed, 'every missed message, in order, once');
  // Still in the room, without joining again.
  const live = await send(sb, chatId, 'after the recovery');
  await waitFor(sa, 'message:new', (m) => m.body === live.body);
  assert.deepEqual(bodiesAfter(sa, from), [...missed, live.body]);
}

for (const [name, to] of [
  ['recovered on the same node: same id, its room, every missed message once and in order', undefined],
  ['recovered on the other node', NODE2],
]) {
  test(name, async () => {
    const { chatId, sa, sb } = await setUp(NODE1);
    const id = sa.id;
    const from = mark(sa);
    const missed = await dropWhileSending(sa, sb, chatId, { to });
    await reconnect(sa);
    await assertRecovered(sa, sb, chatId, id, from, missed);
  });
}

test('a client that received nothing yet recovers from where its session started', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const [a, b] = users;
  const sa = await connectRecovering(a, NODE1);
  const sb = await connectUser(b, NODE2);
  await join(sa, chatId);
  await join(sb, chatId);
  const id = sa.id;
  const from = mark(sa);
  const missed = await dropWhileSending(sa, sb, chatId, { to: NODE2 });
  await reconnect(sa);
  await assertRecovered(sa, sb, chatId, id, from, missed);
});

test('a socket connected for longer than the window still recovers: its node keeps its session', async () => {
  const { chatId, sa, sb } = await setUp(NODE1);
  const id = sa.id;
  // Past the session's own lifetime without a refresh (window + 3 refreshes of 500 ms).
  await sleep(WINDOW_MS + 2500);
  const from = mark(sa);
  const missed = await dropWhileSending(sa, sb, chatId);
  await reconnect(sa);
  await assertRecovered(sa, sb, chatId, id, from, missed);
});

test('another user cannot take over a session with its pid', async () => {
  const { chatId, sa, sb } = await setUp(NODE1);
  const stolenPid = sa._pid;
  const { users } = await newChat({ members: 1 });
  const thief = await connect(NODE2, users[0].token, { name: 'thief', auth: { token: users[0].token, pid: stolenPid, offset: '0-0' } });
  assert.equal(thief.recovered ?? false, false);
  assert.notEqual(thief.id, sa.id);
  // The claim consumed nothing of the owner's: its room still works.
  const live = await send(sb, chatId, 'owner still there');
  await waitFor(sa, 'message:new', (m) => m.body === live.body);
});

test('after the window: a new session, no replay, no room', async () => {
  const { chatId, sa, sb } = await setUp(NODE1);
  const id = sa.id;
  const from = mark(sa);
  await dropWhileSending(sa, sb, chatId);
  await sleep(WINDOW_MS + 1500);
  await reconnect(sa);
  assert.equal(sa.recovered, false, 'socket.recovered');
  assert.notEqual(sa.id, id, 'a new socket id');
  await sleep(QUIET_MS);
  assert.deepEqual(bodiesAfter(sa, from), [], 'nothing replayed: what was said is in the history');
  const live = await send(sb, chatId, 'not in the room any more');
  await sleep(QUIET_MS);
  assert.ok(!bodiesAfter(sa, from).includes(live.body), 'a new session is in no room');
});

test('through a balancer, node 1 SIGKILLed right after a burst: its clients recover, every client has every message once, all in one order', async () => {
  const BALANCER = process.env.SB_BALANCER_URL;
  assert.ok(BALANCER, 'SB_BALANCER_URL: the cluster has a balancer in front of both nodes');
  const { chatId, users } = await newChat({ members: 8 });
  // Six receivers through the balancer (it alternates between the nodes), a sender on each node.
  const receivers = [];
  for (const u of users.slice(0, 6)) {
    const s = await connectRecovering(u, BALANCER);
    await join(s, chatId);
    s.__drops = 0;
    s.on('disconnect', () => s.__drops++);
    receivers.push(s);
  }
  const [on1, on2] = [await connectUser(users[6], NODE1), await connectUser(users[7], NODE2)];
  await join(on1, chatId);
  await join(on2, chatId);
  const ids = receivers.map((s) => s.id);
  const from = receivers.map((s) => mark(s));

  // A burst through node 1, killed the moment it is answered: it may not have confirmed what it
  // logged, and the sweeper logs that again (once in the log, so once per socket).
  const burst = await Promise.all(
    Array.from({ length: 8 }, (_, i) => ack(on1, 'message:send', { chatId, body: `burst ${i}`, clientId: uuid() })),
  );
  process.kill(GATEWAY_PIDS[0], 'SIGKILL');
  const expected = burst.filter((a) => a.ok).map((_, i) => `burst ${i}`);
  assert.equal(expected.length, 8, `node 1 acknowledged the burst: ${JSON.stringify(burst)}`);
  for (let i = 0; i < MISSED; i++) expected.push((await send(on2, chatId, `after ${i}`)).body);

  const bodies = receivers.map((s, i) => () => bodiesAfter(s, from[i]));
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline && !bodies.every((b) => expected.every((e) => b().includes(e)))) await sleep(100);
  // Longer than the sweeper's redelivery delay (1.5 s in tests) and a sweep: a repeat would show.
  await sleep(3000);

  const dropped = receivers.filter((s) => s.__drops > 0).length;
  assert.ok(dropped > 0, 'some receivers were on node 1');
  receivers.forEach((s, i) => {
    assert.ok(s.connected, `${s.__name} is connected`);
    assert.equal(s.id, ids[i], `${s.__name} kept its id`);
    if (s.__drops > 0) assert.equal(s.recovered, true, `${s.__name} recovered its session`);
    const got = bodies[i]();
    assert.deepEqual([...got].sort(), [...expected].sort(), `${s.__name}: every message once (got ${got.join(', ')})`);
  });
  const orders = new Set(bodies.map((b) => b().join(',')));
  assert.equal(orders.size, 1, `one order everywhere: ${[...orders].join(' | ')}`);
});
