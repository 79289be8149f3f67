// Attack: malformed input of every kind, generated (property-based fuzzing with fast-check,
// fixed seeds, bounded runs) and hand-picked (corpus/payloads.json and corpus/packets.json,
// replayed first, every run). Arbitrary JSON values — deep nesting, huge and odd numbers, long
// strings, odd unicode, NUL, prototype keys, operator objects, real ids with hostile companions —
// go out as the payload of every client event of every dialect (plus unknown events), with and
// without ack callbacks; raw Engine.IO / Socket.IO packets (arbitrary strings after each packet
// type prefix) go out over raw WebSockets, before and after a Socket.IO CONNECT.
//
// Asserted: every acknowledgement and every event a fuzzing socket receives is its dialect's
// success shape or one of its documented errors, never an internal error; the events a contract
// always acknowledges are acknowledged; fuzzing sockets paced inside their event budget are never
// disconnected; both gateways keep answering /healthz; the control client never notices.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import WebSocket from 'ws';
import { HEX32, NODE1, NODE2, addMember, connectUser, eventsOf, join, newUser, putChat, send, sleep, uuid } from '../helpers.mjs';
import { connectApp, joinConversation, newConversation } from '../app/helpers.mjs';
import { connectGuild, joinServer, newGuild } from '../guild/helpers.mjs';
import { connectTasks, joinRoom, newProject, postMessage as postTaskMessage } from '../tasks/helpers.mjs';
import { connectVault, joinVault, newVault } from '../vault/helpers.mjs';
import { LIMITS, assertNodesUp, rawEngine, useControlClient } from './common.mjs';

const SEED = 16_2026;
const SOCKETS_PER_DIALECT = 3;
const GENERATED_RUNS_PER_SOCKET = 150;
const GENERATED_PACKETS = 1000;
/** Generated event packets also sent on authenticated sockets (paced inside the budget). */
const GENERATED_AUTHENTICATED_PACKETS = 200;
const corpusPath = (name) => new URL(`./corpus/${name}`, import.meta.url);
const PAYLOADS = JSON.parse(fs.readFileSync(corpusPath('payloads.json'), 'utf8'));
const PACKETS = JSON.parse(fs.readFileSync(corpusPath('packets.json'), 'utf8'));

useControlClient();
let fixtures;

before(async () => {
  fixtures = await provision();
});

after(() => assertNodesUp('after the fuzzing'));

// ---------------------------------------------------------------------------------------------
// The dialects: their client events, what they always acknowledge, and their answer shapes.

// Printable names only: a name with a control character is a malformed packet, on which the
// server closes the sender's connection (as on a binary attachment); the raw packets cover it.
const UNKNOWN_EVENTS = ['no:such:event', '__proto__', 'constructor', 'message:new', 'ROOM:JOIN', 'room:join '];

const isHexId = (v) => typeof v === 'string' && HEX32.test(v);
const keys = (o) => Object.keys(o).sort().join(',');
const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** `{ ok: false, error, message, correlationId }` with a documented, non-internal code. */
const chatError = (a) =>
  isObj(a) &&
  a.ok === false &&
  ['VALIDATION_ERROR', 'UNAUTHORIZED', 'FORBIDDEN', 'NOT_FOUND', 'RATE_LIMITED'].includes(a.error) &&
  typeof a.message === 'string' &&
  isHexId(a.correlationId) &&
  keys(a) === 'correlationId,error,message,ok';

const DIALECTS = {
  chat: {
    events: ['room:join', 'room:leave', 'message:send', 'typing:start', 'typing:stop', 'receipt:read', 'presence:ping'],
    // Every event but typing answers an ack (typing refusals are silent).
    mustAck: (event) => !event.startsWith('typing:'),
    validAck: (event, a) => chatError(a) || (isObj(a) && a.ok === true && (a.data === undefined || isObj(a.data))),
    serverEvents: {
      'message:new': () => true,
      'typing:update': () => true,
      'receipt:update': () => true,
      'presence:update': () => true,
      'chat:update': () => true,
    },
  },
  app: {
    events: ['conversations:join', 'conversations:leave', 'presence:heartbeat'],
    mustAck: (event, args) => jsonBytes(args[0]) <= 5000,
    validAck: (event, a) =>
      isObj(a) &&
      ((a.success === true && (event === 'presence:heartbeat' ? keys(a) === 'success' : typeof a.conversationId === 'string')) ||
        (a.success === false &&
          ['VALIDATION_ERROR', 'FORBIDDEN', 'RATE_LIMITED'].includes(a.code) &&
          typeof a.message === 'string' &&
          isHexId(a.correlationId))),
    serverEvents: {
      'notifications:ready': () => true,
      'notifications:new': () => true,
      'messages:new': () => true,
      'messages:updated': () => true,
      'messages:deleted': () => true,
      'presence:update': () => true,
      error: (d) => isObj(d) && ['socket_error:payload_too_large', 'VALIDATION_ERROR', 'RATE_LIMITED', 'FORBIDDEN'].includes(d.code) && typeof d.message === 'string',
    },
  },
  guild: {
    events: ['server:join', 'channel:join', 'typing:start', 'typing:stop', 'message:create'],
    mustAck: (event) => event === 'message:create',
    // Only message:create is acknowledged by contract; others may be answered { ok: true }.
    validAck: (event, a) =>
      isObj(a) &&
      ((a.ok === true && (event === 'message:create' ? isObj(a.message) : keys(a) === 'ok')) ||
        (a.ok === false && ['E_VALIDATION', 'E_RATE_LIMITED', 'E_CHANNEL_NOT_FOUND', 'E_FORBIDDEN'].includes(a.code) && typeof a.message === 'string')),
    serverEvents: {
      'server:joined': () => true,
      'channel:joined': () => true,
      'typing:update': () => true,
      'message:new': () => true,
      'presence:update': () => true,
      'server:member_joined': () => true,
      'server:member_left': () => true,
      'error:validation': (d) => ['E_VALIDATION', 'E_RATE_LIMITED'].includes(d?.code) && isHexId(d.correlationId),
      'error:not_found': (d) => d?.code === 'E_CHANNEL_NOT_FOUND' && isHexId(d.correlationId),
      'error:permission': (d) => d?.code === 'E_FORBIDDEN' && isHexId(d.correlationId),
    },
  },
  vault: {
    events: ['vault:join', 'vault:leave', 'source:created', 'source:updated', 'source:deleted'],
    mustAck: () => false,
    // The contract acknowledges nothing; an answer, if any, is never an error of another kind.
    validAck: (event, a) => event !== 'vault:leave' && !/INTERNAL/.test(JSON.stringify(a ?? null)),
    serverEvents: {
      'vault:joined': () => true,
      'source:created': () => true,
      'source:updated': () => true,
      'source:deleted': () => true,
      error: (d) =>
        isObj(d) &&
        ['INVALID_VAULT_ID', 'FORBIDDEN', 'VALIDATION_ERROR', 'RATE_LIMITED'].includes(d.code) &&
        typeof d.message === 'string' &&
        isHexId(d.details?.correlationId),
    },
  },
  tasks: {
    events: ['room:join', 'room:leave', 'message:send', 'message:edit', 'message:delete', 'message:read', 'typing:start', 'typing:stop'],
    mustAck: (event) => event === 'message:send' || event === 'message:read',
    validAck: (event, a) =>
      isObj(a) &&
      ((a.ok === true && (event === 'message:send' ? isObj(a.message) : event === 'message:read' ? typeof a.readAt === 'string' : keys(a) === 'ok')) ||
        (a.ok === false && TASK_CODES.includes(a.code) && typeof a.message === 'string')),
    serverEvents: {
      'auth:success': () => true,
      'room:joined': () => true,
      'message:history': () => true,
      'room:left': () => true,
      'room:error': (d) => isObj(d) && typeof d.message === 'string' && 'roomType' in d && 'roomId' in d,
      'message:new': () => true,
      'message:edited': () => true,
      'message:deleted': () => true,
      'message:read': () => true,
      'typing:started': () => true,
      'typing:stopped': () => true,
      error: (d) => isObj(d) && TASK_CODES.includes(d.code) && typeof d.message === 'string' && isHexId(d.correlationId),
    },
  },
};
const TASK_CODES = ['VALIDATION_ERROR', 'NOT_JOINED', 'FORBIDDEN', 'NOT_FOUND', 'RATE_LIMITED', 'EDIT_WINDOW_EXPIRED'];

function jsonBytes(v) {
  const s = JSON.stringify(v);
  return s === undefined ? 0 : Buffer.byteLength(s, 'utf8');
}

// ---------------------------------------------------------------------------------------------
// Fixtures: real rooms and ids in every dialect, SOCKETS_PER_DIALECT users each.

async function provision() {
  const n = SOCKETS_PER_DIALECT;
  const chatUsers = [];
  for (let i = 0; i < n; i++) chatUsers.push(await newUser('fz'));
  const chatId = await putChat(`fuzz-${uuid()}`);
  for (const u of chatUsers) await addMember(chatId, u.id);
  const conv = await newConversation({ members: n });
  const guild = await newGuild({ members: n });
  const vault = await newVault({ roles: ['owner', 'contributor', 'viewer'].slice(0, n) });
  const project = await newProject({ roles: Array(n).fill('researcher') });
  const taskMessage = await postTaskMessage('project', project.projectId, project.users[0].id, 'fuzz target');
  return {
    chat: { users: chatUsers, ids: { CHAT: chatId, MESSAGE: null } },
    app: { users: conv.users, ids: { CONVERSATION: conv.conversationId } },
    guild: { users: guild.users, ids: { SERVER: guild.serverId, CHANNEL: guild.channelId } },
    vault: { users: vault.users, ids: { VAULT: vault.vaultId } },
    tasks: { users: project.users, ids: { PROJECT: project.projectId, STUDY: project.studyId, MESSAGE: taskMessage.id } },
  };
}

/** Connects one socket per fixture user of `dialect` (alternating nodes) and joins its rooms. */
async function fuzzSockets(dialect) {
  const f = fixtures[dialect];
  const sockets = [];
  for (let i = 0; i < f.users.length; i++) {
    const u = f.users[i];
    const node = i % 2 ? NODE2 : NODE1;
    let s;
    if (dialect === 'chat') {
      s = await connectUser(u, node);
      await join(s, f.ids.CHAT);
      if (i === 0) f.ids.MESSAGE = (await send(s, f.ids.CHAT, 'fuzz target')).serverId;
    } else if (dialect === 'app') {
      s = await connectApp(u, node);
      await joinConversation(s, f.ids.CONVERSATION);
    } else if (dialect === 'guild') {
      s = await connectGuild(u, node);
      await joinServer(s, f.ids.SERVER);
    } else if (dialect === 'vault') {
      s = await connectVault(u, node);
      await joinVault(s, f.ids.VAULT, u.role);
    } else {
      s = await connectTasks(u, node);
      await joinRoom(s, 'project', f.ids.PROJECT);
    }
    s.on('disconnect', (reason) => (s.__disconnectReason = reason));
    sockets.push(s);
  }
  return sockets;
}

// ---------------------------------------------------------------------------------------------
// Corpus expansion: $NAME placeholders become the dialect's real ids; { $repeat: [s, n] },
// { $range: n } and { $keys: n } expand to long strings, long arrays and wide objects.

function expand(value, ids) {
  if (typeof value === 'string') {
    return value.replace(/\$([A-Z]+)/g, (m, name) => (ids[name] === undefined || ids[name] === null ? m : String(ids[name])));
  }
  if (Array.isArray(value)) return value.map((v) => expand(v, ids));
  if (isObj(value)) {
    if (Array.isArray(value.$repeat)) return value.$repeat[0].repeat(value.$repeat[1]);
    if (typeof value.$range === 'number') return Array.from({ length: value.$range }, (_, i) => i);
    if (typeof value.$keys === 'number') return Object.fromEntries(Array.from({ length: value.$keys }, (_, i) => [`k${i}`, i]));
    const out = {};
    for (const [k, v] of Object.entries(value)) if (k !== '__proto__') out[k] = expand(v, ids);
    // JSON.parse keeps a "__proto__" key as an own property; keep it so.
    if (Object.prototype.hasOwnProperty.call(value, '__proto__')) {
      const own = Object.getOwnPropertyDescriptor(value, '__proto__').value;
      Object.defineProperty(out, '__proto__', { value: expand(own, ids), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}

/** Numeric placeholders (guild and tasks ids) are sent as numbers where the whole value is one. */
function numericIds(value, ids) {
  if (typeof value === 'string' && /^\$[A-Z]+$/.test(value) && typeof ids[value.slice(1)] === 'number') return ids[value.slice(1)];
  if (Array.isArray(value)) return value.map((v) => numericIds(v, ids));
  if (isObj(value) && !('$repeat' in value)) {
    const out = {};
    for (const [k, v] of Object.entries(value)) if (k !== '__proto__') out[k] = numericIds(v, ids);
    if (Object.prototype.hasOwnProperty.call(value, '__proto__')) {
      const own = Object.getOwnPropertyDescriptor(value, '__proto__').value;
      Object.defineProperty(out, '__proto__', { value: own, enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Sending one case and checking what comes back

/** A socket being fuzzed: its pacer, the acks it is owed, the failures seen. */
function fuzzer(dialect, socket) {
  const rate = LIMITS.eventsPerSecond * 0.8;
  let tokens = Math.floor(LIMITS.eventBurst / 4);
  let last = Date.now();
  return {
    dialect,
    socket,
    sent: 0,
    acked: 0,
    history: [],
    async tick() {
      for (;;) {
        const now = Date.now();
        tokens = Math.min(Math.floor(LIMITS.eventBurst / 4), tokens + ((now - last) / 1000) * rate);
        last = now;
        if (tokens >= 1) {
          tokens -= 1;
          return;
        }
        await sleep(Math.ceil(((1 - tokens) / rate) * 1000) + 2);
      }
    },
  };
}

const describe = (c) => `${c.event} ${c.withAck ? 'with' : 'without'} ack, args ${JSON.stringify(c.args)?.slice(0, 300)}`;

/**
 * Sends one case `{ event, args, withAck }` on the fuzzer's socket; when the dialect always
 * acknowledges the event, waits for the ack and checks it. Throws on a wrong answer.
 */
async function runCase(fz, c) {
  const d = DIALECTS[fz.dialect];
  await fz.tick();
  fz.sent += 1;
  fz.history.push(describe(c).slice(0, 160));
  if (!c.withAck) {
    fz.socket.emit(c.event, ...c.args);
    return;
  }
  const known = d.events.includes(c.event);
  const must = known && c.args.length <= 1 && d.mustAck(c.event, c.args);
  const answer = new Promise((resolve) => {
    fz.socket.emit(c.event, ...c.args, (...res) => resolve(res));
  });
  if (!must) {
    // Checked when (if) it comes; not waited for.
    answer.then((res) => {
      fz.acked += 1;
      if (!known) fz.late = (fz.late ?? []).concat(`unknown event ${describe(c)} was acknowledged: ${JSON.stringify(res).slice(0, 200)}`);
      else if (!d.validAck(c.event, res[0])) fz.late = (fz.late ?? []).concat(`${fz.dialect} ${describe(c)} → ${JSON.stringify(res).slice(0, 300)}`);
    });
    return;
  }
  const from = eventsOf(fz.socket).length;
  const res = await Promise.race([answer, sleep(10000).then(() => null)]);
  assert.ok(
    res,
    `${fz.dialect}: no acknowledgement within 10 s for ${describe(c)} (connected: ${fz.socket.connected}, disconnect: ${fz.socket.__disconnectReason}; ` +
      `sent before: ${JSON.stringify(fz.history.slice(-6, -1))}; received since: ${JSON.stringify(eventsOf(fz.socket).slice(from).map((e) => [e.event, e.data]))?.slice(0, 600)})`,
  );
  fz.acked += 1;
  assert.ok(d.validAck(c.event, res[0]), `${fz.dialect}: ${describe(c)} was answered ${JSON.stringify(res).slice(0, 400)}`);
}

/** Every event the fuzzed sockets received: documented for the dialect, errors well-formed. */
function checkReceived(dialect, sockets) {
  const d = DIALECTS[dialect];
  for (const s of sockets) {
    for (const e of eventsOf(s)) {
      const check = d.serverEvents[e.event];
      assert.ok(check, `${dialect}: ${s.__name} received an undocumented event '${e.event}' ${JSON.stringify(e.data)?.slice(0, 300)}`);
      assert.ok(check(e.data), `${dialect}: ${s.__name} received a malformed or internal '${e.event}' ${JSON.stringify(e.data)?.slice(0, 300)}`);
    }
  }
}

/** After a fuzzing round: late acks checked, sockets still connected, events documented. */
async function settle(fuzzers) {
  await sleep(1000);
  for (const fz of fuzzers) {
    assert.deepEqual(fz.late ?? [], [], `${fz.dialect}: answers that came later`);
    assert.ok(
      fz.socket.connected,
      `${fz.dialect}: ${fz.socket.__name} is still connected after ${fz.sent} fuzzed events (disconnect: ${fz.socket.__disconnectReason}; last sent: ${JSON.stringify(fz.history.slice(-3))})`,
    );
  }
  for (const dialect of new Set(fuzzers.map((f) => f.dialect))) {
    checkReceived(
      dialect,
      fuzzers.filter((f) => f.dialect === dialect).map((f) => f.socket),
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Arbitraries

const HOSTILE_STRINGS = [
  '',
  '\u0000',
  'a\u0000b',
  '\ud800',
  '\udfff\ud800',
  '\uffff\ufffe',
  '\u202e',
  '😀',
  'é',
  ' ',
  '__proto__',
  'constructor',
  "' OR 1=1 --",
  '../../etc/passwd',
  '${jndi:ldap://x/a}',
  '<script>alert(1)</script>',
  '%00',
  '%s%s%n',
  'NaN',
  '-0',
  '1e400',
  '18446744073709551616',
];

const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 3, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 12 }) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('x', 'é', '😀', '\u0000'), fc.integer({ min: 100, max: 12000 })).map(([u, n]) => u.repeat(n)) },
);

const hostileNumber = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -1, 1.5, -0, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64, -(2 ** 63), 1e308, -1e308, 5e-324, Number.MAX_VALUE),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map((b) => Number(b)),
);

const deep = fc.tuple(fc.integer({ min: 20, max: 400 }), fc.boolean()).map(([depth, asArray]) => {
  let v = 'leaf';
  for (let i = 0; i < depth; i++) v = asArray ? [v] : { a: v };
  return v;
});

const hostileValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    hostileString,
    hostileNumber,
    fc.constantFrom(null, true, false),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(fc.oneof(hostileString, fc.constantFrom('__proto__', 'constructor', '$ne', 'chatId', 'id')), tie('value'), { maxKeys: 5 }),
  ),
})).value;

/** The payload of a dialect's event: arbitrary JSON, or the event's fields with hostile values. */
function payloadFor(dialect) {
  const ids = fixtures[dialect].ids;
  const realIds = Object.values(ids).filter((v) => v !== null && v !== undefined);
  const idish = fc.oneof(fc.constantFrom(...realIds), fc.constantFrom(...realIds).map(String), hostileString, hostileNumber);
  const fields = fc.record(
    {
      chatId: idish,
      conversationId: idish,
      serverId: idish,
      channelId: idish,
      vaultId: idish,
      id: idish,
      type: fc.oneof(fc.constantFrom('project', 'study', 'text', 'image', 'file'), hostileString),
      roomType: fc.oneof(fc.constantFrom('project', 'study'), hostileString),
      roomId: idish,
      messageId: idish,
      sourceId: idish,
      body: hostileValue,
      content: hostileValue,
      clientId: fc.oneof(fc.uuid(), hostileString),
      source: fc.oneof(hostileValue, fc.record({ id: hostileValue, title: hostileValue, fileUrl: hostileValue, vaultId: idish }, { requiredKeys: [] })),
      replyToId: idish,
      fileId: idish,
      userId: idish,
    },
    { requiredKeys: [] },
  );
  return fc.oneof(
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
    { weight: 2, arbitrary: hostileValue },
    { weight: 4, arbitrary: fields },
    { weight: 1, arbitrary: deep },
    { weight: 1, arbitrary: idish },
  );
}

function caseFor(dialect) {
  const events = [...DIALECTS[dialect].events, ...UNKNOWN_EVENTS];
  const payload = payloadFor(dialect);
  return fc.record({
    event: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...DIALECTS[dialect].events) }, { weight: 1, arbitrary: fc.constantFrom(...events) }),
    args: fc.oneof({ weight: 8, arbitrary: fc.tuple(payload) }, { weight: 1, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.tuple(payload, payload) }),
    withAck: fc.boolean(),
  });
}

// ---------------------------------------------------------------------------------------------
// The tests

test('the payload corpus, as every client event of every dialect, with and without acks: documented answers only', async () => {
  const all = [];
  await Promise.all(
    Object.keys(DIALECTS).map(async (dialect) => {
      const sockets = await fuzzSockets(dialect);
      const fuzzers = sockets.map((s) => fuzzer(dialect, s));
      all.push(...fuzzers);
      const ids = fixtures[dialect].ids;
      const cases = [];
      PAYLOADS.forEach((entry, i) => {
        if (entry.dialect && entry.dialect !== dialect) return;
        const events = entry.event ? [entry.event] : [...DIALECTS[dialect].events, ...UNKNOWN_EVENTS.slice(0, 1)];
        const data = expand(numericIds(entry.data, ids), ids);
        events.forEach((event, j) => cases.push({ event, args: [data], withAck: (i + j) % 2 === 0 }));
      });
      // Each socket takes every n-th case.
      await Promise.all(
        fuzzers.map(async (fz, k) => {
          for (let i = k; i < cases.length; i += fuzzers.length) await runCase(fz, cases[i]);
        }),
      );
    }),
  );
  await settle(all);
  assert.ok(all.reduce((n, f) => n + f.sent, 0) > PAYLOADS.length * 5, 'the whole corpus went out');
});

test('generated payloads (fast-check, fixed seed) for every event of every dialect: documented answers only', async () => {
  const all = [];
  await Promise.all(
    Object.keys(DIALECTS).map(async (dialect, di) => {
      const sockets = await fuzzSockets(dialect);
      const fuzzers = sockets.map((s) => fuzzer(dialect, s));
      all.push(...fuzzers);
      await Promise.all(
        fuzzers.map((fz, k) =>
          fc.assert(
            fc.asyncProperty(caseFor(dialect), async (c) => {
              await runCase(fz, c);
            }),
            { seed: SEED + di * 10 + k, numRuns: GENERATED_RUNS_PER_SOCKET, endOnFailure: true },
          ),
        ),
      );
    }),
  );
  await settle(all);
});

// ---------------------------------------------------------------------------------------------
// Raw packets

/** Expands a corpus packet: a string, or a list of strings and { $repeat: [s, n] } joined. */
const packetOf = (p) => (typeof p === 'string' ? p : p.map((part) => (typeof part === 'string' ? part : part.$repeat[0].repeat(part.$repeat[1]))).join(''));

const PREFIXES = ['0', '1', '2', '3', '4', '5', '6', '40', '41', '42', '43', '44', '45-', '451-', '46', '42/guild,', '40/guild,', '42/tasks,', '40/vault,', '42/ws/app,', '43/guild,1', '421', '4/nonexistent,'];

const generatedPackets = fc.sample(
  fc.tuple(
    fc.constantFrom(...PREFIXES),
    fc.oneof(
      fc.string({ unit: 'binary', maxLength: 120 }),
      fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
      fc.tuple(fc.constantFrom('room:join', 'message:send', 'server:join', 'vault:join', 'conversations:join', 'x'), fc.jsonValue({ maxDepth: 3 })).map((t) => JSON.stringify(t)),
      fc.string({ unit: 'binary-ascii', maxLength: 60 }),
    ),
  ).map(([prefix, rest]) => prefix + rest),
  { seed: SEED, numRuns: GENERATED_PACKETS },
);

/**
 * Sends `packets` over raw Engine.IO WebSockets to `node`, opening a new one whenever the server
 * closed the last; with `connectAs` (a JWT) each connection first CONNECTs to `/` and the
 * packets are paced inside the event budget. Answers `{ opened, answers }` (every text frame).
 */
async function blast(node, packets, { connectAs } = {}) {
  const conns = [];
  const pace = connectAs ? fuzzer('chat', null) : null;
  const open = async () => {
    conns.at(-1)?.ws.terminate();
    const conn = rawEngine(node);
    conns.push(conn);
    await conn.opened;
    if (!connectAs) return;
    // A CONNECT right after the previous socket closed may meet the per-user cap: retry.
    for (let attempt = 0; ; attempt++) {
      const at = conn.messages.length;
      conn.ws.send(`40${JSON.stringify({ token: connectAs })}`);
      const deadline = Date.now() + 5000;
      let reply;
      while (!(reply = conn.messages.slice(at).find((m) => m.startsWith('40') || m.startsWith('44')))) {
        assert.ok(Date.now() < deadline, `a raw CONNECT to / was answered: ${JSON.stringify(conn.messages.slice(at))}`);
        await sleep(10);
      }
      if (reply.startsWith('40')) return;
      assert.ok(attempt < 20, `a raw CONNECT keeps being refused: ${reply}`);
      await sleep(250);
    }
  };
  for (const p of packets) {
    const conn = conns.at(-1);
    if (!conn || conn.ws.readyState !== WebSocket.OPEN) await open();
    if (pace) await pace.tick();
    conns.at(-1).ws.send(p);
    if (!pace) await sleep(3);
  }
  await sleep(300);
  conns.at(-1)?.ws.terminate();
  return { opened: conns.length, answers: conns.flatMap((c) => c.messages) };
}

test('raw Engine.IO / Socket.IO packets (corpus, then generated) never bring a node down', async () => {
  const corpus = PACKETS.map(packetOf);
  const half = Math.ceil(generatedPackets.length / 2);
  const [one, two] = await Promise.all([
    blast(NODE1, [...corpus, ...generatedPackets.slice(0, half)]),
    blast(NODE2, [...corpus, ...generatedPackets.slice(half)]),
  ]);
  assert.ok(one.opened >= 1 && two.opened >= 1);
  for (const a of [...one.answers, ...two.answers]) {
    assert.ok(!/"(error|code)":"(E_)?INTERNAL"/.test(a), `no internal error in a raw answer: ${a.slice(0, 200)}`);
  }
  await assertNodesUp('after the raw packets');
  // Both nodes still serve new clients, end to end.
  const u = await newUser('afterraw');
  const s1 = await connectUser(u, NODE1);
  const s2 = await connectUser(u, NODE2);
  assert.equal((await s1.timeout(5000).emitWithAck('presence:ping', {})).ok, true);
  assert.equal((await s2.timeout(5000).emitWithAck('presence:ping', {})).ok, true);
});

test('raw event packets on an authenticated / socket (big numbers, duplicate keys, deep nesting, bad JSON): no internal error, nodes up', async () => {
  const users = [];
  for (let i = 0; i < 3; i++) users.push(await newUser('rawauth'));
  const isEvent = (p) => /^4[2-6]/.test(p);
  const eventPackets = [...PACKETS.map(packetOf).filter(isEvent), ...generatedPackets.filter(isEvent).slice(0, GENERATED_AUTHENTICATED_PACKETS)];
  assert.ok(eventPackets.length > 20, `${eventPackets.length} event packets`);
  const third = Math.ceil(eventPackets.length / 3);
  const results = await Promise.all(
    users.map((u, i) => blast(i % 2 ? NODE2 : NODE1, eventPackets.slice(i * third, (i + 1) * third), { connectAs: u.token })),
  );
  for (const r of results) {
    for (const a of r.answers) {
      assert.ok(!/"(error|code)":"(E_)?INTERNAL"/.test(a), `no internal error in an answer: ${a.slice(0, 200)}`);
    }
  }
  await assertNodesUp('after the authenticated raw packets');
});
