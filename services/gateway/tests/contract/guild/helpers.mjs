// Helpers of the `guild` (000) contract suite: numeric ids, provisioning of servers, channels and
// members through the integration API, connect.sid cookie handshakes on the /guild namespace,
// guild operations, payload shapes, and waiting on events that arrive after a point in time.
//
// Shared machinery (admin client, socket tracking, waitFor, expectNo, closeAll…) comes from
// ../helpers.mjs.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  ALLOWED_ORIGIN,
  NODE1,
  PRESENCE_THROTTLE_MS,
  PRESENCE_TTL_MS,
  QUIET_MS,
  SESSION_SECRET,
  admin,
  assertIso,
  connect,
  createSession,
  eventsOf,
  expectConnectError,
  http,
  sleep,
  waitFor,
} from '../helpers.mjs';

/** The namespace the harness mounts `guild` on. */
export const GUILD_NS = '/guild';

/** `http://host:port/guild` for a gateway node. */
export const guildUrl = (node) => `${node.replace(/\/+$/, '')}${GUILD_NS}`;

/** Presence transitions are throttled (2 s) and expire by TTL (2 s): wait generously (8 s). */
export const PRESENCE_DEADLINE_MS = PRESENCE_THROTTLE_MS + PRESENCE_TTL_MS + 4000;

/** How long a delivery across the nodes may take in these tests. */
export const DELIVERY_MS = 5000;

export const TRANSPORTS = [['websocket'], ['polling']];

/** Numbers ascending (a plain `.sort()` would compare them as strings). */
export const asc = (ids) => [...ids].sort((a, b) => a - b);

// ---------------------------------------------------------------------------------------------
// Ids and provisioning

/** A fresh numeric id (users, servers and channels share one space; collisions are negligible). */
export const newId = () => crypto.randomInt(1_000_000, 2_000_000_000);

const hex = () => crypto.randomBytes(3).toString('hex');

/**
 * A user with a numeric id, a username distinct from the id, and a session:
 * `{ id, username, cookie, token }` (`cookie` is the ready `connect.sid=…` pair).
 */
export async function guildUser({ username } = {}) {
  const id = newId();
  const name = username ?? `Sara ${hex()}`;
  await admin('PUT', `/v1/users/${id}`, { username: name });
  const session = await createSession(String(id));
  assert.match(session.cookie, /^connect\.sid=s%3A/, `POST /v1/sessions answers a signed connect.sid: ${session.cookie}`);
  return { id, username: name, cookie: session.cookie, token: session.token };
}

export async function putServer(serverId, title = `server ${serverId}`) {
  await admin('PUT', `/v1/rooms/server/${serverId}`, { title });
  return serverId;
}

export async function putChannel(channelId, serverId) {
  await admin('PUT', `/v1/rooms/channel/${channelId}`, { parent: { kind: 'server', id: String(serverId) } });
  return channelId;
}

export async function addServerMember(serverId, userId, role = 'member') {
  await admin('PUT', `/v1/rooms/server/${serverId}/members/${userId}`, { role });
}

export async function removeServerMember(serverId, userId) {
  await admin('DELETE', `/v1/rooms/server/${serverId}/members/${userId}`);
}

/**
 * A server with `channels` channels and `members` fresh member users:
 * `{ serverId, channelId (the first channel), channelIds, users }`.
 */
export async function newGuild({ members = 2, channels = 1 } = {}) {
  const serverId = await putServer(newId());
  const channelIds = [];
  for (let i = 0; i < channels; i++) channelIds.push(await putChannel(newId(), serverId));
  const users = [];
  for (let i = 0; i < members; i++) {
    const u = await guildUser();
    await addServerMember(serverId, u.id);
    users.push(u);
  }
  return { serverId, channelId: channelIds[0], channelIds, users };
}

// ---------------------------------------------------------------------------------------------
// Handshakes

/** Handshake options: the cookie and Origin headers (either may be null: header left out). */
export function guildOptions({ cookie, origin = ALLOWED_ORIGIN, transports = ['websocket'], ...rest } = {}) {
  const extraHeaders = {};
  if (cookie !== undefined && cookie !== null) extraHeaders.cookie = cookie;
  if (origin !== undefined && origin !== null) extraHeaders.origin = origin;
  const opts = { transports, ...rest };
  if (Object.keys(extraHeaders).length > 0) opts.extraHeaders = extraHeaders;
  return opts;
}

/** Connects `user` to /guild on `node` with its cookie (override with `cookie`, `origin`…). */
export function connectGuild(user, node = NODE1, opts = {}) {
  const { cookie = user.cookie, name, ...rest } = opts;
  const transport = (rest.transports ?? ['websocket']).join('+');
  return connect(guildUrl(node), undefined, {
    name: name ?? `${user.id}@${node}${GUILD_NS}(${transport})`,
    ...guildOptions({ cookie, ...rest }),
  });
}

/** Expects the /guild handshake to be refused with connect_error E_UNAUTHORIZED. */
export async function expectGuildRefused(node, { token, ...opts } = {}) {
  const err = await expectConnectError(guildUrl(node), token, guildOptions(opts));
  assert.equal(err.message, 'E_UNAUTHORIZED', `connect_error message: ${err.message}`);
  return err;
}

/** express-session's cookie signature (`cookie-signature`): `<value>.<base64 HMAC-SHA256, no '='>`. */
export function signSid(sid, secret = SESSION_SECRET) {
  const sig = crypto.createHmac('sha256', secret).update(sid).digest('base64').replace(/=+$/, '');
  return `${sid}.${sig}`;
}

/** `connect.sid=s%3A<sid>.<sig>` for a session id, as express-session sets it. */
export const cookieFor = (sid, secret = SESSION_SECRET) => `connect.sid=${encodeURIComponent(`s:${signSid(sid, secret)}`)}`;

/** The session id inside a `connect.sid=s%3A<sid>.<sig>` cookie pair. */
export function sidOf(cookie) {
  const value = decodeURIComponent(cookie.slice('connect.sid='.length));
  assert.ok(value.startsWith('s:'), `a signed cookie value: ${value}`);
  return value.slice(2, value.lastIndexOf('.'));
}

// ---------------------------------------------------------------------------------------------
// Waiting on events from a point in time on: the shared helpers, re-exported

import { mark, eventsAfter, waitAfter, expectNoAfter, waitCount, waitUnlessError } from '../helpers.mjs';

export { mark, eventsAfter, waitAfter, expectNoAfter, waitCount, waitUnlessError };

/** Every `error:*` event (name and payload) a socket received after `from`. */
export const errorsAfter = (socket, from) =>
  eventsOf(socket)
    .slice(from)
    .filter((e) => e.event.startsWith('error:'));

// ---------------------------------------------------------------------------------------------
// Shapes

/**
 * An error event's payload: exactly `{ code, message, correlationId }`: the document's
 * `{ code }`, a non-empty message, and the trace id an operator can search for (README: General).
 */
export function assertGuildError(payload, code) {
  assert.ok(payload && typeof payload === 'object', `an error payload object, got ${JSON.stringify(payload)}`);
  assert.equal(payload.code, code, `code ${code} in ${JSON.stringify(payload)}`);
  assert.equal(typeof payload.message, 'string', `message is a string in ${JSON.stringify(payload)}`);
  assert.ok(payload.message.length > 0, 'message is not empty');
  assert.match(payload.correlationId ?? '', /^[0-9a-f]{32}$/, `correlationId is a trace id in ${JSON.stringify(payload)}`);
  assert.deepEqual(Object.keys(payload).sort(), ['code', 'correlationId', 'message'], `exactly { code, message, correlationId }: ${JSON.stringify(payload)}`);
}

/** A failed message:create ack: exactly `{ ok: false, code, message }`. */
export function assertFailAck(res, code) {
  assert.ok(res && typeof res === 'object', `an ack object, got ${JSON.stringify(res)}`);
  assert.equal(res.ok, false, `ok:false in ${JSON.stringify(res)}`);
  assert.equal(res.code, code, `code ${code} in ${JSON.stringify(res)}`);
  assert.equal(typeof res.message, 'string', `message is a string in ${JSON.stringify(res)}`);
  assert.ok(res.message.length > 0, 'message is not empty');
  assert.deepEqual(Object.keys(res).sort(), ['code', 'message', 'ok'], `exactly { ok, code, message }: ${JSON.stringify(res)}`);
}

/** A JSON number that is a positive safe integer. */
export function assertIntId(value, what) {
  assert.equal(typeof value, 'number', `${what} is a JSON number: ${JSON.stringify(value)}`);
  assert.ok(Number.isSafeInteger(value) && value > 0, `${what} is a positive integer: ${value}`);
}

/**
 * MessageDTO `{ id, channel_id, content, created_at, updated_at, user: { id, username } }`;
 * `expected` may give `channelId`, `content`, `user` ({ id, username }) and `id`.
 */
export function assertMessageDTO(m, expected = {}) {
  assert.ok(m && typeof m === 'object', `a MessageDTO, got ${JSON.stringify(m)}`);
  const text = JSON.stringify(m).slice(0, 300);
  assert.deepEqual(
    Object.keys(m).sort(),
    ['channel_id', 'content', 'created_at', 'id', 'updated_at', 'user'],
    `MessageDTO keys: ${text}`,
  );
  assertIntId(m.id, 'id');
  assertIntId(m.channel_id, 'channel_id');
  assert.equal(typeof m.content, 'string', `content is a string: ${text}`);
  assertIso(m.created_at, 'created_at');
  assertIso(m.updated_at, 'updated_at');
  assert.ok(m.user && typeof m.user === 'object', `user is an object: ${text}`);
  assert.deepEqual(Object.keys(m.user).sort(), ['id', 'username'], `user is { id, username }: ${text}`);
  assertIntId(m.user.id, 'user.id');
  assert.equal(typeof m.user.username, 'string');
  if (expected.id !== undefined) assert.equal(m.id, expected.id, 'id');
  if (expected.channelId !== undefined) assert.equal(m.channel_id, expected.channelId, 'channel_id');
  if (expected.content !== undefined) assert.equal(m.content, expected.content, 'content');
  if (expected.user !== undefined) assert.deepEqual(m.user, expected.user, 'user');
}

/** `presence:update` is exactly `{ serverId, onlineUserIds }`: numbers, ascending, no repeats. */
export function assertPresence(p, serverId, onlineUserIds) {
  const text = JSON.stringify(p);
  assert.deepEqual(Object.keys(p).sort(), ['onlineUserIds', 'serverId'], `presence:update keys: ${text}`);
  assert.equal(typeof p.serverId, 'number', `serverId is a number: ${text}`);
  assert.equal(p.serverId, serverId);
  assert.ok(Array.isArray(p.onlineUserIds), `onlineUserIds is an array: ${text}`);
  for (const id of p.onlineUserIds) assert.equal(typeof id, 'number', `onlineUserIds holds numbers: ${text}`);
  assert.deepEqual(p.onlineUserIds, asc(p.onlineUserIds), `onlineUserIds ascending: ${text}`);
  assert.equal(new Set(p.onlineUserIds).size, p.onlineUserIds.length, `no repeats: ${text}`);
  if (onlineUserIds !== undefined) assert.deepEqual(p.onlineUserIds, asc(onlineUserIds), `onlineUserIds: ${text}`);
}

/** A predicate on presence:update of `serverId` listing every id of `ids` (and none of `not`). */
export const presenceWith = (serverId, ids, not = []) => (p) =>
  Number(p.serverId) === serverId &&
  ids.every((id) => p.onlineUserIds.map(Number).includes(id)) &&
  not.every((id) => !p.onlineUserIds.map(Number).includes(id));

// ---------------------------------------------------------------------------------------------
// Guild operations

/** server:join (id sent as given) and `server:joined { serverId }`, exactly, as a number. */
export async function joinServer(socket, serverId, sentAs = serverId) {
  const from = mark(socket);
  socket.emit('server:join', { serverId: sentAs });
  const joined = await waitUnlessError(socket, from, 'server:joined', (j) => Number(j.serverId) === serverId);
  assert.deepEqual(joined, { serverId }, `server:joined { serverId } with a number: ${JSON.stringify(joined)}`);
  return joined;
}

/** channel:join (id sent as given) and `channel:joined { channelId }`, exactly, as a number. */
export async function joinChannel(socket, channelId, sentAs = channelId) {
  const from = mark(socket);
  socket.emit('channel:join', { channelId: sentAs });
  const joined = await waitUnlessError(socket, from, 'channel:joined', (j) => Number(j.channelId) === channelId);
  assert.deepEqual(joined, { channelId }, `channel:joined { channelId } with a number: ${JSON.stringify(joined)}`);
  return joined;
}

/** `emitWithAck` with a timeout and exactly `args`. */
export function emitAck(socket, event, ...args) {
  return socket.timeout(10000).emitWithAck(event, ...args);
}

/** message:create with an ack that must be `{ ok: true, message }`; answers the MessageDTO. */
export async function createMessage(socket, channelId, content = `hello ${hex()}`, extra = {}) {
  const res = await emitAck(socket, 'message:create', { channelId, content, ...extra });
  assert.ok(res && res.ok === true, `message:create by ${socket.__name}: ${JSON.stringify(res)?.slice(0, 300)}`);
  assert.deepEqual(Object.keys(res).sort(), ['message', 'ok'], `the ack is { ok, message }: ${JSON.stringify(res).slice(0, 300)}`);
  assertMessageDTO(res.message, { channelId: Number(channelId), content });
  return res.message;
}

/** The channel's messages (core JSON) through the admin history endpoint, newest first. */
export async function channelHistory(channelId, node = NODE1) {
  const res = await http('GET', `/v1/rooms/channel/${channelId}/messages?limit=100`, { node });
  assert.equal(res.status, 200, `GET history: ${res.status} ${res.text.slice(0, 300)}`);
  assert.ok(Array.isArray(res.json?.messages), `history is { messages: [...] }: ${res.text.slice(0, 300)}`);
  return res.json.messages;
}

/** A message posted through the integration API on behalf of `senderId`; answers its core JSON. */
export function postMessage(channelId, senderId, content, node = NODE1) {
  return admin('POST', `/v1/rooms/channel/${channelId}/messages`, { senderId: String(senderId), content }, { node });
}

/** A server-side publish of `event` to a room (`POST /v1/rooms/{kind}/{id}/events`). */
export function roomEvent(kind, roomId, event, data, node = NODE1) {
  return admin('POST', `/v1/rooms/${kind}/${roomId}/events`, { event, data }, { node });
}

/** A unique marker for probe events and message contents. */
export const nonce = () => crypto.randomBytes(8).toString('hex');

export { waitFor };
