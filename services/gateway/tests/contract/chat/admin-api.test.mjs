// The integration API (INTEGRATION_API.md) as the chat dialect sees it: upserts, messages posted
// on behalf of a user (broadcast as message:new), edits and soft deletes, server-side publishes
// to rooms and users on every node, cluster-wide disconnects, and the operational endpoints.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  ALLOWED_ORIGIN,
  GATEWAYS,
  NODE1,
  NODE2,
  ack,
  addMember,
  admin,
  assertChatMessage,
  assertHttpError,
  assertIso,
  closeAll,
  connectUser,
  count,
  expectNo,
  http,
  join,
  newChat,
  newUser,
  putChat,
  putUser,
  rid,
  send,
  sleep,
  uuid,
  waitFor,
  waitForDisconnect,
} from '../helpers.mjs';

afterEach(closeAll);

const enc = encodeURIComponent;
const CORE_MESSAGE_KEYS = [
  'id', 'roomKind', 'roomId', 'seq', 'senderId', 'type', 'content', 'fileId', 'fileName', 'fileSize',
  'mimeType', 'replyToId', 'clientId', 'createdAt', 'editedAt', 'deletedAt',
].sort();

function assertCoreMessage(m, expected = {}) {
  assert.deepEqual(Object.keys(m).sort(), CORE_MESSAGE_KEYS, JSON.stringify(m));
  assert.ok(Number.isInteger(m.id), 'id is an integer');
  assert.ok(Number.isInteger(m.seq), 'seq is an integer');
  assertIso(m.createdAt, 'createdAt');
  for (const [k, v] of Object.entries(expected)) assert.deepEqual(m[k], v, `message.${k}`);
}

test('users, rooms and members upsert idempotently (on either node)', async () => {
  const id = rid('u');
  for (const node of [NODE1, NODE2]) {
    const res = await http('PUT', `/v1/users/${enc(id)}`, {
      body: { username: id, firstName: 'Ada', lastName: 'Lovelace', role: 'member' },
      node,
    });
    assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  }
  const chatId = rid('c');
  for (const node of [NODE1, NODE2]) {
    const res = await http('PUT', `/v1/rooms/chat/${enc(chatId)}`, {
      body: { type: 'group', title: 'Upserted', createdBy: id },
      node,
    });
    assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
    const m = await http('PUT', `/v1/rooms/chat/${enc(chatId)}/members/${enc(id)}`, { body: { role: 'member' }, node });
    assert.ok(m.status >= 200 && m.status < 300, `${m.status} ${m.text}`);
  }
  // Granting works for a user never upserted too (applications own their users).
  const stranger = rid('u');
  await addMember(chatId, stranger);
  // The upserted member can use the chat.
  const s = await connectUser({ id, token: (await admin('POST', '/v1/tokens', { userId: id })).token }, NODE2);
  assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true });
});

test('invalid integration requests are 400 with the error shape', async () => {
  const res = await http('PUT', `/v1/rooms/nonsense-kind/${rid('r')}`, { body: { title: 'x' } });
  assert.ok([400, 404].includes(res.status), `unknown room kind: ${res.status}`);
  assertHttpError(await http('POST', '/v1/tokens', { body: 'not json' }), 400);
  assertHttpError(await http('POST', '/v1/tokens', { body: {} }), 400);
});

test('POST /v1/rooms/chat/{id}/messages: 201 with the core message, broadcast as message:new on both nodes; idempotent', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const { chatId } = chat;
  const a = await connectUser(A, NODE1);
  const b = await connectUser(B, NODE2);
  await join(a, chatId);
  await join(b, chatId);

  const clientId = uuid();
  const res = await http('POST', `/v1/rooms/chat/${enc(chatId)}/messages`, {
    body: { senderId: A.id, content: 'posted by the backend', clientId },
    node: NODE2,
  });
  assert.equal(res.status, 201, res.text);
  assertCoreMessage(res.json, {
    roomKind: 'chat',
    roomId: chatId,
    senderId: A.id,
    type: 'text',
    content: 'posted by the backend',
    clientId,
    fileId: null,
    fileName: null,
    fileSize: null,
    mimeType: null,
    replyToId: null,
    editedAt: null,
    deletedAt: null,
  });
  const id = String(res.json.id);
  for (const s of [a, b]) {
    const m = await waitFor(s, 'message:new', (x) => x._id === id, 5000);
    assertChatMessage(m, { chatId, _id: id, body: 'posted by the backend', senderId: A.id, clientId });
  }

  const again = await http('POST', `/v1/rooms/chat/${enc(chatId)}/messages`, {
    body: { senderId: A.id, content: 'posted by the backend', clientId },
  });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.id, res.json.id, 'the same message');
  await sleep(1000);
  assert.equal(count(b, 'message:new', (x) => x._id === id), 1, 'no second broadcast');

  // The same clientId over Socket.IO by the same sender is the same message too.
  const viaSocket = await ack(a, 'message:send', { chatId, body: 'posted by the backend', clientId });
  assert.deepEqual(viaSocket, { ok: true, data: { clientId, serverId: id } });
});

test('messages posted through the API do not count toward the sender rate limit, and are not limited', async () => {
  const chat = await newChat({ members: 1 });
  const [A] = chat.users;
  for (let i = 0; i < 12; i++) {
    const res = await http('POST', `/v1/rooms/chat/${enc(chat.chatId)}/messages`, {
      body: { senderId: A.id, content: `api ${i}`, clientId: uuid() },
    });
    assert.equal(res.status, 201, `message ${i}: ${res.status} ${res.text}`);
  }
  const a = await connectUser(A, NODE2);
  await send(a, chat.chatId, 'socket send right after');
});

test('PATCH edits and DELETE soft-deletes with actorId: the sender may, another member gets 403', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const { chatId } = chat;
  const a = await connectUser(A, NODE1);
  const sent = await send(a, chatId, 'original');
  const path = `/v1/rooms/chat/${enc(chatId)}/messages/${sent.serverId}`;

  assertHttpError(await http('PATCH', path, { body: { content: 'hijacked', actorId: B.id } }), 403);
  const edited = await http('PATCH', path, { body: { content: 'edited', actorId: A.id }, node: NODE2 });
  assert.equal(edited.status, 200, edited.text);
  assertCoreMessage(edited.json, { id: Number(sent.serverId), content: 'edited', deletedAt: null });
  assertIso(edited.json.editedAt, 'editedAt');

  assertHttpError(await http('DELETE', `${path}?actorId=${enc(B.id)}`), 403);
  const deleted = await http('DELETE', `${path}?actorId=${enc(A.id)}`, { node: NODE2 });
  assert.ok(deleted.status >= 200 && deleted.status < 300, `${deleted.status} ${deleted.text}`);

  // The core history shows the edit and the soft delete (if it lists deleted messages at all).
  const history = await http('GET', `/v1/rooms/chat/${enc(chatId)}/messages?limit=100`);
  assert.equal(history.status, 200, history.text);
  const found = history.json.messages.find((m) => m.id === Number(sent.serverId));
  if (found) {
    assert.equal(typeof found.deletedAt, 'string', 'soft-deleted: deletedAt is set');
    assertIso(found.deletedAt);
  }
  assertHttpError(await http('PATCH', `/v1/rooms/chat/${enc(chatId)}/messages/987654321987`, {
    body: { content: 'x', actorId: A.id },
  }), 404);
});

test('POST /v1/rooms/chat/{id}/events reaches the room sockets on both nodes', async () => {
  const chat = await newChat({ members: 3 });
  const [A, B, C] = chat.users;
  const a = await connectUser(A, NODE1);
  const b = await connectUser(B, NODE2);
  const c = await connectUser(C, NODE2); // a member whose socket did not join the room
  await join(a, chat.chatId);
  await join(b, chat.chatId);
  const data = { hello: 'room', n: 7, nested: { ok: true } };
  const res = await http('POST', `/v1/rooms/chat/${enc(chat.chatId)}/events`, { body: { event: 'custom:ping', data } });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  for (const s of [a, b]) assert.deepEqual(await waitFor(s, 'custom:ping', () => true, 5000), data);
  await sleep(500);
  assert.equal(count(a, 'custom:ping'), 1);
  assert.equal(count(b, 'custom:ping'), 1);
  await expectNo(c, 'custom:ping', 0);
});

test("POST /v1/users/{id}/events reaches the user's sockets on both nodes, and only theirs", async () => {
  const A = await newUser();
  const B = await newUser();
  const a1 = await connectUser(A, NODE1);
  const a2 = await connectUser(A, NODE2);
  const b = await connectUser(B, NODE1);
  const data = { note: 'for A only' };
  const res = await http('POST', `/v1/users/${enc(A.id)}/events`, { body: { event: 'notify', data }, node: NODE2 });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  for (const s of [a1, a2]) assert.deepEqual(await waitFor(s, 'notify', () => true, 5000), data);
  await expectNo(b, 'notify', 800);
});

test("POST /v1/users/{id}/disconnect disconnects the user's sockets on every node, nobody else's", async () => {
  const A = await newUser();
  const B = await newUser();
  const a1 = await connectUser(A, NODE1);
  const a2 = await connectUser(A, NODE2);
  const b = await connectUser(B, NODE2);
  const res = await http('POST', `/v1/users/${enc(A.id)}/disconnect`, { body: { reason: 'test' } });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);
  await waitForDisconnect(a1, 5000);
  await waitForDisconnect(a2, 5000);
  await sleep(300);
  assert.ok(b.connected, 'another user stays connected');
  // The user can come back (disconnecting is not revoking).
  const again = await connectUser(A, NODE1);
  assert.equal((await ack(again, 'presence:ping', {})).ok, true);
});

test('/healthz and /readyz answer 200 and /metrics exposes switchboard_ metrics, on every node', async () => {
  for (const node of GATEWAYS) {
    const health = await http('GET', '/healthz', { token: null, node });
    assert.equal(health.status, 200, `${node}/healthz: ${health.text}`);
    const ready = await http('GET', '/readyz', { token: null, node });
    assert.equal(ready.status, 200, `${node}/readyz: ${ready.text}`);
    const metrics = await http('GET', '/metrics', { token: null, node });
    assert.equal(metrics.status, 200, `${node}/metrics`);
    assert.match(metrics.text, /^switchboard_/m, 'Prometheus text with switchboard_ metrics');
    // gRPC latency as the gateway saw it, and as the service reported it (its Postgres/Redis time).
    assert.match(metrics.text, /^switchboard_grpc_client_duration_seconds_count\{[^}]*method="Authorize"/m);
    assert.match(metrics.text, /^switchboard_grpc_server_duration_seconds_count\{[^}]*method="Authorize"/m);
    assert.match(metrics.text, /^switchboard_connections /m);
  }
});

test('an upserted room keeps working after a second PUT without createdBy', async () => {
  const user = await putUser(rid('u'));
  const chatId = rid('c');
  await putChat(chatId, { type: 'group', title: 'one', createdBy: user });
  await putChat(chatId, { type: 'group', title: 'two' });
  await addMember(chatId, user);
  const s = await connectUser({ id: user, token: (await admin('POST', '/v1/tokens', { userId: user })).token }, NODE1);
  assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true });
});

test('a body over the size limit is 413 PAYLOAD_TOO_LARGE in the API error shape', async () => {
  const user = rid('u');
  const res = await http('PUT', `/v1/users/${user}`, { body: { username: 'x'.repeat(3 * 1024 * 1024) } });
  assertHttpError(res, 413, 'PAYLOAD_TOO_LARGE');
});

test('CORS: an allowed origin may call the API with credentials; another origin gets no grant', async () => {
  const preflight = (origin) =>
    fetch(new URL('/v1/chats/any/messages', NODE1), {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
    });
  const ok = await preflight(ALLOWED_ORIGIN);
  assert.equal(ok.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN);
  assert.equal(ok.headers.get('access-control-allow-credentials'), 'true');
  const evil = await preflight('http://evil.example');
  assert.equal(evil.headers.get('access-control-allow-origin'), null);
});
