// Helpers of the `app` (001) contract suite: the /ws/app namespace, conversations provisioned
// through the integration API, the MessageDTO / PresenceSnapshot shapes, and the app's
// `{ success: false, code, message, correlationId }` acknowledgement.
//
// Everything generic (admin HTTP, credentials, sockets, waiting) comes from ../helpers.mjs.

import assert from 'node:assert/strict';
import {
  DECIMAL,
  HEX32,
  NODE1,
  PRESENCE_THROTTLE_MS,
  PRESENCE_TTL_MS,
  ack,
  admin,
  assertIso,
  connect,
  eventsOf,
  http,
  newUser,
  rid,
  waitFor,
} from '../helpers.mjs';

const enc = encodeURIComponent;

/** The app dialect's namespace (as the harness mounts it). */
export const APP_NS = '/ws/app';

/** The inbound payload cap of the namespace (SOCKET_MAX_PAYLOAD_BYTES default). */
export const MAX_PAYLOAD_BYTES = 5120;

/** Presence transitions: throttle + TTL + slack (8 s with the harness's 2 s / 2 s). */
export const PRESENCE_DEADLINE_MS = PRESENCE_THROTTLE_MS + PRESENCE_TTL_MS + 4000;

/** How long a delivery may take. */
export const DELIVERY_MS = 8000;

export const appUrl = (node = NODE1) => `${node.replace(/\/+$/, '')}${APP_NS}`;

// ---------------------------------------------------------------------------------------------
// Connections

/**
 * Connects `user` (`{ id, token }`) to the app namespace of `node` with `auth: { token }`.
 * The socket records every event from the start (notifications:ready included).
 */
export function connectApp(user, node = NODE1, opts = {}) {
  return connect(appUrl(node), user.token, { name: `${user.id}@${node}${APP_NS}`, ...opts });
}

/** A fresh user (upserted) with a JWT from POST /v1/tokens: `{ id, token }`. */
export const appUser = (prefix = 'au') => newUser(prefix);

/** `err.message` is `code`; when the server also sent `data`, it is `{ code, message }`. */
export function assertConnectError(err, code) {
  assert.ok(err instanceof Error, `a connect_error, got ${err}`);
  assert.equal(err.message, code, `connect_error message: ${err.message}`);
  if (err.data !== undefined && err.data !== null) {
    assert.deepEqual(Object.keys(err.data).sort(), ['code', 'message'], `connect_error data: ${JSON.stringify(err.data)}`);
    assert.equal(err.data.code, code);
    assert.equal(typeof err.data.message, 'string');
  }
}

/** Waits for `notifications:ready` and checks it is exactly `{ message, userId }`. */
export async function waitReady(socket, userId, timeoutMs = DELIVERY_MS) {
  const ready = await waitFor(socket, 'notifications:ready', () => true, timeoutMs);
  assert.deepEqual(Object.keys(ready).sort(), ['message', 'userId'], JSON.stringify(ready));
  assert.equal(typeof ready.message, 'string');
  assert.ok(ready.message.length > 0, 'message is not empty');
  assert.equal(ready.userId, userId, 'userId is the authenticated user');
  return ready;
}

/**
 * Resolves with `{ reason, before }` when the socket disconnects; `before` lists the names of the
 * events it received until then. Call it before triggering the disconnect.
 */
export function watchDisconnect(socket, timeoutMs = 10000) {
  const p = new Promise((resolve, reject) => {
    if (!socket.connected) {
      reject(new Error(`${socket.__name} is not connected`));
      return;
    }
    const timer = setTimeout(
      () => reject(new Error(`${socket.__name} was not disconnected within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.once('disconnect', (reason) => {
      clearTimeout(timer);
      resolve({ reason, before: eventsOf(socket).map((e) => e.event) });
    });
  });
  p.catch(() => {}); // reported where it is awaited
  return p;
}

/** Emits with an acknowledgement callback; answers the list the callback's calls land in. */
export function emitTracked(socket, event, ...args) {
  const calls = [];
  socket.emit(event, ...args, (...res) => calls.push(res));
  return calls;
}

/** Bytes of the event's arguments as JSON (what the cap counts). */
export const jsonBytes = (args) => Buffer.byteLength(JSON.stringify(args), 'utf8');

/** Waits until the socket has received `n` `event`s matching `predicate`. */
export async function waitForCount(socket, event, predicate, n, timeoutMs = DELIVERY_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = eventsOf(socket).filter((e) => {
      if (e.event !== event) return false;
      try {
        return Boolean(predicate(e.data));
      } catch {
        return false;
      }
    }).length;
    if (got >= n) return got;
    if (Date.now() > deadline) {
      assert.fail(`${socket.__name}: ${got} matching '${event}' after ${timeoutMs} ms, expected ${n}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `error { code, message }` exactly, with `code`. */
export async function waitSocketError(socket, code, timeoutMs = DELIVERY_MS) {
  const err = await waitFor(socket, 'error', (e) => e.code === code, timeoutMs);
  assert.deepEqual(Object.keys(err).sort(), ['code', 'message'], JSON.stringify(err));
  assert.equal(typeof err.message, 'string');
  assert.ok(err.message.length > 0, 'message is not empty');
  return err;
}

// ---------------------------------------------------------------------------------------------
// Conversations (rooms of kind `conversation`)

export async function putConversation(conversationId = rid('conv')) {
  await admin('PUT', `/v1/rooms/conversation/${enc(conversationId)}`, {});
  return conversationId;
}

export async function addParticipant(conversationId, userId, role = 'member') {
  await admin('PUT', `/v1/rooms/conversation/${enc(conversationId)}/members/${enc(userId)}`, { role });
}

export async function removeParticipant(conversationId, userId) {
  await admin('DELETE', `/v1/rooms/conversation/${enc(conversationId)}/members/${enc(userId)}`);
}

/**
 * A conversation with `members` fresh users (`roles[i]` or `member`); answers
 * `{ conversationId, users: [{ id, token }] }`.
 */
export async function newConversation({ members = 2, roles = [] } = {}) {
  const conversationId = await putConversation();
  const users = [];
  for (let i = 0; i < members; i++) {
    const u = await appUser();
    await addParticipant(conversationId, u.id, roles[i] ?? 'member');
    users.push(u);
  }
  return { conversationId, users };
}

/** conversations:join that must succeed: the ack is exactly `{ success: true, conversationId }`. */
export async function joinConversation(socket, conversationId) {
  const res = await ack(socket, 'conversations:join', { conversationId });
  assert.deepEqual(res, { success: true, conversationId }, `conversations:join by ${socket.__name}`);
  return res;
}

export async function leaveConversation(socket, conversationId) {
  const res = await ack(socket, 'conversations:leave', { conversationId });
  assert.deepEqual(res, { success: true, conversationId }, `conversations:leave by ${socket.__name}`);
  return res;
}

/** `{ success: false, code, message, correlationId }`, exactly. */
export function assertAppError(res, code) {
  assert.ok(res && typeof res === 'object', `an error ack object, got ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ['code', 'correlationId', 'message', 'success'], JSON.stringify(res));
  assert.equal(res.success, false);
  assert.equal(res.code, code, `code ${code} in ${JSON.stringify(res)}`);
  assert.equal(typeof res.message, 'string');
  assert.ok(res.message.length > 0, 'message is not empty');
  assert.match(res.correlationId, HEX32, 'correlationId is a trace id (32 lowercase hex)');
}

/** `POST /v1/rooms/{kind}/{id}/events`: a server-side publish to the room only. */
export async function publishToConversation(conversationId, event, data, node = NODE1) {
  await admin('POST', `/v1/rooms/conversation/${enc(conversationId)}/events`, { event, data }, { node });
}

/** `POST /v1/users/{id}/events`. */
export async function publishToUser(userId, event, data, { namespace, node = NODE1 } = {}) {
  const body = { event, data };
  if (namespace !== undefined) body.namespace = namespace;
  await admin('POST', `/v1/users/${enc(userId)}/events`, body, { node });
}

// ---------------------------------------------------------------------------------------------
// Messages (through the integration API)

/** Creates a message; answers `{ id: <decimal string>, core: <core JSON>, content }`. */
export async function postMessage(conversationId, senderId, content = `hello ${rid('m')}`, node = NODE1) {
  const res = await http('POST', `/v1/rooms/conversation/${enc(conversationId)}/messages`, {
    body: { senderId, content },
    node,
  });
  assert.equal(res.status, 201, `POST …/messages → ${res.status} ${res.text.slice(0, 300)}`);
  assert.ok(Number.isInteger(res.json?.id), `the core message id is an integer: ${res.text.slice(0, 300)}`);
  return { id: String(res.json.id), core: res.json, content };
}

export function editMessage(conversationId, messageId, content, actorId, node = NODE1) {
  return http('PATCH', `/v1/rooms/conversation/${enc(conversationId)}/messages/${enc(messageId)}`, {
    body: { content, actorId },
    node,
  });
}

export function deleteMessage(conversationId, messageId, actorId, node = NODE1) {
  return http(
    'DELETE',
    `/v1/rooms/conversation/${enc(conversationId)}/messages/${enc(messageId)}?actorId=${enc(actorId)}`,
    { node },
  );
}

export const MESSAGE_DTO_KEYS = [
  'body', 'conversationId', 'createdAt', 'deletedAt', 'editedAt', 'id', 'senderId', 'status', 'updatedAt',
];
export const MESSAGES_EVENT_KEYS = ['conversationId', 'message', 'recipients', 'senderId'];

/** The MessageDTO, exactly its nine fields; `expected` fields compared with deepEqual. */
export function assertMessageDTO(m, expected = {}) {
  assert.ok(m && typeof m === 'object', `a MessageDTO, got ${JSON.stringify(m)}`);
  assert.deepEqual(Object.keys(m).sort(), MESSAGE_DTO_KEYS, JSON.stringify(m));
  assert.equal(typeof m.id, 'string', 'id is a string');
  assert.match(m.id, DECIMAL, 'id is the message id as a decimal string');
  assert.equal(typeof m.conversationId, 'string');
  assert.equal(typeof m.senderId, 'string');
  assert.equal(typeof m.body, 'string');
  assert.ok(['sent', 'deleted'].includes(m.status), `status: ${m.status}`);
  assertIso(m.createdAt, 'createdAt');
  assertIso(m.updatedAt, 'updatedAt');
  if (m.editedAt !== null) assertIso(m.editedAt, 'editedAt');
  if (m.deletedAt !== null) assertIso(m.deletedAt, 'deletedAt');
  for (const [k, v] of Object.entries(expected)) {
    assert.deepEqual(m[k], v, `message.${k} in ${JSON.stringify(m).slice(0, 400)}`);
  }
}

/**
 * A `messages:new|updated|deleted` payload: exactly `{ conversationId, message, senderId,
 * recipients }`, recipients the participant ids (any order), the DTO checked with `message`.
 */
export function assertMessagesEvent(p, { conversationId, senderId, recipients, message = {} }) {
  assert.ok(p && typeof p === 'object', `a payload object, got ${JSON.stringify(p)}`);
  assert.deepEqual(Object.keys(p).sort(), MESSAGES_EVENT_KEYS, JSON.stringify(p).slice(0, 400));
  assert.equal(p.conversationId, conversationId);
  assert.equal(p.senderId, senderId);
  assert.ok(Array.isArray(p.recipients), 'recipients is an array');
  for (const r of p.recipients) assert.equal(typeof r, 'string', `recipient ids are strings: ${JSON.stringify(p.recipients)}`);
  if (recipients !== undefined) {
    assert.deepEqual([...p.recipients].sort(), [...recipients].sort(), 'recipients are the participants');
  }
  assertMessageDTO(p.message, { conversationId, senderId, ...message });
}

/** Predicate: a messages:* payload about message `id`. */
export const aboutMessage = (id) => (p) => p.message.id === id;

// ---------------------------------------------------------------------------------------------
// Presence

export const SNAPSHOT_KEYS = ['isOnline', 'lastSeen', 'sockets', 'userId'];
export const SNAPSHOT_SOCKET_KEYS = ['connectedAt', 'ip', 'lastSeen', 'socketId', 'userAgent'];

/** Predicate: a presence:update about `userId` with `isOnline`. */
export const presenceOf = (userId, isOnline) => (s) => s.userId === userId && s.isOnline === isOnline;

function assertEpochMsOrNull(v, what) {
  if (v === null) return;
  assert.equal(typeof v, 'number', `${what} is a number or null: ${JSON.stringify(v)}`);
  assert.ok(Number.isFinite(v), `${what} is finite`);
  assert.ok(v > 1e12, `${what} is Unix epoch milliseconds, not seconds: ${v}`);
}

/** A PresenceSnapshot, exactly. */
export function assertSnapshot(s) {
  assert.ok(s && typeof s === 'object', `a snapshot, got ${JSON.stringify(s)}`);
  assert.deepEqual(Object.keys(s).sort(), SNAPSHOT_KEYS, JSON.stringify(s));
  assert.equal(typeof s.userId, 'string');
  assert.equal(typeof s.isOnline, 'boolean');
  assertEpochMsOrNull(s.lastSeen, 'lastSeen');
  assert.ok(Array.isArray(s.sockets), 'sockets is an array');
  if (s.isOnline) assert.ok(s.sockets.length >= 1, `an online user has sockets: ${JSON.stringify(s)}`);
  else assert.deepEqual(s.sockets, [], 'an offline user has no sockets');
  for (const entry of s.sockets) {
    assert.deepEqual(Object.keys(entry).sort(), SNAPSHOT_SOCKET_KEYS, JSON.stringify(entry));
    assert.equal(typeof entry.socketId, 'string');
    assert.ok(entry.socketId.length > 0, 'socketId is not empty');
    assertEpochMsOrNull(entry.connectedAt, 'connectedAt');
    assertEpochMsOrNull(entry.lastSeen, 'lastSeen');
    assert.ok(entry.userAgent === null || typeof entry.userAgent === 'string', `userAgent: ${entry.userAgent}`);
    assert.equal(entry.ip, null, 'ip is null (not enabled by the operator)');
  }
}
