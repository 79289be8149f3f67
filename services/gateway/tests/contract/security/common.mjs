// Shared pieces of the security suite (issue #16): the limits the harness configured (passed in
// as SB_* variables by `security_suite` in tests/contract.rs), the control client that every
// file keeps talking through its whole run, raw TCP / raw Engine.IO clients, a client-side
// pacer that keeps a socket inside its event budget, and Postgres and health probes.
//
// Everything generic (admin API, provisioning, tracked sockets, waiting) is ../helpers.mjs.

import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import net from 'node:net';
import pg from 'pg';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { DATABASE_URL, NODE1, NODE2, closeAll, eventsOf, newChat, sleep, uuid } from '../helpers.mjs';

const num = (name, fallback) => {
  const v = process.env[name];
  return v === undefined || v.trim() === '' ? fallback : Number(v);
};
const str = (name, fallback = '') => {
  const v = process.env[name];
  return v === undefined || v.trim() === '' ? fallback : v.trim();
};

/** The limits of the security cluster (tests/contract.rs `security_suite`). */
export const LIMITS = {
  connectionsPerAddress: num('SB_MAX_CONNECTIONS_PER_ADDRESS', 40),
  socketsPerUser: num('SB_MAX_SOCKETS_PER_USER', 5),
  eventsPerSecond: num('SB_SOCKET_EVENTS_PER_SECOND', 10),
  eventBurst: num('SB_SOCKET_EVENT_BURST', 20),
  eventOverrun: num('SB_SOCKET_EVENT_OVERRUN', 30),
  headTimeoutMs: num('SB_REQUEST_HEAD_TIMEOUT_MS', 2000),
  maxHeadBytes: num('SB_MAX_REQUEST_HEAD_BYTES', 16384),
  maxRoomsPerSocket: num('SB_MAX_ROOMS_PER_SOCKET', 8),
};

/** Where the harness keeps this cluster's logs (`<dir>/gw-a.log`, `<dir>/gw-b.log`). */
export const TEMP_DIR = str('SB_TEMP_DIR');
export const GATEWAY_BIN = str('SB_GATEWAY_BIN');
export const SERVICES = {
  membership: str('SB_MEMBERSHIP_URL'),
  messages: str('SB_MESSAGES_URL'),
  presence: str('SB_PRESENCE_URL'),
  redis: str('SB_REDIS_URL'),
};

/** `host` and `port` of a gateway node's base URL. */
export function hostPort(node) {
  const u = new URL(node);
  return { host: u.hostname, port: Number(u.port) };
}

// ---------------------------------------------------------------------------------------------
// Health

/** `GET /healthz` status of a node (0 when nothing answered). */
export async function healthz(node) {
  try {
    const res = await fetch(new URL('/healthz', node), { signal: AbortSignal.timeout(5000) });
    await res.text();
    return res.status;
  } catch {
    return 0;
  }
}

export async function assertNodesUp(what = '') {
  for (const node of [NODE1, NODE2]) {
    assert.equal(await healthz(node), 200, `${node}/healthz answers 200 ${what}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Pacing: a client-side token bucket slower than the server's, so a socket stays in budget.

/**
 * Answers `tick()`, which resolves when one more event may be sent at `rate` per second (default
 * 80 % of the cluster's rate) with at most `burst` at once (default half the server's burst);
 * `initial` tokens at the start (default `burst`; 0 right after the server's bucket was drained).
 */
export function pacer(
  rate = LIMITS.eventsPerSecond * 0.8,
  burst = Math.max(1, Math.floor(LIMITS.eventBurst / 2)),
  initial = burst,
) {
  let tokens = initial;
  let last = Date.now();
  return async function tick() {
    for (;;) {
      const now = Date.now();
      tokens = Math.min(burst, tokens + ((now - last) / 1000) * rate);
      last = now;
      if (tokens >= 1) {
        tokens -= 1;
        return;
      }
      await sleep(Math.ceil(((1 - tokens) / rate) * 1000) + 5);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// The control client: two members of one chat, one on each node, talking all along.

function rawConnect(url, token) {
  const s = io(url, { auth: { token }, transports: ['websocket'], forceNew: true, reconnection: false, timeout: 10000 });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`control: no connect to ${url} within 10 s`)), 10000);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('connect_error', (err) => {
      clearTimeout(timer);
      s.close();
      reject(new Error(`control: connect_error ${err.message} from ${url}`));
    });
  });
}

/**
 * Starts the control client: A on node 1 and B on node 2, members of one chat, each sending a
 * message every `everyMs` (alternating), far inside every limit. Call `await control.check()`
 * at the end of the file: every send was acknowledged, both received every message, neither was
 * ever disconnected, and a last round trip each way works.
 */
export async function startControl({ everyMs = 1000 } = {}) {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await rawConnect(NODE1, A.token);
  const b = await rawConnect(NODE2, B.token);
  const state = {
    acks: [],
    sent: [],
    failures: [],
    disconnects: [],
    received: { a: new Set(), b: new Set() },
  };
  for (const [key, s] of [['a', a], ['b', b]]) {
    s.on('message:new', (m) => m?.chatId === chat.chatId && state.received[key].add(m.clientId));
    s.on('disconnect', (reason) => state.disconnects.push(`${key}: ${reason}`));
    const res = await s.timeout(10000).emitWithAck('room:join', { chatId: chat.chatId });
    assert.deepEqual(res, { ok: true }, `control ${key} joins its chat`);
  }
  let turn = 0;
  const sendOne = (s, who) => {
    const clientId = `control-${who}-${uuid()}`;
    const p = s
      .timeout(10000)
      .emitWithAck('message:send', { chatId: chat.chatId, body: `control ${who}`, clientId })
      .then(
        (res) => {
          if (res?.ok === true && res.data?.clientId === clientId) state.sent.push(clientId);
          else state.failures.push(`${who} ${clientId}: ${JSON.stringify(res)}`);
        },
        (err) => state.failures.push(`${who} ${clientId}: no ack (${err.message})`),
      );
    state.acks.push(p);
    return clientId;
  };
  const timer = setInterval(() => {
    turn += 1;
    if (turn % 2) sendOne(a, 'a');
    else sendOne(b, 'b');
  }, everyMs);

  return {
    chat,
    sockets: { a, b },
    state,
    /** The control's own health mid-file: a round trip each way, now. */
    async roundTrip(what = '') {
      for (const [from, to, who] of [
        [a, b, 'a'],
        [b, a, 'b'],
      ]) {
        const clientId = sendOne(from, who);
        const key = to === a ? 'a' : 'b';
        const deadline = Date.now() + 8000;
        while (!state.received[key].has(clientId)) {
          assert.ok(Date.now() < deadline, `control: ${who}'s message reached the other node ${what}`);
          await sleep(25);
        }
      }
    },
    async check() {
      clearInterval(timer);
      await this.roundTrip('at the end');
      await Promise.all(state.acks);
      assert.deepEqual(state.failures, [], 'every control send was acknowledged ok');
      assert.deepEqual(state.disconnects, [], 'the control sockets were never disconnected');
      assert.ok(state.sent.length >= 2, `the control sent messages all along (${state.sent.length})`);
      const deadline = Date.now() + 8000;
      for (;;) {
        const missing = state.sent.filter((id) => !state.received.a.has(id) || !state.received.b.has(id));
        if (missing.length === 0) break;
        assert.ok(Date.now() < deadline, `the control received every message on both nodes; missing ${missing.join(', ')}`);
        await sleep(50);
      }
      a.close();
      b.close();
    },
    close() {
      clearInterval(timer);
      a.close();
      b.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Raw TCP

/**
 * Opens a TCP connection to `node` (optionally from `localAddress`), writes `data` (a string,
 * Buffer or list of them), and collects what comes back until the peer closes or `timeoutMs`
 * passes. Answers `{ text, bytes, closedByPeer, status, error }`; `status` is the HTTP status of
 * the first response line, if any.
 */
export function rawHttp(node, data, { localAddress, timeoutMs = 5000, keepOpen = false } = {}) {
  const { host, port } = hostPort(node);
  return new Promise((resolve) => {
    const chunks = [];
    let closedByPeer = false;
    let error = null;
    const sock = net.connect({ host, port, localAddress });
    const finish = () => {
      clearTimeout(timer);
      const buf = Buffer.concat(chunks);
      const text = buf.toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!keepOpen || closedByPeer) sock.destroy();
      resolve({ text, bytes: buf.length, closedByPeer, status: m ? Number(m[1]) : null, error, socket: sock });
    };
    const timer = setTimeout(finish, timeoutMs);
    sock.on('connect', () => {
      for (const d of [].concat(data)) sock.write(d);
    });
    sock.on('data', (c) => {
      chunks.push(c);
      // One complete response is enough when the caller keeps the connection.
      if (keepOpen && /\r\n\r\n/.test(Buffer.concat(chunks).toString('latin1'))) finish();
    });
    sock.on('error', (e) => {
      error = e.code ?? e.message;
    });
    sock.on('close', () => {
      closedByPeer = true;
      finish();
    });
  });
}

/** A complete `GET path` request head. */
export const getRequest = (node, path = '/healthz', extra = '', connection = 'close') =>
  `GET ${path} HTTP/1.1\r\nHost: ${new URL(node).host}\r\n${extra}Connection: ${connection}\r\n\r\n`;

/** Is a loopback address other than 127.0.0.1 usable as a source address here? */
export function canBindLoopback(address = '127.0.0.2') {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(0, address, () => srv.close(() => resolve(true)));
  });
}

// ---------------------------------------------------------------------------------------------
// Raw Engine.IO over WebSocket

/** `ws://…/socket.io/?EIO=4&transport=websocket` of a node. */
export const engineUrl = (node) => `${node.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;

/**
 * A raw Engine.IO WebSocket that answers pings; `opened` resolves once the OPEN packet came,
 * `closed` with the close code; `messages` lists every text frame received.
 */
export function rawEngine(node, opts = {}) {
  const ws = new WebSocket(engineUrl(node), { maxPayload: 16 * 1024 * 1024, ...opts });
  const messages = [];
  ws.on('message', (data) => {
    const text = String(data);
    if (text === '2') ws.send('3');
    messages.push(text);
  });
  ws.on('error', () => {});
  const opened = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no Engine.IO OPEN packet within 5 s')), 5000);
    ws.once('message', (data) => {
      clearTimeout(timer);
      if (String(data).startsWith('0{')) resolve(ws);
      else reject(new Error(`an OPEN packet first, got ${String(data).slice(0, 80)}`));
    });
    ws.once('close', () => {
      clearTimeout(timer);
      reject(new Error('closed before the OPEN packet'));
    });
  });
  opened.catch(() => {});
  const closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
  return { ws, opened, closed, messages };
}

/** Resolves true when `ws` closes within `ms`, false otherwise. */
export function closesWithin(closed, ms) {
  return Promise.race([closed.then(() => true), sleep(ms).then(() => false)]);
}

// ---------------------------------------------------------------------------------------------
// Postgres

/** One query against the cluster's database; answers the rows. */
export async function dbQuery(sql, params = []) {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    return (await client.query(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** Messages stored in a room (by kind and id). */
export async function storedMessages(kind, id) {
  return dbQuery('SELECT id, sender_id, content, deleted_at, edited_at FROM messages WHERE room_kind = $1 AND room_id = $2 ORDER BY id', [
    kind,
    String(id),
  ]);
}

/** Polls `check` (sync or async) until truthy; fails with `what` after `timeoutMs`. */
export async function eventually(check, what, timeoutMs = 10000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms: ${what} (last: ${last?.message ?? JSON.stringify(last)})`);
    await sleep(everyMs);
  }
}

/**
 * Resolves with the first event named in `names` that the socket received after `from` (a
 * `mark`), as `{ event, data }`; fails after `timeoutMs`.
 */
export async function firstOf(socket, from, names, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = eventsOf(socket)
      .slice(from)
      .find((e) => names.includes(e.event));
    if (hit) return hit;
    assert.ok(
      Date.now() < deadline,
      `${socket.__name}: none of ${names.join(', ')} within ${timeoutMs} ms (got ${JSON.stringify(eventsOf(socket).slice(from).map((e) => e.event))})`,
    );
    await sleep(25);
  }
}

/**
 * The hooks of a security test file: a control client for the whole file (checked at its end:
 * it sent and received everything, undisturbed), and every socket a test opened closed after it.
 * Answers the control client (once the file's `before` hooks have run).
 */
export function useControlClient() {
  let control;
  before(async () => {
    control = await startControl();
  });
  afterEach(closeAll);
  after(async () => {
    closeAll();
    await control.check();
  });
  return () => control;
}
