// Shared helpers of the `chat` (002) contract suite: the integration API (admin) client,
// provisioning, credentials, Socket.IO clients on either gateway node, and event waiting.
//
// The harness (tests/contract.rs) starts the cluster and passes it in through SB_* variables.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import pg from 'pg';
import { io } from 'socket.io-client';

const env = (name, fallback) => {
  const v = process.env[name];
  return v === undefined || v.trim() === '' ? fallback : v.trim();
};

/** Base URLs of the gateway nodes; node 1 is `GATEWAYS[0]`, node 2 `GATEWAYS[1]`. */
export const GATEWAYS = env('SB_GATEWAYS', 'http://127.0.0.1:3000,http://127.0.0.1:3001')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
export const NODE1 = GATEWAYS[0];
export const NODE2 = GATEWAYS[1] ?? GATEWAYS[0];
export const ADMIN_TOKEN = env('SB_ADMIN_TOKEN', 'test-admin-token-0123456789abcdef');
export const JWT_SECRET = env('SB_JWT_SECRET', 'test-jwt-secret-0123456789abcdefghij');
export const SESSION_SECRET = env('SB_SESSION_SECRET', 'test-session-secret-0123456789abcdefgh');
export const ALLOWED_ORIGIN = env('SB_ALLOWED_ORIGIN', 'http://allowed.example');
export const GATEWAY_PIDS = env('SB_GATEWAY_PIDS', '')
  .split(',')
  .filter(Boolean)
  .map(Number);
export const REDIS_PORT = Number(env('SB_REDIS_PORT', '6379'));
export const REDIS_SERVER = env('SB_REDIS_SERVER', 'redis-server');
export const DATABASE_URL = env('SB_DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/test');

/** Timings the harness configured (see tests/support/mod.rs). */
export const PRESENCE_TTL_MS = 2000;
export const PRESENCE_THROTTLE_MS = 2000;
export const TYPING_TTL_MS = 3000;

/** How long "nothing arrives" checks wait. */
export const QUIET_MS = 800;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `<prefix>-<random hex>`: unique ids per test. */
export function rid(prefix) {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

export const uuid = () => crypto.randomUUID();

// ---------------------------------------------------------------------------------------------
// Shapes

export const HEX32 = /^[0-9a-f]{32}$/;
export const DECIMAL = /^[0-9]+$/;
export const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$/;

export function assertIso(value, what = 'timestamp') {
  assert.equal(typeof value, 'string', `${what} is a string: ${JSON.stringify(value)}`);
  assert.match(value, ISO_8601, `${what} is ISO 8601`);
  assert.ok(!Number.isNaN(Date.parse(value)), `${what} parses as a date`);
}

/** `{ ok: false, error: code, message, correlationId }`, exactly. */
export function assertErrorAck(ack, code) {
  assert.ok(ack && typeof ack === 'object', `an error ack object, got ${JSON.stringify(ack)}`);
  assert.equal(ack.ok, false, `ok:false in ${JSON.stringify(ack)}`);
  assert.equal(ack.error, code, `error ${code} in ${JSON.stringify(ack)}`);
  assert.equal(typeof ack.message, 'string', `message is a string in ${JSON.stringify(ack)}`);
  assert.ok(ack.message.length > 0, 'message is not empty');
  assert.equal(typeof ack.correlationId, 'string', `correlationId in ${JSON.stringify(ack)}`);
  assert.match(ack.correlationId, HEX32, 'correlationId is a trace id (32 lowercase hex)');
  assert.deepEqual(Object.keys(ack).sort(), ['correlationId', 'error', 'message', 'ok']);
}

/** `{ ok: true }` (with `data` when the event answers some). */
export function assertOk(ack, what = 'ack') {
  assert.ok(ack && typeof ack === 'object', `${what}: an ack object, got ${JSON.stringify(ack)}`);
  assert.equal(ack.ok, true, `${what}: ok:true, got ${JSON.stringify(ack)}`);
}

/** The shape of `message:new` (and of the /v1/chats history items). */
export function assertChatMessage(m, expected = {}) {
  assert.ok(m && typeof m === 'object', `a message object, got ${JSON.stringify(m)}`);
  assert.equal(typeof m.chatId, 'string');
  assert.equal(typeof m._id, 'string');
  assert.match(m._id, DECIMAL, '_id is the message id as a decimal string');
  assert.equal(typeof m.body, 'string');
  assert.equal(typeof m.senderId, 'string');
  assertIso(m.createdAt, 'createdAt');
  if (m.clientId !== undefined && m.clientId !== null) assert.equal(typeof m.clientId, 'string');
  for (const [k, v] of Object.entries(expected)) {
    assert.deepEqual(m[k], v, `message.${k} in ${JSON.stringify(m).slice(0, 300)}`);
  }
}

/** An HTTP error body: `{ error, message, correlationId }`. */
export function assertHttpError(res, status, code) {
  assert.equal(res.status, status, `HTTP ${status} expected, got ${res.status}: ${res.text.slice(0, 300)}`);
  assert.ok(res.json && typeof res.json === 'object', `a JSON error body, got ${res.text.slice(0, 300)}`);
  if (code !== undefined) assert.equal(res.json.error, code);
  assert.equal(typeof res.json.error, 'string');
  assert.equal(typeof res.json.message, 'string');
  assert.equal(typeof res.json.correlationId, 'string');
  assert.ok(res.json.correlationId.length > 0);
}

// ---------------------------------------------------------------------------------------------
// HTTP

/**
 * One HTTP request to a gateway node. `token` defaults to the admin token; pass `null` for none.
 * Answers `{ status, json, text, headers }` (`json` is null when the body is not JSON).
 */
export async function http(method, path, { body, token = ADMIN_TOKEN, node = NODE1, headers = {} } = {}) {
  const h = { ...headers };
  if (token !== null && token !== undefined) h.authorization = `Bearer ${token}`;
  if (body !== undefined) h['content-type'] = 'application/json';
  const res = await fetch(new URL(path, node), {
    method,
    headers: h,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(15000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, text, headers: res.headers };
}

/** An admin call that must succeed (2xx); answers the parsed body. */
export async function admin(method, path, body, { node = NODE1 } = {}) {
  const res = await http(method, path, { body, node });
  assert.ok(
    res.status >= 200 && res.status < 300,
    `${method} ${path} → ${res.status} ${res.text.slice(0, 500)}`,
  );
  return res.json;
}

// ---------------------------------------------------------------------------------------------
// Provisioning and credentials

const enc = encodeURIComponent;

export async function putUser(id, extra = {}) {
  await admin('PUT', `/v1/users/${enc(id)}`, { username: id, ...extra });
  return id;
}

export async function putChat(chatId, { type = 'group', title = `title ${chatId}`, createdBy } = {}) {
  const body = { type, title };
  if (createdBy !== undefined) body.createdBy = createdBy;
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}`, body);
  return chatId;
}

export async function addMember(chatId, userId, role = 'member') {
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}/members/${enc(userId)}`, { role });
}

export async function removeMember(chatId, userId) {
  await admin('DELETE', `/v1/rooms/chat/${enc(chatId)}/members/${enc(userId)}`);
}

/** A JWT minted by the gateway (`POST /v1/tokens`). */
export async function mintToken(userId, ttlSeconds) {
  const body = { userId };
  if (ttlSeconds !== undefined) body.ttlSeconds = ttlSeconds;
  const res = await admin('POST', '/v1/tokens', body);
  assert.equal(typeof res?.token, 'string', `POST /v1/tokens answers { token }: ${JSON.stringify(res)}`);
  return res.token;
}

/** An opaque session (`POST /v1/sessions`): `{ token, cookie, expiresAt }`. */
export async function createSession(userId, ttlSeconds) {
  const body = { userId };
  if (ttlSeconds !== undefined) body.ttlSeconds = ttlSeconds;
  const res = await admin('POST', '/v1/sessions', body);
  assert.equal(typeof res?.token, 'string', `POST /v1/sessions answers a token: ${JSON.stringify(res)}`);
  assert.equal(typeof res?.cookie, 'string', 'POST /v1/sessions answers a cookie');
  return res;
}

/** A user (upserted) with a JWT from the gateway. */
export async function newUser(prefix = 'u') {
  const id = await putUser(rid(prefix));
  return { id, token: await mintToken(id) };
}

/**
 * A chat with `members` fresh users (the first is `createdBy`); answers
 * `{ chatId, users: [{ id, token }], title, type }`.
 */
export async function newChat({ members = 2, type = 'group', title } = {}) {
  const users = [];
  for (let i = 0; i < members; i++) users.push(await newUser());
  const chatId = rid('c');
  const chatTitle = title ?? `chat ${chatId}`;
  await putChat(chatId, { type, title: chatTitle, createdBy: users[0]?.id });
  for (const u of users) await addMember(chatId, u.id);
  return { chatId, users, title: chatTitle, type };
}

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** Signs a JWT with node:crypto: HS256 by default, `alg: 'none'` for an unsigned one. */
export function forgeJwt(payload, { secret = JWT_SECRET, alg = 'HS256', header = {} } = {}) {
  const head = b64url({ alg, typ: 'JWT', ...header });
  const body = b64url(payload);
  if (alg === 'none') return `${head}.${body}.`;
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg];
  assert.ok(hash, `forgeJwt supports HS256/384/512 and none, not ${alg}`);
  const sig = crypto.createHmac(hash, secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------------------------
// Sockets

const openSockets = new Set();

/** Every event (name and first argument) a socket received, in order. */
export function eventsOf(socket) {
  return socket.__events ?? [];
}

function track(socket, name) {
  socket.__name = name;
  socket.__events = [];
  socket.onAny((event, ...args) => {
    socket.__events.push({ event, data: args[0], args, at: Date.now() });
  });
  openSockets.add(socket);
  return socket;
}

/** A tracked socket, not yet connected (for clients that manage their own connection). */
export function makeSocket(url, opts = {}, name = url) {
  return track(
    io(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: 10000,
      ...opts,
    }),
    name,
  );
}

/**
 * Connects to `url` with `token` in `auth.token` (pass `undefined` for no auth object).
 * Resolves with the socket on `connect`, rejects with the error on `connect_error`.
 */
export function connect(url, token, opts = {}) {
  const { name, ...rest } = opts;
  const base = token === undefined ? {} : { auth: { token } };
  const socket = makeSocket(url, { ...base, ...rest }, name ?? `${url}`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      socket.close();
      reject(new Error(`no connect nor connect_error from ${url} within 15 s`));
    }, 15000);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      socket.close();
      reject(err);
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    };
    socket.on('connect', onConnect);
    socket.on('connect_error', onError);
  });
}

/** Connects `user` (`{ id, token }`) to `node`; the socket is named after the user. */
export function connectUser(user, node = NODE1, opts = {}) {
  return connect(node, user.token, { name: `${user.id}@${node}`, ...opts });
}

/** Expects the handshake to be refused; answers the `connect_error`. */
export async function expectConnectError(url, token, opts = {}) {
  let socket;
  try {
    socket = await connect(url, token, opts);
  } catch (err) {
    return err;
  }
  socket.close();
  assert.fail(`the handshake to ${url} was accepted, expected a connect_error`);
}

/** Expects a refused handshake whose `connect_error` message is `code`. */
export async function expectRefused(url, token, code = 'UNAUTHORIZED', opts = {}) {
  const err = await expectConnectError(url, token, opts);
  assert.equal(err.message, code, `connect_error message: ${err.message}`);
  return err;
}

/** Closes every socket opened through these helpers (call after each test). */
export function closeAll() {
  for (const s of openSockets) {
    try {
      s.io.reconnection(false);
      s.close();
    } catch {
      // already closed
    }
  }
  openSockets.clear();
}

/** `emitWithAck` with a timeout (rejects when no ack arrives in time). */
export function ack(socket, event, payload, timeoutMs = 10000) {
  return socket.timeout(timeoutMs).emitWithAck(event, payload);
}

/** `emitWithAck` with exactly `args` as arguments (none, several, …). */
export function ackArgs(socket, event, args, timeoutMs = 10000) {
  return socket.timeout(timeoutMs).emitWithAck(event, ...args);
}

const safe = (predicate) => (data) => {
  try {
    return Boolean(predicate(data));
  } catch {
    return false;
  }
};

/**
 * Resolves with the first argument of the first `event` on `socket` matching `predicate`,
 * including events that arrived before the call; rejects after `timeoutMs`.
 */
export function waitFor(socket, event, predicate = () => true, timeoutMs = 5000) {
  const match = safe(predicate);
  const seen = eventsOf(socket).find((e) => e.event === event && match(e.data));
  if (seen) return Promise.resolve(seen.data);
  return new Promise((resolve, reject) => {
    const handler = (name, ...args) => {
      if (name === event && match(args[0])) {
        cleanup();
        resolve(args[0]);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      const got = eventsOf(socket)
        .filter((e) => e.event === event)
        .map((e) => JSON.stringify(e.data)?.slice(0, 200));
      reject(
        new Error(
          `timed out after ${timeoutMs} ms waiting for a matching '${event}' on ${socket.__name}; ` +
            `'${event}' events seen: ${got.length ? got.join(' | ') : 'none'}`,
        ),
      );
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      socket.offAny(handler);
    };
    socket.onAny(handler);
  });
}

/** How many `event`s matching `predicate` the socket has received so far. */
export function count(socket, event, predicate = () => true) {
  const match = safe(predicate);
  return eventsOf(socket).filter((e) => e.event === event && match(e.data)).length;
}

/** Waits `ms`, then asserts that no `event` matching `predicate` ever arrived on the socket. */
export async function expectNo(socket, event, ms = QUIET_MS, predicate = () => true) {
  await sleep(ms);
  const match = safe(predicate);
  const got = eventsOf(socket).filter((e) => e.event === event && match(e.data));
  assert.equal(
    got.length,
    0,
    `${socket.__name} received unexpected '${event}': ${got.map((e) => JSON.stringify(e.data)).join(' | ')}`,
  );
}

/** Resolves when the socket is (or becomes) disconnected; answers the reason. */
export function waitForDisconnect(socket, timeoutMs = 5000) {
  if (!socket.connected) return Promise.resolve('already disconnected');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${socket.__name} was not disconnected within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once('disconnect', (reason) => {
      clearTimeout(timer);
      resolve(reason);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Chat operations

export async function join(socket, chatId) {
  const res = await ack(socket, 'room:join', { chatId });
  assertOk(res, `room:join ${chatId} by ${socket.__name}`);
  return res;
}

/** Sends a message and expects success; answers `{ clientId, serverId, body }`. */
export async function send(socket, chatId, body = `hello ${uuid()}`, clientId = uuid()) {
  const res = await ack(socket, 'message:send', { chatId, body, clientId });
  assertOk(res, `message:send by ${socket.__name}`);
  assert.equal(res.data?.clientId, clientId, 'the ack echoes clientId');
  assert.equal(typeof res.data?.serverId, 'string', 'serverId is a string');
  assert.match(res.data.serverId, DECIMAL, 'serverId is a decimal string');
  return { clientId, serverId: res.data.serverId, body };
}

/** `GET /v1/chats/{chatId}/messages` with a user's own token. */
export function chatHistory(chatId, token, query = {}, node = NODE1) {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  return http('GET', `/v1/chats/${enc(chatId)}/messages${qs ? `?${qs}` : ''}`, { token, node });
}

/** Every message of a chat through the history endpoint (newest-first pages walked with `before`). */
export async function allChatMessages(chatId, token, node = NODE1) {
  const out = [];
  let res = await chatHistory(chatId, token, { limit: 100 }, node);
  for (let guard = 0; guard < 1000; guard++) {
    assert.equal(res.status, 200, `history: ${res.status} ${res.text.slice(0, 300)}`);
    out.push(...res.json.messages);
    if (!res.json.hasMore) break;
    assert.match(String(res.json.nextCursor), DECIMAL, 'nextCursor is a decimal string');
    res = await chatHistory(chatId, token, { limit: 100, before: res.json.nextCursor }, node);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Redis (raw RESP, no client library needed)

/** Sends one inline command to the test's Redis; answers the raw reply, or null if unreachable. */
export function redisCommand(command, port = REDIS_PORT, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let data = '';
    const done = (value) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(value);
    };
    const timer = setTimeout(() => done(data || null), timeoutMs);
    sock.on('connect', () => sock.write(`${command}\r\n`));
    sock.on('data', (chunk) => {
      data += chunk.toString();
      if (data.includes('\r\n')) done(data);
    });
    sock.on('error', () => done(null));
    sock.on('close', () => done(data || null));
  });
}

/**
 * Sends `cut` or `restore` to the control port of a fault-injection proxy (tests/support/proxy.rs;
 * the harness passes the ports as `SB_*_PROXY_CONTROL`). Resolves once the proxy answered `ok`:
 * after `cut`, every connection it forwarded is closed and new ones are closed on accept; after
 * `restore`, new connections are forwarded again.
 */
export function proxyControl(port, command, timeoutMs = 10000) {
  assert.ok(command === 'cut' || command === 'restore', `proxyControl: 'cut' or 'restore', not ${command}`);
  const p = Number(port);
  assert.ok(Number.isInteger(p) && p > 0, `proxyControl: a control port, got ${JSON.stringify(port)}`);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: '127.0.0.1', port: p });
    let data = '';
    const done = (err) => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`proxy ${p}: no answer to '${command}' within ${timeoutMs} ms`)), timeoutMs);
    sock.on('connect', () => sock.write(`${command}\n`));
    sock.on('data', (chunk) => {
      data += chunk.toString();
      if (!data.includes('\n')) return;
      const answer = data.split('\n')[0].trim();
      done(answer === 'ok' ? null : new Error(`proxy ${p}: '${command}' answered '${answer}'`));
    });
    sock.on('error', (e) => done(new Error(`proxy ${p}: ${e.message}`)));
    sock.on('close', () => done(new Error(`proxy ${p}: closed before answering '${command}'`)));
  });
}

// ---------------------------------------------------------------------------------------------
// Waiting on events from a point in time on (the dialect suites' `mark` / `waitAfter` style)

/** How long the `…After` helpers wait by default. */
export const AFTER_TIMEOUT_MS = 8000;

/** The number of events a socket has received so far: a point to wait from. */
export const mark = (socket) => eventsOf(socket).length;

/** The `event`s matching `predicate` the socket received after `from` (a `mark`). */
export function eventsAfter(socket, from, event, predicate = () => true) {
  const match = safe(predicate);
  return eventsOf(socket)
    .slice(from)
    .filter((e) => e.event === event && match(e.data))
    .map((e) => e.data);
}

/** Like `waitFor`, but only for events received after `from` (a `mark`). */
export function waitAfter(socket, from, event, predicate = () => true, timeoutMs = AFTER_TIMEOUT_MS) {
  const match = safe(predicate);
  const seen = eventsAfter(socket, from, event, match);
  if (seen.length) return Promise.resolve(seen[0]);
  return new Promise((resolve, reject) => {
    const handler = (name, ...args) => {
      if (name === event && match(args[0])) {
        cleanup();
        resolve(args[0]);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      const got = eventsAfter(socket, from, event).map((d) => JSON.stringify(d)?.slice(0, 200));
      const errors = eventsOf(socket)
        .slice(from)
        .filter((e) => isErrorEvent(e.event))
        .map((e) => `${e.event} ${JSON.stringify(e.data)?.slice(0, 200)}`);
      reject(
        new Error(
          `timed out after ${timeoutMs} ms waiting for a matching '${event}' on ${socket.__name}; ` +
            `'${event}' events seen since: ${got.length ? got.join(' | ') : 'none'}` +
            (errors.length ? `; errors: ${errors.join(' | ')}` : ''),
        ),
      );
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      socket.offAny(handler);
    };
    socket.onAny(handler);
  });
}

/** Waits `ms`, then asserts that no matching `event` arrived after `from` (a `mark`). */
export async function expectNoAfter(socket, from, event, ms = QUIET_MS, predicate = () => true) {
  await sleep(ms);
  const got = eventsAfter(socket, from, event, predicate);
  assert.equal(
    got.length,
    0,
    `${socket.__name} received unexpected '${event}': ${got.map((d) => JSON.stringify(d)?.slice(0, 200)).join(' | ')}`,
  );
}

/** Waits until the socket has received `n` matching `event`s in all; answers them. */
export async function waitCount(socket, event, n, predicate = () => true, timeoutMs = AFTER_TIMEOUT_MS) {
  const match = safe(predicate);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = eventsOf(socket).filter((e) => e.event === event && match(e.data));
    if (got.length >= n) return got.map((e) => e.data);
    if (Date.now() > deadline) {
      assert.fail(`${socket.__name}: ${got.length} matching '${event}' within ${timeoutMs} ms, expected ${n}`);
    }
    await sleep(50);
  }
}

/** The error events of every contract: `error`, `error:*` (guild), `room:error` (tasks). */
export const isErrorEvent = (name) => name === 'error' || name === 'room:error' || name.startsWith('error:');

/**
 * Waits for `event` matching `predicate` after `from`, failing at once (with the payload) when
 * an error event arrives first: a refusal shows up as itself instead of as a timeout.
 */
export function waitUnlessError(socket, from, event, predicate = () => true, timeoutMs = AFTER_TIMEOUT_MS) {
  const early = eventsOf(socket)
    .slice(from)
    .find((e) => isErrorEvent(e.event));
  if (early) {
    return Promise.reject(new Error(`${socket.__name} got ${early.event} ${JSON.stringify(early.data)} instead of '${event}'`));
  }
  return new Promise((resolve, reject) => {
    const onError = (name, ...args) => {
      if (isErrorEvent(name)) {
        socket.offAny(onError);
        reject(new Error(`${socket.__name} got ${name} ${JSON.stringify(args[0])} instead of '${event}'`));
      }
    };
    socket.onAny(onError);
    waitAfter(socket, from, event, predicate, timeoutMs).then(
      (data) => {
        socket.offAny(onError);
        resolve(data);
      },
      (err) => {
        socket.offAny(onError);
        reject(err);
      },
    );
  });
}

/** Polls `check` until it answers something truthy (and answers that); fails after `timeoutMs`. */
export async function until(what, check, timeoutMs = 10000, stepMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

/** The stored messages of a chat, read from Postgres: `{ id, seq, sender_id, client_id }`. */
export async function chatMessagesInPostgres(chatId) {
  const db = new pg.Client({ connectionString: DATABASE_URL });
  await db.connect();
  try {
    const { rows } = await db.query(
      "SELECT id::text AS id, seq::int AS seq, sender_id, client_id FROM messages WHERE room_kind = 'chat' AND room_id = $1",
      [chatId],
    );
    return rows;
  } finally {
    await db.end();
  }
}

/** A node's /metrics, as samples `{ name, labels, value }`. */
export async function scrape(node) {
  const res = await http('GET', '/metrics', { token: null, node });
  assert.equal(res.status, 200, `${node}/metrics: ${res.status} ${res.text.slice(0, 200)}`);
  const samples = [];
  for (const line of res.text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, '$1');
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the samples named `name` whose labels include `labels` (0 when there is none). */
export function sample(samples, name, labels = {}) {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
