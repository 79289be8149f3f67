// Every dialect in one cluster: one user (a numeric id, because guild renders ids as numbers)
// holds three sockets at once — chat on `/` (JWT in auth.token), app on `/ws/app` (JWT in
// auth.token) and guild on `/guild` (the connect.sid cookie of a session). Each namespace speaks
// only its own contract: user-room publishes go everywhere unless a namespace is named,
// disconnects and session revocations reach the sockets they concern, each contract's events stay
// in its namespace, a malformed payload in one namespace disturbs no other, and presence is per
// namespace.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { afterEach, test } from 'node:test';
import {
  ALLOWED_ORIGIN,
  NODE1,
  NODE2,
  PRESENCE_THROTTLE_MS,
  PRESENCE_TTL_MS,
  QUIET_MS,
  ack,
  admin,
  assertErrorAck,
  closeAll,
  connect,
  count,
  createSession,
  eventsOf,
  expectNo,
  http,
  mintToken,
  putUser,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';
import {
  DELIVERY_MS,
  PRESENCE_DEADLINE_MS,
  addParticipant,
  appUrl,
  appUser,
  connectApp,
  postMessage,
  presenceOf,
  publishToUser,
  putConversation,
  waitReady,
  waitSocketError,
  watchDisconnect,
} from '../app/helpers.mjs';

afterEach(closeAll);

const enc = encodeURIComponent;

/** A fresh numeric user id (as a string; guild renders it as a number). */
const numericId = () => String(crypto.randomInt(100_000_000, 2_000_000_000));

const guildUrl = (node) => `${node.replace(/\/+$/, '')}/guild`;

function connectGuild(node, session, name) {
  return connect(guildUrl(node), undefined, {
    name,
    extraHeaders: { cookie: session.cookie, origin: ALLOWED_ORIGIN },
  });
}

/** A user (numeric id) with a JWT and a session. */
async function newNumericUser() {
  const id = numericId();
  await putUser(id, { username: `user${id}` });
  const jwt = await mintToken(id);
  const session = await createSession(id);
  return { id, jwt, session, token: jwt };
}

/** One user, three sockets: chat (JWT), app (JWT), guild (cookie), on the given nodes. */
async function threeSockets({ chatNode = NODE1, appNode = NODE2, guildNode = NODE1 } = {}) {
  const u = await newNumericUser();
  const chat = await connect(chatNode, u.jwt, { name: `${u.id}@chat` });
  const app = await connect(appUrl(appNode), u.jwt, { name: `${u.id}@app` });
  const guild = await connectGuild(guildNode, u.session, `${u.id}@guild`);
  await waitReady(app, u.id);
  return { ...u, chat, app, guild, all: [chat, app, guild] };
}

test('one user connects to chat, app and guild at once; only the app socket gets notifications:ready', async () => {
  const u = await threeSockets();
  for (const s of u.all) assert.ok(s.connected, `${s.__name} connected`);
  await expectNo(u.chat, 'notifications:ready', QUIET_MS);
  await expectNo(u.guild, 'notifications:ready', 0);
});

test('POST /v1/users/{id}/events without namespace reaches all three sockets once; a named namespace only its own', async () => {
  const u = await threeSockets();
  await publishToUser(u.id, 'custom:ping', { n: 1 }, { node: NODE2 });
  for (const s of u.all) {
    assert.deepEqual(await waitFor(s, 'custom:ping', (d) => d.n === 1, DELIVERY_MS), { n: 1 });
  }

  await publishToUser(u.id, 'custom:ping', { n: 2 }, { namespace: '/guild', node: NODE1 });
  await waitFor(u.guild, 'custom:ping', (d) => d.n === 2, DELIVERY_MS);

  await publishToUser(u.id, 'custom:ping', { n: 3 }, { namespace: '/ws/app', node: NODE2 });
  await waitFor(u.app, 'custom:ping', (d) => d.n === 3, DELIVERY_MS);

  await publishToUser(u.id, 'custom:ping', { n: 4 }, { namespace: '/', node: NODE1 });
  await waitFor(u.chat, 'custom:ping', (d) => d.n === 4, DELIVERY_MS);

  await sleep(QUIET_MS);
  const seen = (s) => eventsOf(s).filter((e) => e.event === 'custom:ping').map((e) => e.data.n);
  assert.deepEqual(seen(u.chat), [1, 4], 'chat: the unscoped publish and its own');
  assert.deepEqual(seen(u.app), [1, 3], 'app: the unscoped publish and its own');
  assert.deepEqual(seen(u.guild), [1, 2], 'guild: the unscoped publish and its own');
});

test('POST /v1/users/{id}/disconnect disconnects all three; the app socket after system:disconnect', async () => {
  const u = await threeSockets({ chatNode: NODE2, appNode: NODE1, guildNode: NODE2 });
  const other = await threeSockets();
  const watches = u.all.map((s) => watchDisconnect(s));
  const res = await http('POST', `/v1/users/${enc(u.id)}/disconnect`, { body: { reason: 'maintenance' }, node: NODE1 });
  assert.ok(res.status >= 200 && res.status < 300, `${res.status} ${res.text}`);

  const [chatEnd, appEnd, guildEnd] = await Promise.all(watches);
  assert.equal(appEnd.reason, 'io server disconnect');
  assert.ok(appEnd.before.includes('system:disconnect'), 'the app socket got system:disconnect first');
  assert.deepEqual(eventsOf(u.app).find((e) => e.event === 'system:disconnect').data, { reason: 'maintenance' });
  assert.ok(!chatEnd.before.includes('system:disconnect'), 'system:disconnect is not part of the chat contract');
  assert.ok(!guildEnd.before.includes('system:disconnect'), 'system:disconnect is not part of the guild contract');

  await sleep(QUIET_MS);
  for (const s of other.all) assert.ok(s.connected, `another user's ${s.__name} stays connected`);
});

test('DELETE /v1/sessions/{token} disconnects the guild socket and the chat socket of that session, not the JWT sockets', async () => {
  const u = await newNumericUser();
  const guild = await connectGuild(NODE1, u.session, `${u.id}@guild`);
  const chatSession = await connect(NODE2, u.session.token, { name: `${u.id}@chat(session)` });
  const chatJwt = await connect(NODE1, u.jwt, { name: `${u.id}@chat(jwt)` });
  const app = await connectApp(u, NODE2);
  await waitReady(app, u.id);
  const watches = [watchDisconnect(guild), watchDisconnect(chatSession)];

  const res = await http('DELETE', `/v1/sessions/${enc(u.session.token)}`, { node: NODE2 });
  assert.ok(res.status >= 200 && res.status < 300, `DELETE /v1/sessions → ${res.status} ${res.text}`);
  await Promise.all(watches);

  await sleep(QUIET_MS);
  assert.ok(app.connected, 'the app socket (JWT) stays connected');
  assert.ok(chatJwt.connected, 'a chat socket opened with the JWT stays connected');
  await expectNo(app, 'system:disconnect', 0);

  // They keep receiving.
  await publishToUser(u.id, 'custom:ping', { n: 'after revoke' }, { node: NODE1 });
  await waitFor(app, 'custom:ping', (d) => d.n === 'after revoke', DELIVERY_MS);
  await waitFor(chatJwt, 'custom:ping', (d) => d.n === 'after revoke', DELIVERY_MS);
});

test("each socket gets only its own contract's events (chat message:new, app messages:new, guild message:new)", async () => {
  const u = await threeSockets({ chatNode: NODE1, appNode: NODE2, guildNode: NODE1 });

  // chat: a chat room with U and W; W observes on the other node.
  const W = await newNumericUser();
  const chatId = `c-${uuid()}`;
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}`, { type: 'group', title: 'together', createdBy: u.id });
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}/members/${enc(u.id)}`, { role: 'member' });
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}/members/${enc(W.id)}`, { role: 'member' });
  const w = await connect(NODE2, W.jwt, { name: `${W.id}@chat` });
  assert.deepEqual(await ack(u.chat, 'room:join', { chatId }), { ok: true });
  assert.deepEqual(await ack(w, 'room:join', { chatId }), { ok: true });
  const clientId = uuid();
  const chatBody = `chat body ${clientId}`;
  const sent = await ack(u.chat, 'message:send', { chatId, body: chatBody, clientId });
  assert.equal(sent.ok, true, JSON.stringify(sent));
  await waitFor(w, 'message:new', (m) => m.clientId === clientId, DELIVERY_MS);
  await waitFor(u.chat, 'message:new', (m) => m.clientId === clientId, DELIVERY_MS);

  // app: a conversation message posted through the integration API.
  const X = await appUser();
  const conversationId = await putConversation();
  await addParticipant(conversationId, u.id);
  await addParticipant(conversationId, X.id);
  const msg = await postMessage(conversationId, X.id, 'app body', NODE1);
  await waitFor(u.app, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);

  // guild: a server and a channel; V observes on the other node.
  const V = await newNumericUser();
  const serverId = numericId();
  const channelId = numericId();
  await admin('PUT', `/v1/rooms/server/${serverId}`, { title: 'Guild' });
  await admin('PUT', `/v1/rooms/channel/${channelId}`, { parent: { kind: 'server', id: serverId }, title: 'general' });
  await admin('PUT', `/v1/rooms/server/${serverId}/members/${u.id}`, { role: 'member' });
  await admin('PUT', `/v1/rooms/server/${serverId}/members/${V.id}`, { role: 'member' });
  const v = await connectGuild(NODE2, V.session, `${V.id}@guild`);
  for (const s of [u.guild, v]) {
    s.emit('server:join', { serverId: Number(serverId) });
    await waitFor(s, 'server:joined', (d) => String(d.serverId) === serverId, DELIVERY_MS);
    s.emit('channel:join', { channelId: Number(channelId) });
    await waitFor(s, 'channel:joined', (d) => String(d.channelId) === channelId, DELIVERY_MS);
  }
  const guildContent = `guild content ${uuid()}`;
  u.guild.emit('message:create', { channelId: Number(channelId), content: guildContent });
  await waitFor(v, 'message:new', (m) => m.content === guildContent, DELIVERY_MS);

  await sleep(QUIET_MS);
  // chat's message:new stays in the chat namespace.
  await expectNo(u.app, 'message:new', 0, (m) => m.clientId === clientId || m.body === chatBody);
  await expectNo(u.guild, 'message:new', 0, (m) => m.clientId === clientId || m.body === chatBody);
  // app's messages:new stays in the app namespace.
  await expectNo(u.chat, 'messages:new', 0);
  await expectNo(u.guild, 'messages:new', 0);
  // guild's message:new stays in the guild namespace.
  await expectNo(u.chat, 'message:new', 0, (m) => m.content === guildContent || m.body === guildContent);
  await expectNo(u.app, 'message:new', 0, (m) => m.content === guildContent || m.body === guildContent);
  // Each delivery happened once where it belongs.
  assert.equal(count(u.chat, 'message:new', (m) => m.clientId === clientId), 1);
  assert.equal(count(u.app, 'messages:new', (p) => p.message.id === msg.id), 1);
});

test('a malformed payload in one namespace does not disturb the other namespaces', async () => {
  const u = await threeSockets({ chatNode: NODE2, appNode: NODE1, guildNode: NODE2 });

  // app: a 10 KB event (over the app's 5 KB cap).
  u.app.emit('conversations:join', { conversationId: 'x', padding: 'x'.repeat(10 * 1024) }, () => {});
  await waitSocketError(u.app, 'socket_error:payload_too_large');
  // guild: message:create with a string instead of an object.
  u.guild.emit('message:create', 'not an object');
  u.guild.emit('message:create', null);
  // chat: message:send with null.
  assertErrorAck(await ack(u.chat, 'message:send', null), 'VALIDATION_ERROR');

  await sleep(QUIET_MS);
  for (const s of u.all) assert.ok(s.connected, `${s.__name} stays connected`);
  assert.equal(count(u.chat, 'error'), 0, "the app's error is not sent to the chat socket");
  assert.equal(count(u.guild, 'error'), 0, "the app's error is not sent to the guild socket");
  assert.equal(count(u.app, 'error'), 1, 'the app socket got exactly its own error');

  // All three keep receiving.
  await publishToUser(u.id, 'custom:ping', { n: 'still here' }, { node: NODE1 });
  for (const s of u.all) await waitFor(s, 'custom:ping', (d) => d.n === 'still here', DELIVERY_MS);
});

test("the app's 5 KB cap is its own: the chat namespace accepts an 8,000-character message (over 5,120 bytes)", async () => {
  const u = await threeSockets();
  const chatId = `c-${uuid()}`;
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}`, { type: 'group', title: 'big', createdBy: u.id });
  await admin('PUT', `/v1/rooms/chat/${enc(chatId)}/members/${enc(u.id)}`, { role: 'member' });
  assert.deepEqual(await ack(u.chat, 'room:join', { chatId }), { ok: true });
  const body = 'x'.repeat(8000);
  const res = await ack(u.chat, 'message:send', { chatId, body, clientId: uuid() });
  assert.equal(res.ok, true, JSON.stringify(res).slice(0, 300));
  await sleep(200);
  assert.equal(count(u.chat, 'error'), 0);
});

test('presence is per namespace: app presence:update about the user appears when the app socket connects, not before', async () => {
  const O = await appUser('obs');
  const o = await connectApp(O, NODE2);
  const u = await newNumericUser();
  const chat = await connect(NODE1, u.jwt, { name: `${u.id}@chat` });
  const guild = await connectGuild(NODE2, u.session, `${u.id}@guild`);
  assert.ok(chat.connected && guild.connected);
  await expectNo(o, 'presence:update', PRESENCE_TTL_MS + PRESENCE_THROTTLE_MS, (s) => s.userId === u.id);

  const app = await connect(appUrl(NODE1), u.jwt, { name: `${u.id}@app` });
  const snap = await waitFor(o, 'presence:update', presenceOf(u.id, true), PRESENCE_DEADLINE_MS);
  assert.deepEqual(snap.sockets.map((e) => e.socketId), [app.id], 'only the app socket is app presence');

  // The app's PresenceSnapshot is not sent to the other namespaces' sockets.
  await expectNo(chat, 'presence:update', QUIET_MS, (s) => s && 'isOnline' in s);
  await expectNo(guild, 'presence:update', 0, (s) => s && 'isOnline' in s);

  // Closing the app socket is an app offline, although chat and guild are still connected.
  app.close();
  await waitFor(o, 'presence:update', presenceOf(u.id, false), PRESENCE_DEADLINE_MS);
  assert.ok(chat.connected && guild.connected);
});

test('all five at once: vault and tasks sockets beside the others get unscoped user events, only their own events, and are disconnected with the rest', async () => {
  const u = await threeSockets({ chatNode: NODE1, appNode: NODE2, guildNode: NODE1 });
  const tasks = await connect(`${NODE1}/tasks`, u.jwt, { name: `${u.id}@tasks` });
  assert.equal(
    (await waitFor(tasks, 'auth:success', () => true, DELIVERY_MS)).userId,
    Number(u.id),
    'tasks: auth:success names the user',
  );
  const vaultId = `v${crypto.randomBytes(8).toString('hex')}`;
  await admin('PUT', `/v1/rooms/vault/${vaultId}`, { title: 'Vault' });
  await admin('PUT', `/v1/rooms/vault/${vaultId}/members/${u.id}`, { role: 'owner' });
  const vault = await connect(`${NODE2}/vault`, u.jwt, { name: `${u.id}@vault` });
  vault.emit('vault:join', vaultId);
  assert.deepEqual(await waitFor(vault, 'vault:joined', () => true, DELIVERY_MS), { vaultId, role: 'owner' });

  // An unscoped user event reaches all four; one named for /vault only the vault socket.
  await publishToUser(u.id, 'custom:ping', { n: 'four' }, { node: NODE1 });
  for (const s of [...u.all, vault, tasks]) await waitFor(s, 'custom:ping', (d) => d.n === 'four', DELIVERY_MS);
  await publishToUser(u.id, 'custom:ping', { n: 'vault only' }, { namespace: '/vault', node: NODE2 });
  await waitFor(vault, 'custom:ping', (d) => d.n === 'vault only', DELIVERY_MS);

  // The owner's source event reaches the vault room, and no other namespace.
  const source = { id: `src-${uuid()}`, title: 'paper.pdf', fileUrl: 'https://files.example/paper.pdf', vaultId };
  u.chat.emit('source:created', { source }); // not an event of chat: ignored there
  vault.emit('source:created', { source });
  const created = await waitFor(vault, 'source:created', (p) => p.source.id === source.id, DELIVERY_MS);
  assert.equal(created.actor.userId, u.id);
  await sleep(QUIET_MS);
  assert.equal(count(vault, 'source:created', (p) => p.source.id === source.id), 1, 'once, from the vault socket only');
  for (const s of [...u.all, tasks]) {
    await expectNo(s, 'source:created', 0);
    await expectNo(s, 'custom:ping', 0, (d) => d.n === 'vault only');
  }
  // And each hears nothing of the other contracts' connect-time events.
  await expectNo(vault, 'notifications:ready', 0);
  await expectNo(vault, 'auth:success', 0);
  for (const s of u.all) await expectNo(s, 'auth:success', 0);

  // The user's disconnect reaches every namespace.
  const watches = [...u.all, vault, tasks].map((s) => watchDisconnect(s));
  const res = await http('POST', `/v1/users/${enc(u.id)}/disconnect`, { body: { reason: 'all of them' }, node: NODE2 });
  assert.ok(res.status >= 200 && res.status < 300, `disconnect → ${res.status} ${res.text}`);
  await Promise.all(watches);
  for (const s of [...u.all, vault, tasks]) assert.equal(s.connected, false, `${s.__name} disconnected`);
});
