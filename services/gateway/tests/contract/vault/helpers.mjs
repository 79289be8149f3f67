// Helpers of the `vault` (003) contract suite: vault ids, provisioning of users, vaults and
// members through the integration API, handshakes on the /vault namespace (a JWT or an opaque
// session token in auth.token, or NextAuth's session cookie), vault:join / vault:leave, source
// payloads and the shapes of what the server sends, and waiting on events after a point in time.
//
// Shared machinery (admin client, socket tracking, waitFor, expectNo, closeAll…) comes from
// ../helpers.mjs.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  ALLOWED_ORIGIN,
  HEX32,
  NODE1,
  QUIET_MS,
  admin,
  assertIso,
  connect,
  createSession,
  eventsOf,
  expectConnectError,
  mintToken,
  rid,
  sleep,
  waitFor,
} from '../helpers.mjs';

/** The namespace the harness mounts `vault` on. */
export const VAULT_NS = '/vault';

/** `http://host:port/vault` for a gateway node. */
export const vaultUrl = (node) => `${node.replace(/\/+$/, '')}${VAULT_NS}`;

/** How long a delivery across the nodes may take in these tests. */
export const DELIVERY_MS = 8000;

export const TRANSPORTS = [['websocket'], ['polling']];

/** The roles that may emit source events, and the ones refused like a viewer. */
export const PUBLISHER_ROLES = ['owner', 'contributor'];
export const REFUSED_ROLES = ['viewer', 'manager', 'member'];

/** The three source events. */
export const SOURCE_EVENTS = ['source:created', 'source:updated', 'source:deleted'];

/** A unique marker for probes and source ids. */
export const nonce = () => crypto.randomBytes(8).toString('hex');

// ---------------------------------------------------------------------------------------------
// Ids and provisioning

/**
 * A fresh valid vault id: 'v' and lowercase hex, `length` characters in all (8–32; 16 by
 * default), so lowercase letters and digits starting with a letter.
 */
export function newVaultId(length = 16) {
  assert.ok(length >= 8 && length <= 32, `a vault id has 8–32 characters, not ${length}`);
  return `v${crypto.randomBytes(16).toString('hex').slice(0, length - 1)}`;
}

/** The session cookie pair NextAuth sets: `<name>=<opaque session token>`. */
export const sessionCookie = (token, name = 'next-auth.session-token') => `${name}=${token}`;
export const SECURE_COOKIE_NAME = '__Secure-next-auth.session-token';

/**
 * A user with a JWT and an opaque session: `{ id, username, firstName, lastName, jwt,
 * sessionToken, cookie }` (`cookie` is the ready `next-auth.session-token=<token>` pair). The
 * username differs from the id, so a test can tell which one the server used.
 */
export async function vaultUser({ username, firstName, lastName } = {}) {
  const id = rid('vu');
  const name = username ?? `reader_${nonce().slice(0, 6)}`;
  const body = { username: name };
  if (firstName !== undefined) body.firstName = firstName;
  if (lastName !== undefined) body.lastName = lastName;
  await admin('PUT', `/v1/users/${encodeURIComponent(id)}`, body);
  const jwt = await mintToken(id);
  const session = await createSession(id);
  return {
    id,
    username: name,
    firstName,
    lastName,
    jwt,
    sessionToken: session.token,
    cookie: sessionCookie(session.token),
  };
}

export async function putVault(vaultId, title = `vault ${vaultId}`) {
  await admin('PUT', `/v1/rooms/vault/${vaultId}`, { title });
  return vaultId;
}

export async function addVaultMember(vaultId, userId, role) {
  await admin('PUT', `/v1/rooms/vault/${vaultId}/members/${encodeURIComponent(userId)}`, { role });
}

export async function removeVaultMember(vaultId, userId) {
  await admin('DELETE', `/v1/rooms/vault/${vaultId}/members/${encodeURIComponent(userId)}`);
}

/**
 * A vault with one fresh user per entry of `roles` (each user gets `role`):
 * `{ vaultId, users }`, `users[i].role === roles[i]`.
 */
export async function newVault({ roles = ['owner', 'contributor', 'viewer'], vaultId = newVaultId(), users = [] } = {}) {
  await putVault(vaultId);
  const out = [];
  for (let i = 0; i < roles.length; i++) {
    const u = users[i] ?? (await vaultUser());
    await addVaultMember(vaultId, u.id, roles[i]);
    out.push({ ...u, role: roles[i] });
  }
  return { vaultId, users: out };
}

// ---------------------------------------------------------------------------------------------
// Handshakes

/**
 * Handshake options: `cookie` and `origin` headers (null or undefined cookie: left out; origin
 * defaults to the allowed one, null: left out), `transports` (websocket by default).
 */
export function vaultOptions({ cookie, origin = ALLOWED_ORIGIN, transports = ['websocket'], ...rest } = {}) {
  const extraHeaders = {};
  if (cookie !== undefined && cookie !== null) extraHeaders.cookie = cookie;
  if (origin !== undefined && origin !== null) extraHeaders.origin = origin;
  const opts = { transports, ...rest };
  if (Object.keys(extraHeaders).length > 0) opts.extraHeaders = extraHeaders;
  return opts;
}

/** The credential a user presents, by kind: `jwt`, `session` (token), `cookie`, `secureCookie`. */
export function credentialOf(user, via) {
  switch (via) {
    case 'jwt':
      return { token: user.jwt };
    case 'session':
      return { token: user.sessionToken };
    case 'cookie':
      return { cookie: user.cookie };
    case 'secureCookie':
      return { cookie: sessionCookie(user.sessionToken, SECURE_COOKIE_NAME) };
    default:
      throw new Error(`unknown credential kind ${via}`);
  }
}

/**
 * Connects `user` to /vault on `node` (a JWT in auth.token by default; `via` picks another
 * credential; `token`, `cookie`, `origin`, `transports` override).
 */
export function connectVault(user, node = NODE1, opts = {}) {
  const { via = 'jwt', name, ...rest } = opts;
  const { token, ...handshake } = { ...credentialOf(user, via), ...rest };
  const transport = (handshake.transports ?? ['websocket']).join('+');
  return connect(vaultUrl(node), token, {
    name: name ?? `${user.id}@${node}${VAULT_NS}(${via},${transport})`,
    ...vaultOptions(handshake),
  });
}

/** Expects the /vault handshake to be refused with connect_error UNAUTHORIZED. */
export async function expectVaultRefused(node, { token, ...opts } = {}) {
  const err = await expectConnectError(vaultUrl(node), token, vaultOptions(opts));
  assert.equal(err.message, 'UNAUTHORIZED', `connect_error message: ${err.message}`);
  return err;
}

// ---------------------------------------------------------------------------------------------
// Waiting on events from a point in time on: the shared helpers, re-exported

import { mark, eventsAfter, waitAfter, expectNoAfter, waitCount, waitUnlessError } from '../helpers.mjs';

export { mark, eventsAfter, waitAfter, expectNoAfter, waitCount, waitUnlessError };

/** Waits `ms`, then asserts that the socket received no event at all after `from`. */
export async function expectSilenceAfter(socket, from, ms = QUIET_MS) {
  await sleep(ms);
  const got = eventsOf(socket).slice(from);
  assert.equal(
    got.length,
    0,
    `${socket.__name} received unexpected events: ${got.map((e) => `${e.event} ${JSON.stringify(e.data)?.slice(0, 200)}`).join(' | ')}`,
  );
}

/**
 * Emits `event` with the callback appended to `args`; answers a function that tells whether the
 * callback was called (and with what), to check that an event is never acknowledged.
 */
export function emitWithSpy(socket, event, ...args) {
  const spy = { called: false, args: undefined };
  socket.emit(event, ...args, (...answer) => {
    spy.called = true;
    spy.args = answer;
  });
  return spy;
}

/** Asserts that an `emitWithSpy` callback was not called (call after a quiet wait). */
export function assertNotAcked(spy, what) {
  assert.equal(spy.called, false, `${what}: the ack callback was called with ${JSON.stringify(spy.args)}`);
}

// ---------------------------------------------------------------------------------------------
// Shapes

/**
 * An `error` event's payload: exactly `{ message, code, details }`, `details` an object carrying
 * the trace id `correlationId` (32 lowercase hex). With `exactDetails` (the default), `details`
 * is exactly `{ correlationId }`.
 */
export function assertVaultError(payload, message, code, { exactDetails = true } = {}) {
  const text = JSON.stringify(payload);
  assert.ok(payload && typeof payload === 'object' && !Array.isArray(payload), `an error payload object, got ${text}`);
  assert.equal(payload.message, message, `message ${JSON.stringify(message)} in ${text}`);
  assert.equal(payload.code, code, `code ${code} in ${text}`);
  assert.deepEqual(Object.keys(payload).sort(), ['code', 'details', 'message'], `exactly { message, code, details }: ${text}`);
  assert.ok(payload.details && typeof payload.details === 'object', `details is an object: ${text}`);
  assert.equal(typeof payload.details.correlationId, 'string', `details.correlationId is a string: ${text}`);
  assert.match(payload.details.correlationId, HEX32, `details.correlationId is a trace id (32 lowercase hex): ${text}`);
  if (exactDetails) assert.deepEqual(Object.keys(payload.details), ['correlationId'], `details is { correlationId }: ${text}`);
}

export const INVALID_VAULT_ID = ['Invalid vault ID', 'INVALID_VAULT_ID'];
export const ACCESS_DENIED = ['Access denied to vault', 'FORBIDDEN'];
export const INSUFFICIENT = ['Insufficient permissions', 'FORBIDDEN'];
export const INVALID_PAYLOAD = ['Invalid payload', 'VALIDATION_ERROR'];

/**
 * Emits `event` with exactly `args`, and expects one `error` with `[message, code]` on the
 * socket; answers its payload.
 */
export async function expectError(socket, event, args, [message, code], opts = {}) {
  const from = mark(socket);
  socket.emit(event, ...args);
  const payload = await waitAfter(socket, from, 'error', () => true, DELIVERY_MS);
  assertVaultError(payload, message, code, opts);
  return payload;
}

/** A time set by the server now: an ISO 8601 string within five minutes of this machine's clock. */
export function assertFresh(value, what = 'timestamp') {
  assertIso(value, what);
  const skew = Math.abs(Date.parse(value) - Date.now());
  assert.ok(skew < 5 * 60 * 1000, `${what} is the server's current time, not ${value}`);
}

/** `actor` is exactly `{ userId, userName, role }` with these values. */
export function assertActor(actor, expected) {
  const text = JSON.stringify(actor);
  assert.ok(actor && typeof actor === 'object', `actor is an object: ${text}`);
  assert.deepEqual(Object.keys(actor).sort(), ['role', 'userId', 'userName'], `actor is { userId, userName, role }: ${text}`);
  assert.deepEqual(actor, { userId: expected.userId, userName: expected.userName, role: expected.role }, `actor: ${text}`);
}

/** The actor a user's source events carry: `userName` "firstName lastName" or the username. */
export const actorOf = (user, role = user.role) => ({
  userId: user.id,
  userName: user.firstName && user.lastName ? `${user.firstName} ${user.lastName}` : user.username,
  role,
});

/**
 * The `source` of `source:created` (`kind` 'created') or `source:updated` ('updated'): exactly
 * id, title, fileUrl, mimeType, vaultId and createdAt/updatedAt, plus fileKey and fileSize when
 * the client gave them. `sent` is the client's source object; `vaultId` the vault.
 */
export function assertRenderedSource(source, sent, vaultId, kind) {
  const text = JSON.stringify(source);
  const timeField = kind === 'created' ? 'createdAt' : 'updatedAt';
  assert.ok(source && typeof source === 'object', `source is an object: ${text}`);
  const keys = ['fileUrl', 'id', 'mimeType', 'title', 'vaultId', timeField];
  if (sent.fileKey !== undefined) keys.push('fileKey');
  if (sent.fileSize !== undefined) keys.push('fileSize');
  assert.deepEqual(Object.keys(source).sort(), keys.sort(), `source keys: ${text}`);
  assert.equal(source.id, sent.id, 'source.id');
  assert.equal(source.title, sent.title, 'source.title');
  assert.equal(source.fileUrl, sent.fileUrl, 'source.fileUrl');
  assert.equal(source.vaultId, vaultId, 'source.vaultId');
  assert.equal(source.mimeType, sent.mimeType ?? 'application/pdf', 'source.mimeType (application/pdf by default)');
  if (sent.fileKey !== undefined) assert.equal(source.fileKey, sent.fileKey, 'source.fileKey');
  if (sent.fileSize !== undefined) assert.equal(source.fileSize, sent.fileSize, 'source.fileSize');
  if (sent[timeField] !== undefined) assert.equal(source[timeField], sent[timeField], `source.${timeField} is the client's`);
  else assertFresh(source[timeField], `source.${timeField} (the server's time)`);
}

/** `source:created|updated { source, actor, timestamp }`, exactly. */
export function assertSourceEvent(payload, { kind, sent, vaultId, actor }) {
  const text = JSON.stringify(payload);
  assert.ok(payload && typeof payload === 'object', `a payload object: ${text}`);
  assert.deepEqual(Object.keys(payload).sort(), ['actor', 'source', 'timestamp'], `{ source, actor, timestamp }: ${text}`);
  assertRenderedSource(payload.source, sent, vaultId, kind);
  assertActor(payload.actor, actor);
  assertFresh(payload.timestamp, 'timestamp');
}

/** `source:deleted { sourceId, vaultId, actor, timestamp }`, exactly. */
export function assertDeletedEvent(payload, { sourceId, vaultId, actor }) {
  const text = JSON.stringify(payload);
  assert.ok(payload && typeof payload === 'object', `a payload object: ${text}`);
  assert.deepEqual(Object.keys(payload).sort(), ['actor', 'sourceId', 'timestamp', 'vaultId'], `{ sourceId, vaultId, actor, timestamp }: ${text}`);
  assert.equal(payload.sourceId, sourceId, 'sourceId');
  assert.equal(payload.vaultId, vaultId, 'vaultId');
  assertActor(payload.actor, actor);
  assertFresh(payload.timestamp, 'timestamp');
}

// ---------------------------------------------------------------------------------------------
// Payloads

/** A client-side source object for `vaultId` (required fields only, plus `extra`). */
export function sourceOf(vaultId, extra = {}) {
  const n = nonce();
  const source = { id: `src${n}`, title: `Notes ${n}.pdf`, fileUrl: `https://res.cloudinary.com/demo/raw/upload/${n}.pdf` };
  if (vaultId !== undefined) source.vaultId = vaultId;
  return { ...source, ...extra };
}

/** A full client-side source: every optional field given. */
export function fullSourceOf(vaultId, extra = {}) {
  const n = nonce();
  return sourceOf(vaultId, { fileKey: `vault/${n}`, fileSize: 48213, mimeType: 'text/markdown', ...extra });
}

/** The source id of a `source:*` payload as the server renders it. */
export const sourceIdOf = (d) => d?.source?.id ?? d?.sourceId;

// ---------------------------------------------------------------------------------------------
// Vault operations

/**
 * vault:join (as a bare string, or `{ vaultId }` with `as: 'object'`) and `vault:joined
 * { vaultId, role }`, exactly; answers it.
 */
export async function joinVault(socket, vaultId, role, { as = 'string' } = {}) {
  const from = mark(socket);
  socket.emit('vault:join', as === 'object' ? { vaultId } : vaultId);
  const joined = await waitUnlessError(socket, from, 'vault:joined', (j) => j.vaultId === vaultId);
  assert.deepEqual(joined, { vaultId, role }, `vault:joined { vaultId, role }: ${JSON.stringify(joined)}`);
  return joined;
}

/** A server-side publish of `event` to `vault:<id>` (`POST /v1/rooms/vault/{id}/events`). */
export function publish(vaultId, event, data, node = NODE1) {
  return admin('POST', `/v1/rooms/vault/${vaultId}/events`, { event, data }, { node });
}

/**
 * Publishes a probe (`source:created { probe }`) to the vault's room through the integration API
 * and checks who hears it: every socket of `inside` receives it (exactly once), none of
 * `outside` does.
 */
export async function assertRoom(vaultId, { inside = [], outside = [] }, node = NODE1) {
  const probe = nonce();
  const marks = new Map([...inside, ...outside].map((s) => [s, mark(s)]));
  await publish(vaultId, 'source:created', { probe }, node);
  for (const s of inside) {
    const got = await waitAfter(s, marks.get(s), 'source:created', (d) => d.probe === probe, DELIVERY_MS);
    assert.deepEqual(got, { probe }, 'a room event reaches the room unchanged');
  }
  await sleep(QUIET_MS);
  for (const s of inside) {
    assert.equal(eventsAfter(s, marks.get(s), 'source:created', (d) => d.probe === probe).length, 1, `${s.__name} got the probe once`);
  }
  for (const s of outside) {
    assert.equal(eventsAfter(s, marks.get(s), 'source:created', (d) => d.probe === probe).length, 0, `${s.__name} is not in vault:${vaultId}`);
  }
  return probe;
}

export { waitFor };
