// Helpers of the `tasks` (004) contract suite: numeric ids, provisioning of users, projects,
// studies and memberships through the integration API, JWT handshakes on the /tasks namespace
// (auth:success / auth:failed), room and message operations, payload shapes, and waiting on
// events that arrive after a point in time.
//
// Shared machinery (admin client, socket tracking, waitFor, expectNo, closeAll…) comes from
// ../helpers.mjs.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { NODE1, QUIET_MS, admin, assertIso, eventsOf, http, makeSocket, mintToken, sleep } from '../helpers.mjs';

/** The namespace the harness mounts `tasks` on. */
export const TASKS_NS = '/tasks';

/** `http://host:port/tasks` for a gateway node. */
export const tasksUrl = (node) => `${node.replace(/\/+$/, '')}${TASKS_NS}`;

/** How long a delivery across the nodes may take in these tests. */
export const DELIVERY_MS = 5000;

export const TRANSPORTS = [['websocket'], ['polling']];

export const HEX32 = /^[0-9a-f]{32}$/;

/** A fresh numeric id (users, projects and studies share one space; collisions are negligible). */
export const newId = () => crypto.randomInt(1_000_000, 2_000_000_000);

/** A unique marker for message contents. */
export const nonce = () => crypto.randomBytes(6).toString('hex');

// ---------------------------------------------------------------------------------------------
// Provisioning

/**
 * A user with a numeric id, names, a global role (`null`: none given) and a JWT:
 * `{ id, username, firstName, lastName, role, token }`.
 */
export async function tasksUser({ role = 'researcher', firstName, lastName, username } = {}) {
  const id = newId();
  const n = nonce();
  const user = {
    id,
    username: username ?? `user_${n}`,
    firstName: firstName ?? `Ada${n.slice(0, 4)}`,
    lastName: lastName ?? `Lovelace${n.slice(4)}`,
    role,
  };
  const body = { username: user.username, firstName: user.firstName, lastName: user.lastName };
  if (role !== null) body.role = role;
  await admin('PUT', `/v1/users/${id}`, body);
  user.token = await mintToken(String(id));
  return user;
}

export async function putProject(projectId = newId(), title = `project ${projectId}`) {
  await admin('PUT', `/v1/rooms/project/${projectId}`, { title });
  return projectId;
}

export async function putStudy(studyId, projectId) {
  await admin('PUT', `/v1/rooms/study/${studyId}`, { parent: { kind: 'project', id: String(projectId) } });
  return studyId;
}

/** Grants `user` (or a user id) `role` on `project`/`study` `roomId`. */
export async function grant(kind, roomId, user, role = 'researcher') {
  const userId = typeof user === 'object' ? user.id : user;
  await admin('PUT', `/v1/rooms/${kind}/${roomId}/members/${userId}`, { role });
}

/**
 * A project with one study and the given project members (`roles`: one room role per user):
 * `{ projectId, studyId, users }`.
 */
export async function newProject({ roles = ['researcher', 'researcher'] } = {}) {
  const projectId = await putProject(newId());
  const studyId = await putStudy(newId(), projectId);
  const users = [];
  for (const role of roles) {
    const u = await tasksUser();
    await grant('project', projectId, u, role);
    users.push(u);
  }
  return { projectId, studyId, users };
}

/** A message posted through the integration API on behalf of `senderId`; answers its core JSON. */
export function postMessage(kind, roomId, senderId, content, node = NODE1) {
  return admin('POST', `/v1/rooms/${kind}/${roomId}/messages`, { senderId: String(senderId), content }, { node });
}

/** One page of a room's history (core JSON), through the admin token. */
export async function roomHistory(kind, roomId, query = {}, node = NODE1) {
  const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)])).toString();
  const res = await http('GET', `/v1/rooms/${kind}/${roomId}/messages${qs ? `?${qs}` : ''}`, { node });
  assert.equal(res.status, 200, `GET history: ${res.status} ${res.text.slice(0, 300)}`);
  assert.ok(Array.isArray(res.json?.messages), `history is { messages: [...] }: ${res.text.slice(0, 300)}`);
  return res.json;
}

// ---------------------------------------------------------------------------------------------
// Handshakes

/**
 * Opens a /tasks socket with `token` in `auth.token` (`undefined`: no auth object) and records
 * what the reserved events say: `s.__connects`, `s.__connectErrors`, `s.__disconnects` (reasons).
 * Listeners are registered right after io(), so nothing the server sends first is missed.
 */
export function openTasks(node, token, { transports = ['websocket'], name } = {}) {
  const opts = { transports };
  if (token !== undefined) opts.auth = { token };
  const s = makeSocket(tasksUrl(node), opts, name ?? `${tasksUrl(node)}(${transports.join('+')})`);
  s.__connects = 0;
  s.__connectErrors = [];
  s.__disconnects = [];
  s.on('connect', () => {
    s.__connects += 1;
  });
  s.on('connect_error', (err) => s.__connectErrors.push(err));
  s.on('disconnect', (reason) => s.__disconnects.push(reason));
  return s;
}

/** Resolves when `check()` answers something truthy (polled), rejects after `timeoutMs`. */
export async function until(check, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * Connects `user` to /tasks on `node` and waits for `auth:success`, which must be exactly
 * `{ userId: <number>, userRole }`; fails at once on auth:failed, connect_error or disconnect.
 */
export async function connectTasks(user, node = NODE1, { transports = ['websocket'], name } = {}) {
  const s = openTasks(node, user.token, { transports, name: name ?? `${user.id}@${node}${TASKS_NS}(${transports.join('+')})` });
  const ok = await until(() => {
    const failed = eventsOf(s).find((e) => e.event === 'auth:failed');
    if (failed) assert.fail(`${s.__name}: auth:failed ${JSON.stringify(failed.data)}`);
    if (s.__connectErrors.length) assert.fail(`${s.__name}: connect_error ${s.__connectErrors[0].message}`);
    if (s.__disconnects.length) assert.fail(`${s.__name}: disconnected (${s.__disconnects[0]}) before auth:success`);
    return eventsOf(s).find((e) => e.event === 'auth:success');
  }, `auth:success on ${s.__name}`);
  assert.ok(s.connected, 'connected');
  assert.deepEqual(
    ok.data,
    { userId: user.id, userRole: user.role },
    `auth:success is { userId: <number>, userRole }: ${JSON.stringify(ok.data)}`,
  );
  return s;
}

// ---------------------------------------------------------------------------------------------
// Waiting on events from a point in time on: the shared helpers, re-exported

import { mark, eventsAfter, waitAfter, expectNoAfter, waitUnlessError } from '../helpers.mjs';

export { mark, eventsAfter, waitAfter, expectNoAfter, waitUnlessError };

/** Emits `event` with `args` and waits for the `error` event that must answer it (with `code`). */
export async function expectError(socket, code, event, ...args) {
  const from = mark(socket);
  socket.emit(event, ...args);
  const err = await waitAfter(socket, from, 'error');
  assertTaskError(err, code);
  return err;
}

/** Emits `event` with `args` and waits for the `room:error` that must answer it. */
export async function expectRoomError(socket, event, ...args) {
  const from = mark(socket);
  socket.emit(event, ...args);
  const err = await waitAfter(socket, from, 'room:error');
  assertRoomError(err);
  return err;
}

/** `emitWithAck` with a timeout and exactly `args`. */
export function emitAck(socket, event, ...args) {
  return socket.timeout(10000).emitWithAck(event, ...args);
}

// ---------------------------------------------------------------------------------------------
// Shapes

/** A JSON number that is a positive safe integer. */
export function assertIntId(value, what) {
  assert.equal(typeof value, 'number', `${what} is a JSON number: ${JSON.stringify(value)}`);
  assert.ok(Number.isSafeInteger(value) && value > 0, `${what} is a positive integer: ${value}`);
}

/** An `error` payload: exactly `{ message, code, correlationId }` (a 32-hex trace id). */
export function assertTaskError(payload, code) {
  const text = JSON.stringify(payload);
  assert.ok(payload && typeof payload === 'object', `an error payload object, got ${text}`);
  assert.equal(payload.code, code, `code ${code} in ${text}`);
  assert.equal(typeof payload.message, 'string', `message is a string in ${text}`);
  assert.ok(payload.message.length > 0, 'message is not empty');
  assert.match(payload.correlationId ?? '', HEX32, `correlationId is a trace id in ${text}`);
  assert.deepEqual(Object.keys(payload).sort(), ['code', 'correlationId', 'message'], `exactly { message, code, correlationId }: ${text}`);
}

/** A `room:error`: `{ message, roomType, roomId }` with a non-empty message. */
export function assertRoomError(payload, { roomType, roomId } = {}) {
  const text = JSON.stringify(payload);
  assert.ok(payload && typeof payload === 'object', `a room:error object, got ${text}`);
  assert.equal(typeof payload.message, 'string', `message is a string in ${text}`);
  assert.ok(payload.message.length > 0, 'message is not empty');
  assert.ok('roomType' in payload && 'roomId' in payload, `room:error carries roomType and roomId: ${text}`);
  if (roomType !== undefined) assert.equal(payload.roomType, roomType, `roomType in ${text}`);
  if (roomId !== undefined) assert.equal(payload.roomId, roomId, `roomId in ${text}`);
}

const BASE_KEYS = [
  'content',
  'createdAt',
  'deletedAt',
  'editedAt',
  'fileId',
  'fileName',
  'fileSize',
  'id',
  'mimeType',
  'replyToId',
  'roomId',
  'roomType',
  'senderId',
  'type',
  'updatedAt',
];

/** The message shape without relations (also the shape of `replyTo`). */
function assertBaseMessage(m, what) {
  const text = JSON.stringify(m)?.slice(0, 400);
  assert.ok(m && typeof m === 'object', `${what}: a message object, got ${text}`);
  assertIntId(m.id, `${what}.id`);
  assert.ok(m.roomType === 'project' || m.roomType === 'study', `${what}.roomType: ${text}`);
  assertIntId(m.roomId, `${what}.roomId`);
  assertIntId(m.senderId, `${what}.senderId`);
  assert.ok(['text', 'image', 'file'].includes(m.type), `${what}.type: ${text}`);
  assert.equal(typeof m.content, 'string', `${what}.content is a string: ${text}`);
  assertIso(m.createdAt, `${what}.createdAt`);
  assertIso(m.updatedAt, `${what}.updatedAt`);
  if (m.editedAt !== null) assertIso(m.editedAt, `${what}.editedAt`);
  if (m.deletedAt !== null) assertIso(m.deletedAt, `${what}.deletedAt`);
  if (m.replyToId !== null) assertIntId(m.replyToId, `${what}.replyToId`);
  if (m.type === 'text') {
    for (const k of ['fileId', 'fileName', 'fileSize', 'mimeType']) {
      assert.equal(m[k], null, `${what}.${k} is null on a text message: ${text}`);
    }
  }
}

/**
 * The full Message of `message:new` / `message:edited`: exactly the document's fields and
 * `sender { id, username, firstName, lastName }`, plus `replyTo` when `replyToId` is set (absent
 * or null otherwise). `expected` holds fields to compare exactly (`sender` a user object).
 */
export function assertTaskMessage(m, expected = {}) {
  assertBaseMessage(m, 'message');
  const text = JSON.stringify(m).slice(0, 400);
  const keys = Object.keys(m).filter((k) => !(k === 'replyTo' && m.replyToId === null && m.replyTo === null));
  const want = [...BASE_KEYS, 'sender', ...(m.replyToId !== null ? ['replyTo'] : [])].sort();
  assert.deepEqual(keys.sort(), want, `message keys: ${text}`);
  assert.ok(m.sender && typeof m.sender === 'object', `sender is an object: ${text}`);
  assert.deepEqual(Object.keys(m.sender).sort(), ['firstName', 'id', 'lastName', 'username'], `sender keys: ${text}`);
  assert.equal(m.sender.id, m.senderId, 'sender.id is senderId');
  if (m.replyToId !== null) {
    assertBaseMessage(m.replyTo, 'replyTo');
    assert.deepEqual(Object.keys(m.replyTo).sort(), BASE_KEYS, `replyTo is a message without relations: ${JSON.stringify(m.replyTo)}`);
    assert.equal(m.replyTo.id, m.replyToId, 'replyTo.id is replyToId');
  }
  for (const [k, v] of Object.entries(expected)) {
    if (k === 'sender') {
      assert.deepEqual(m.sender, senderOf(v), `sender in ${text}`);
      assert.equal(m.senderId, v.id, 'senderId');
    } else {
      assert.deepEqual(m[k], v, `message.${k} in ${text}`);
    }
  }
}

/** The `sender` object a user is rendered as. */
export const senderOf = (u) => ({ id: u.id, username: u.username, firstName: u.firstName, lastName: u.lastName });

// ---------------------------------------------------------------------------------------------
// Tasks operations

/**
 * room:join (id sent as given): `room:joined` exactly `{ roomType, roomId: <number>, memberCount }`,
 * then `message:history` of that room; answers `{ joined, history }`.
 */
export async function joinRoom(socket, type, id, sentAs = id) {
  const from = mark(socket);
  socket.emit('room:join', { type, id: sentAs });
  const isRoom = (x) => x.roomType === type && x.roomId === id;
  const joined = await waitUnlessError(socket, from, 'room:joined', isRoom);
  const text = JSON.stringify(joined);
  assert.deepEqual(Object.keys(joined).sort(), ['memberCount', 'roomId', 'roomType'], `room:joined keys: ${text}`);
  assert.ok(Number.isSafeInteger(joined.memberCount) && joined.memberCount >= 1, `memberCount is a positive number: ${text}`);
  const history = await waitAfter(socket, from, 'message:history', isRoom);
  const events = eventsOf(socket).slice(from);
  const iJoined = events.findIndex((e) => e.event === 'room:joined' && e.data === joined);
  const iHistory = events.findIndex((e) => e.event === 'message:history' && e.data === history);
  assert.ok(iJoined < iHistory, 'message:history comes after room:joined');
  assertHistory(history, type, id);
  return { joined, history };
}

/** `message:history { messages, roomType, roomId, hasMore, nextCursor? }`, oldest first. */
export function assertHistory(h, roomType, roomId) {
  const text = JSON.stringify(h).slice(0, 400);
  assert.ok(Array.isArray(h.messages), `messages is an array: ${text}`);
  assert.equal(h.roomType, roomType);
  assert.equal(h.roomId, roomId, 'roomId is a number');
  assert.equal(typeof h.hasMore, 'boolean', `hasMore is a boolean: ${text}`);
  const allowed = ['hasMore', 'messages', 'nextCursor', 'roomId', 'roomType'];
  for (const k of Object.keys(h)) assert.ok(allowed.includes(k), `unexpected key ${k} in message:history`);
  for (const m of h.messages) {
    assertIntId(m.id, 'history message id');
    assert.equal(m.roomType, roomType);
    assert.equal(m.roomId, roomId);
    assert.equal(typeof m.content, 'string');
    assertIntId(m.senderId, 'history message senderId');
  }
  const ids = h.messages.map((m) => m.id);
  assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'history is oldest first');
}

/** room:leave and `room:left { roomType, roomId }`, exactly. */
export async function leaveRoom(socket, type, id) {
  const from = mark(socket);
  socket.emit('room:leave', { type, id });
  const left = await waitUnlessError(socket, from, 'room:left', (x) => x.roomType === type && x.roomId === id);
  assert.deepEqual(left, { roomType: type, roomId: id }, `room:left is { roomType, roomId }: ${JSON.stringify(left)}`);
  return left;
}

/**
 * message:send without an ack; waits for the sender's own `message:new` with that content (fails
 * at once on an `error`); answers the message.
 */
export async function sendMessage(socket, roomType, roomId, content = `hello ${nonce()}`, extra = {}) {
  const from = mark(socket);
  socket.emit('message:send', { roomType, roomId, content, type: 'text', ...extra });
  const { message } = await waitUnlessError(socket, from, 'message:new', (x) => x.message.content === content);
  assertTaskMessage(message, { roomType, roomId, content, type: 'text' });
  return message;
}
