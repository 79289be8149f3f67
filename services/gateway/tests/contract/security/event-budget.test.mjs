// Attack: event flooding from one socket (known or unknown events as fast as the connection
// carries them) to monopolise a node's handlers. Each socket has a token bucket
// (SWITCHBOARD_SOCKET_EVENTS_PER_SECOND 10, SWITCHBOARD_SOCKET_EVENT_BURST 20 in the security
// cluster): an event without a token is not handled and is answered with the dialect's
// rate-limit error; after SWITCHBOARD_SOCKET_EVENT_OVERRUN (30) refusals in a row the server
// disconnects the socket. A socket inside its budget is never refused; a reconnect gets a new
// budget but not a new chat message quota (10 per 10 s per user, cluster-wide).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  NODE1,
  NODE2,
  QUIET_MS,
  ack,
  assertErrorAck,
  connectUser,
  eventsOf,
  expectNo,
  join,
  newChat,
  newUser,
  send,
  sleep,
  uuid,
  waitForDisconnect,
} from '../helpers.mjs';
import { assertAppError, connectApp, newConversation } from '../app/helpers.mjs';
import { assertGuildError, connectGuild, newGuild } from '../guild/helpers.mjs';
import { assertTaskError, connectTasks, newProject } from '../tasks/helpers.mjs';
import { connectVault, newVault } from '../vault/helpers.mjs';
import { LIMITS, dbQuery, pacer, useControlClient } from './common.mjs';

useControlClient();

const RATE = LIMITS.eventsPerSecond;
const BURST = LIMITS.eventBurst;
const OVERRUN = LIMITS.eventOverrun;
const range = (n) => Array.from({ length: n }, (_, i) => i);
const CHAT_RATE_MESSAGE = 'Maximum 10 messages per 10 seconds';

/** Emits `n` `event`s at once with acks; answers the acks in emission order. */
const burstOf = (socket, n, event = 'presence:ping', payload = () => ({})) =>
  Promise.all(range(n).map((i) => ack(socket, event, payload(i), 15000)));

test('a socket inside its budget is never refused: a full burst at once, then a steady pace under the rate', async () => {
  assert.ok(RATE > 0 && BURST > 0 && BURST < 100, `a small budget is configured (${RATE}/s, burst ${BURST})`);
  const s = await connectUser(await newUser('budget'), NODE1);
  for (const res of await burstOf(s, BURST)) assert.equal(res.ok, true, `a burst of ${BURST} is served: ${JSON.stringify(res)}`);
  // The bucket is empty now; below the refill rate every event still finds a token.
  const tick = pacer(RATE * 0.6, 1, 0);
  for (let i = 0; i < 8; i++) {
    await tick();
    const res = await ack(s, 'presence:ping', {});
    assert.equal(res.ok, true, `paced event ${i + 1} at ${(RATE * 0.6).toFixed(1)}/s is served: ${JSON.stringify(res)}`);
  }
  assert.ok(s.connected);
});

test("a burst beyond the budget: the first events are served, the rest answered with chat's RATE_LIMITED ack", async () => {
  const s = await connectUser(await newUser('budget'), NODE2);
  const n = BURST + 10;
  const results = await burstOf(s, n);
  results.slice(0, BURST).forEach((r, i) => assert.equal(r.ok, true, `event ${i + 1} of the burst is served: ${JSON.stringify(r)}`));
  const refused = results.filter((r) => r.ok !== true);
  assert.ok(refused.length >= 5, `most of the ${n - BURST} events over the burst are refused, got ${refused.length}`);
  for (const r of refused) assertErrorAck(r, 'RATE_LIMITED');
  assert.ok(s.connected, `fewer than ${OVERRUN} refusals in a row: still connected`);
});

test('an event refused for the budget is not handled (a send is neither stored nor broadcast); unknown events spend tokens too; the budget refills', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const [A, B] = users;
  const a = await connectUser(A, NODE1);
  const b = await connectUser(B, NODE2);
  await join(b, chatId);

  // Unknown events, which get no answer, drain the bucket all the same.
  for (let i = 0; i < BURST + 3; i++) a.emit('no:such:event', { i });
  const clientId = uuid();
  const res = await ack(a, 'message:send', { chatId, body: 'over the budget', clientId });
  assertErrorAck(res, 'RATE_LIMITED');
  await expectNo(b, 'message:new', QUIET_MS, (m) => m.clientId === clientId);
  const stored = await dbQuery('SELECT count(*)::int AS n FROM messages WHERE client_id = $1', [clientId]);
  assert.equal(stored[0].n, 0, 'the refused send was not stored');

  // Tokens come back at the configured rate: the same send goes through a moment later.
  await sleep(Math.ceil((2 / RATE) * 1000) + 300);
  const sent = await send(a, chatId, 'after the refill', clientId);
  assert.ok(sent.serverId);
});

test(`${OVERRUN} refusals in a row disconnect the socket (io server disconnect); the user's other socket and a reconnect are fine`, async () => {
  const u = await newUser('flood');
  const flooder = await connectUser(u, NODE1);
  const sibling = await connectUser(u, NODE2);
  const gone = waitForDisconnect(flooder, 15000);
  const answers = [];
  const n = BURST + OVERRUN + 60;
  for (let i = 0; i < n; i++) flooder.emit('presence:ping', {}, (res) => answers.push(res));
  const reason = await gone;
  assert.equal(reason, 'io server disconnect', 'the server cut the flooding socket off');
  const served = answers.filter((r) => r?.ok === true).length;
  assert.ok(served <= BURST + 3, `about the burst was served (${served}), not the flood`);
  assert.ok(answers.length < n, `the socket was cut off before the flood was answered (${answers.length} of ${n} answered)`);
  for (const r of answers.filter((x) => x?.ok !== true)) assertErrorAck(r, 'RATE_LIMITED');

  // The same user's socket on the other node was not touched.
  assert.ok(sibling.connected, "the user's other socket stays connected");
  assert.equal((await ack(sibling, 'presence:ping', {})).ok, true);

  // A new socket has a new budget: a full burst at once is served.
  const fresh = await connectUser(u, NODE1);
  for (const res of await burstOf(fresh, BURST)) assert.equal(res.ok, true, `the reconnected socket's burst is served: ${JSON.stringify(res)}`);
});

test('reconnecting (to the other node) gives a new event budget, not a new chat message quota', async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const [A] = users;
  const first = await connectUser(A, NODE1);
  const tick = pacer(RATE * 0.8, Math.min(BURST - 1, 9));
  for (let i = 0; i < 10; i++) {
    await tick();
    await send(first, chatId, `quota ${i}`);
  }
  first.close();
  const second = await connectUser(A, NODE2);
  const clientId = uuid();
  const res = await ack(second, 'message:send', { chatId, body: 'eleventh, after a reconnect', clientId });
  assertErrorAck(res, 'RATE_LIMITED');
  assert.equal(res.message, CHAT_RATE_MESSAGE);
  // The new socket itself is well within its event budget.
  assert.equal((await ack(second, 'presence:ping', {})).ok, true);
  const stored = await dbQuery('SELECT count(*)::int AS n FROM messages WHERE room_kind = $1 AND room_id = $2', ['chat', chatId]);
  assert.equal(stored[0].n, 10, 'only the ten sends within the quota were stored');
});

/** Waits until the socket got an event `name` matching `predicate`; answers it. */
async function eventWith(socket, name, predicate, what, timeoutMs = 8000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = eventsOf(socket).find((e) => e.event === name && predicate(e.data));
    if (hit) return hit.data;
    assert.ok(
      Date.now() < deadline,
      `${what}: no matching '${name}' within ${timeoutMs} ms; got ${JSON.stringify(eventsOf(socket).map((e) => [e.event, e.data]).slice(-5))}`,
    );
    await sleep(25);
  }
}

/** No event of the socket carries an internal error code. */
function assertNoInternal(socket, what) {
  const internal = eventsOf(socket).filter((e) => /INTERNAL/.test(JSON.stringify(e.data ?? null)));
  assert.deepEqual(internal, [], `${what}: no internal error`);
}

test("every dialect answers events over the budget with its own rate-limit error, never an internal one", async () => {
  const n = BURST + 5;

  // app: conversations:join acks { success: false, code: RATE_LIMITED, message, correlationId }.
  const conv = await newConversation({ members: 1 });
  const app = await connectApp(conv.users[0], NODE1);
  const appAcks = await burstOf(app, n, 'conversations:join', () => ({ conversationId: conv.conversationId }));
  const appRefused = appAcks.filter((r) => r.success !== true);
  assert.ok(appRefused.length >= 1, `app: some joins over the budget are refused: ${JSON.stringify(appAcks.slice(-3))}`);
  for (const r of appRefused) assertAppError(r, 'RATE_LIMITED');
  assertNoInternal(app, 'app');

  // guild: error:validation { code: E_RATE_LIMITED, message, correlationId }.
  const g = await newGuild({ members: 1 });
  const guild = await connectGuild(g.users[0], NODE2);
  for (let i = 0; i < n; i++) guild.emit('server:join', { serverId: g.serverId });
  const gErr = await eventWith(guild, 'error:validation', (d) => d.code === 'E_RATE_LIMITED', 'guild');
  assertGuildError(gErr, 'E_RATE_LIMITED');
  assertNoInternal(guild, 'guild');

  // vault: error { message, code: RATE_LIMITED, details: { correlationId } }.
  const v = await newVault({ roles: ['owner'] });
  const vault = await connectVault(v.users[0], NODE1);
  for (let i = 0; i < n; i++) vault.emit('vault:join', { vaultId: v.vaultId });
  const vErr = await eventWith(vault, 'error', (d) => d.code === 'RATE_LIMITED', 'vault');
  assert.equal(typeof vErr.message, 'string');
  assert.match(vErr.details?.correlationId ?? '', /^[0-9a-f]{32}$/, `vault error details.correlationId: ${JSON.stringify(vErr)}`);
  assertNoInternal(vault, 'vault');

  // tasks: error { message, code: RATE_LIMITED, correlationId }.
  const p = await newProject({ roles: ['researcher'] });
  const tasks = await connectTasks(p.users[0], NODE2);
  for (let i = 0; i < n; i++) tasks.emit('typing:start', { roomType: 'project', roomId: p.projectId });
  const tErr = await eventWith(tasks, 'error', (d) => d.code === 'RATE_LIMITED', 'tasks');
  assertTaskError(tErr, 'RATE_LIMITED');
  assertNoInternal(tasks, 'tasks');

  for (const s of [app, guild, vault, tasks]) assert.ok(s.connected, `${s.__name}: fewer than ${OVERRUN} refusals, still connected`);
});
