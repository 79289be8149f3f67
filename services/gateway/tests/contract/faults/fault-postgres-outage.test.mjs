// Fault injection: Postgres goes away for 10 s under the membership and messages services (a
// TCP proxy between them and Postgres, tests/support/proxy.rs, is cut; the gateways, Redis, the
// presence service and this suite's own queries are undisturbed), while chat clients on both
// nodes send a steady trickle. What docs/guarantees.md §5 promises:
// - during the outage every send is answered (a liveness check: the deadline is generous), with
//   the chat contract's INTERNAL (the services answer UNAVAILABLE, a code the chat contract does
//   not have: its dialect renders it INTERNAL);
// - typing still crosses the nodes, connected users stay online (their presence entries in
//   Redis), and no socket is disconnected;
// - /readyz answers on both nodes: 200, `status: "degraded"`, `database: false` (ops.rs: a
//   Postgres outage alone leaves a node ready, since every node is in the same state);
// - once Postgres is back, sends succeed again; every send acknowledged ok (before, during,
//   after) is in Postgres exactly once and reached every socket of the room exactly once.
// - nothing answered with an error was stored: sends are idempotent by clientId (a client
//   retries an INTERNAL with the same clientId), so each send here uses a fresh clientId and an
//   error's clientId must be absent from Postgres. The only exception is a send already in
//   flight when the connections were cut (its COMMIT may have reached Postgres while its answer
//   did not): if stored, it must be stored whole, i.e. delivered like any other message.
//
// Run by the `fault_postgres_outage` test function, on a cluster of its own whose membership and
// messages services reach Postgres through the proxy (control port: SB_POSTGRES_PROXY_CONTROL).

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  assertErrorAck,
  chatMessagesInPostgres,
  closeAll,
  until,
  connectUser,
  eventsOf,
  http,
  join,
  mark,
  newChat,
  proxyControl,
  redisCommand,
  sleep,
  uuid,
  waitAfter,
} from '../helpers.mjs';

after(closeAll);

const PROXY = process.env.SB_POSTGRES_PROXY_CONTROL;
const OUTAGE_MS = 10_000;
const BEFORE_MS = 3000;
const AFTER_MS = 3000;
/** Per sender, after each answer: below the chat limit of 10 messages per 10 s. */
const SEND_INTERVAL_MS = 1500;
/** A liveness bound, not a timing assertion (the services give up on Postgres after 1 s). */
const ACK_TIMEOUT_MS = 5000;
const RECOVERY_DEADLINE_MS = 20_000;
const DELIVERY_DEADLINE_MS = 20_000;
/** Longer than the outbox's redelivery delay in tests (1.5 s) and a sweep: a repeat would show. */
const QUIET_AFTER_MS = 4000;
const TYPING_DEADLINE_MS = 5000;
const PRESENCE_POLL_MS = 500;
/** The presence service's keys of the chat namespace (`/`), default prefix. */
const presenceKey = (what, userId) => `switchboard:presence:/:${what}:${userId}`;

/** `GET /readyz`: `{ status, body }`. */
async function readyz(node) {
  const res = await http('GET', '/readyz', { token: null, node });
  return { status: res.status, body: res.json ?? res.text };
}

/** A user's presence as the presence service keeps it: last broadcast state and live sockets. */
async function presenceOf(userId) {
  const last = await redisCommand(`HGET ${presenceKey('last', userId)} state`);
  const sockets = await redisCommand(`ZCARD ${presenceKey('user', userId)}`);
  return {
    state: /^\$\d+\r\n(\w+)/.exec(last ?? '')?.[1] ?? JSON.stringify(last),
    sockets: Number(/^:(\d+)/.exec(sockets ?? '')?.[1] ?? NaN),
  };
}

/** One client sending a message every SEND_INTERVAL_MS, each with a fresh clientId. */
class Trickle {
  constructor(socket, user, chatId, clock) {
    this.socket = socket;
    this.user = user;
    this.chatId = chatId;
    this.clock = clock;
    this.sends = []; // { clientId, senderId, sentAt, answeredAt, outcome: ok | error | no ack, ack }
    this.stopped = false;
  }

  async run() {
    for (let n = 0; !this.stopped; n++) {
      const send = { clientId: uuid(), senderId: this.user.id, sentAt: Date.now() };
      this.sends.push(send);
      const payload = { chatId: this.chatId, body: `${this.user.id} #${n}`, clientId: send.clientId };
      try {
        send.ack = await ack(this.socket, 'message:send', payload, ACK_TIMEOUT_MS);
        send.outcome = send.ack?.ok === true ? 'ok' : 'error';
      } catch {
        send.outcome = 'no ack';
      }
      send.answeredAt = Date.now();
      await sleep(SEND_INTERVAL_MS);
    }
  }

  ok() {
    return this.sends.filter((s) => s.outcome === 'ok');
  }
}

test('Postgres away for 10 s: sends answered, typing and presence unharmed, nothing lost or doubled', { timeout: 180_000 }, async () => {
  assert.ok(PROXY, 'SB_POSTGRES_PROXY_CONTROL: the cluster was started with its Postgres behind a proxy');

  const chat = await newChat({ members: 4 });
  const { chatId } = chat;
  const [SA, SB, RA, RB] = chat.users; // senders and listeners, one of each per node
  const sA = await connectUser(SA, NODE1);
  const sB = await connectUser(SB, NODE2);
  const rA = await connectUser(RA, NODE1);
  const rB = await connectUser(RB, NODE2);
  const sockets = [sA, sB, rA, rB];
  const disconnects = [];
  for (const s of sockets) {
    await join(s, chatId);
    s.on('disconnect', (reason) => disconnects.push(`${s.__name}: ${reason} at ${Date.now()}`));
  }

  // Before: both nodes ready, the listeners online, typing crosses the nodes. The typing round
  // also makes each node remember that these senders may type (SWITCHBOARD_AUTHZ_CACHE_MS, 30 s):
  // a user typing for the first time during the outage would need membership (Postgres).
  for (const node of [NODE1, NODE2]) {
    const r = await readyz(node);
    assert.equal(r.status, 200, `${node}/readyz before the outage: ${JSON.stringify(r)}`);
    assert.equal(r.body?.status, 'ready', `${node}/readyz before the outage: ${JSON.stringify(r)}`);
  }
  for (const u of [RA, RB]) {
    await until(`${u.id} online in the presence service`, async () => {
      const p = await presenceOf(u.id);
      return p.state === 'online' && p.sockets >= 1;
    }, 10_000);
  }
  const typing = async (from, user, to, state) => {
    const m = mark(to);
    from.emit(state === 'start' ? 'typing:start' : 'typing:stop', { chatId });
    await waitAfter(
      to,
      m,
      'typing:update',
      (u) => u.chatId === chatId && u.userId === user.id && u.state === state,
      TYPING_DEADLINE_MS,
    );
  };
  for (const [from, user, to] of [[sA, SA, rB], [sB, SB, rA]]) {
    await typing(from, user, to, 'start');
    await typing(from, user, to, 'stop');
  }

  // The trickle, from both nodes.
  const trickles = [new Trickle(sA, SA, chatId), new Trickle(sB, SB, chatId)];
  const runs = trickles.map((t) => t.run());
  await sleep(BEFORE_MS);
  for (const t of trickles) assert.ok(t.ok().length > 0, `${t.user.id} sent before the outage`);

  // Postgres goes away: `cut` answers once every connection of the services to it is closed.
  const cutStartedAt = Date.now();
  await proxyControl(PROXY, 'cut');
  const cutAt = Date.now();
  console.log(`# Postgres cut (${cutAt - cutStartedAt} ms to close the services' connections)`);

  // Presence, all along the outage.
  const presenceSamples = [];
  let outageOver = false;
  const presencePoll = (async () => {
    while (!outageOver) {
      for (const u of [RA, RB]) presenceSamples.push({ userId: u.id, at: Date.now(), ...(await presenceOf(u.id)) });
      await sleep(PRESENCE_POLL_MS);
    }
  })();

  // /readyz during the outage: what ops.rs answers when the services answer but their storage
  // does not.
  await sleep(2000);
  const readyDuring = [];
  for (const node of [NODE1, NODE2]) readyDuring.push({ node, ...(await readyz(node)) });
  console.log(`# /readyz during the outage: ${readyDuring.map((r) => `${r.node} ${r.status} ${JSON.stringify(r.body)}`).join('; ')}`);

  // Typing during the outage, both ways.
  await sleep(Math.max(0, cutAt + 4000 - Date.now()));
  const typingDuring = [];
  for (const [from, user, to] of [[sA, SA, rB], [sB, SB, rA]]) {
    for (const state of ['start', 'stop']) {
      try {
        await typing(from, user, to, state);
        typingDuring.push(`${user.id} ${state}: delivered`);
      } catch (e) {
        typingDuring.push(`${user.id} ${state}: ${e.message}`);
      }
    }
  }

  // Postgres comes back.
  await sleep(Math.max(0, cutAt + OUTAGE_MS - Date.now()));
  const restoreStartedAt = Date.now();
  await proxyControl(PROXY, 'restore');
  const restoredAt = Date.now();
  outageOver = true;
  await presencePoll;
  console.log(`# Postgres restored after ${restoredAt - cutAt} ms`);

  // Sends succeed again, on both nodes, within the recovery deadline (the trickle keeps trying).
  for (const t of trickles) {
    await until(
      `${t.user.id}: a send acknowledged ok after Postgres came back`,
      () => t.sends.some((s) => s.sentAt > restoredAt && s.outcome === 'ok'),
      RECOVERY_DEADLINE_MS,
    );
  }
  const recoveredAt = Date.now();
  const readyAfter = [];
  for (const node of [NODE1, NODE2]) {
    readyAfter.push({
      node,
      ...(await until(`${node}/readyz ready again`, async () => {
        const r = await readyz(node);
        return r.status === 200 && r.body?.status === 'ready' ? r : null;
      }, RECOVERY_DEADLINE_MS, 250)),
    });
  }
  await sleep(AFTER_MS);
  for (const t of trickles) t.stopped = true;
  await Promise.all(runs);

  const sends = trickles.flatMap((t) => t.sends);
  const phase = (s) => (s.sentAt < cutAt ? 'before' : s.answeredAt <= restoreStartedAt ? 'during' : 'after');
  const tally = {};
  for (const s of sends) {
    const key = `${phase(s)} ${s.outcome === 'error' ? s.ack?.error : s.outcome}`;
    tally[key] = (tally[key] ?? 0) + 1;
  }
  const during = sends.filter((s) => phase(s) === 'during');
  const slowest = Math.max(0, ...during.map((s) => s.answeredAt - s.sentAt));
  console.log(
    `# sends: ${JSON.stringify(tally)}; slowest answer during the outage ${slowest} ms; ` +
      `first ok after restore within ${recoveredAt - restoredAt} ms`,
  );

  // Every send was answered; during the outage, with the contract's INTERNAL.
  assert.deepEqual(
    sends.filter((s) => s.outcome === 'no ack').map((s) => `${s.senderId} sent at +${s.sentAt - cutAt} ms`),
    [],
    `every send is answered within ${ACK_TIMEOUT_MS} ms`,
  );
  assert.deepEqual(
    sends.filter((s) => s.answeredAt < cutStartedAt && s.outcome !== 'ok').map((s) => JSON.stringify(s.ack)),
    [],
    'every send answered before the outage succeeded',
  );
  assert.ok(during.length >= 4, `sends were tried during the outage (${during.length})`);
  for (const s of during) assertErrorAck(s.ack, 'INTERNAL');

  // Typing crossed the nodes, both ways, during the outage.
  assert.deepEqual(
    typingDuring.filter((t) => !t.endsWith(': delivered')),
    [],
    `typing during the outage: ${typingDuring.join('; ')}`,
  );

  // The listeners stayed online all along, and no socket was disconnected.
  assert.ok(presenceSamples.length >= 10, `presence sampled all along the outage (${presenceSamples.length})`);
  const notOnline = presenceSamples.filter((p) => p.state !== 'online' || !(p.sockets >= 1));
  assert.deepEqual(notOnline, [], 'connected users stay online (presence service: last state online, a live socket)');
  const offline = sockets.flatMap((s) =>
    eventsOf(s)
      .filter((e) => e.event === 'presence:update' && e.data?.status === 'offline')
      .map((e) => `${s.__name}: ${JSON.stringify(e.data)}`),
  );
  assert.deepEqual(offline, [], 'nobody in the room was announced offline');
  assert.deepEqual(disconnects, [], 'no socket was disconnected');

  // /readyz: ready but degraded during the outage (ops.rs), ready again after.
  for (const r of readyDuring) {
    assert.equal(r.status, 200, `${r.node}/readyz during the outage: ${JSON.stringify(r.body)}`);
    assert.equal(r.body?.status, 'degraded', `${r.node}/readyz during the outage: ${JSON.stringify(r.body)}`);
    assert.equal(r.body?.database, false, `${r.node}/readyz during the outage: ${JSON.stringify(r.body)}`);
    assert.equal(r.body?.redis, true, `${r.node}/readyz during the outage: ${JSON.stringify(r.body)}`);
  }
  for (const r of readyAfter) assert.equal(r.body?.database, true, `${r.node}/readyz after: ${JSON.stringify(r.body)}`);

  // Postgres: every acknowledged send exactly once, with its sender and clientId.
  const acked = sends.filter((s) => s.outcome === 'ok');
  const errored = sends.filter((s) => s.outcome === 'error');
  for (const s of acked) assert.equal(s.ack.data?.clientId, s.clientId, 'the ack echoes clientId');
  const rows = await chatMessagesInPostgres(chatId);
  const byId = new Map(rows.map((r) => [r.id, r]));
  for (const s of acked) {
    const row = byId.get(s.ack.data.serverId);
    assert.ok(row, `acknowledged message ${s.ack.data.serverId} (${s.clientId}) is in Postgres`);
    assert.equal(row.sender_id, s.senderId);
    assert.equal(row.client_id, s.clientId);
  }
  const perKey = new Map();
  for (const r of rows) {
    const key = `${r.sender_id}\u0000${r.client_id}`;
    perKey.set(key, (perKey.get(key) ?? 0) + 1);
  }
  assert.deepEqual([...perKey].filter(([, n]) => n > 1), [], 'no (sender, clientId) stored twice');

  // Nothing answered with an error was stored, except possibly a send in flight at the cut.
  const storedClientIds = new Map(rows.map((r) => [r.client_id, r.id]));
  const storedErrors = errored.filter((s) => storedClientIds.has(s.clientId));
  const inFlightAtCut = (s) => s.sentAt <= cutAt;
  assert.deepEqual(
    storedErrors.filter((s) => !inFlightAtCut(s)).map((s) => `${s.clientId} ${JSON.stringify(s.ack)}`),
    [],
    'no send answered with an error (after the cut) is in Postgres',
  );
  if (storedErrors.length) {
    console.log(`# stored although answered with an error (in flight at the cut): ${storedErrors.map((s) => s.clientId).join(', ')}`);
  }
  const ackedIds = new Set(acked.map((s) => s.ack.data.serverId));
  const expectedIds = [...ackedIds, ...storedErrors.map((s) => storedClientIds.get(s.clientId))];
  assert.deepEqual(
    rows.filter((r) => !expectedIds.includes(r.id)).map((r) => `${r.id} ${r.client_id}`),
    [],
    'Postgres holds nothing but the acknowledged sends',
  );

  // Every socket of the room, on both nodes, received every stored message exactly once, and
  // nothing else (no message:new for a send answered with an error and not stored).
  const received = (s) => eventsOf(s).filter((e) => e.event === 'message:new' && e.data?.chatId === chatId).map((e) => e.data);
  const missingOn = (s) => {
    const got = new Set(received(s).map((m) => m._id));
    return expectedIds.filter((id) => !got.has(id));
  };
  const deadline = Date.now() + DELIVERY_DEADLINE_MS;
  while (Date.now() < deadline && sockets.some((s) => missingOn(s).length > 0)) await sleep(250);
  await sleep(QUIET_AFTER_MS);
  const erroredClientIds = new Set(errored.filter((s) => !storedClientIds.has(s.clientId)).map((s) => s.clientId));
  for (const s of sockets) {
    assert.deepEqual(missingOn(s), [], `${s.__name} received every acknowledged message`);
    const counts = new Map();
    for (const m of received(s)) counts.set(m._id, (counts.get(m._id) ?? 0) + 1);
    assert.deepEqual([...counts].filter(([, n]) => n > 1), [], `${s.__name} received no message twice`);
    assert.deepEqual(
      received(s).filter((m) => erroredClientIds.has(m.clientId) || !expectedIds.includes(m._id)).map((m) => JSON.stringify(m)),
      [],
      `${s.__name} received nothing that was not stored`,
    );
  }
  console.log(`# ${expectedIds.length} messages stored and delivered once to each of ${sockets.length} sockets`);
});
