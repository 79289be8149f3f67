// Attacks with hostile input: NUL bytes in ids and text (Postgres text refuses them, so an
// unchecked one would surface as an internal error), integration-API strings over their bounds
// (room titles > 1,024 code points, names > 256, roles > 64), unbounded room joins
// (SWITCHBOARD_MAX_ROOMS_PER_SOCKET, 8 in the security cluster), a 2 MiB frame before any
// handshake (raw WebSocket and polling), and binary attachments in namespaces other than `/`.
// Each gets the contract's validation error (never INTERNAL) or a closed connection; nothing
// is stored; other sockets carry on.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  assertErrorAck,
  assertHttpError,
  chatHistory,
  connectUser,
  eventsOf,
  http,
  join,
  mark,
  newChat,
  newUser,
  putUser,
  rid,
  uuid,
  waitAfter,
  waitForDisconnect,
} from '../helpers.mjs';
import { assertAppError, connectApp, newConversation } from '../app/helpers.mjs';
import { assertGuildError, connectGuild, joinChannel, newGuild } from '../guild/helpers.mjs';
import { assertRoomError, assertTaskError, connectTasks, joinRoom, newProject } from '../tasks/helpers.mjs';
import { connectVault, newVault } from '../vault/helpers.mjs';
import { LIMITS, closesWithin, dbQuery, firstOf, pacer, rawEngine, useControlClient, storedMessages } from './common.mjs';

useControlClient();

const enc = encodeURIComponent;
const NUL = '\u0000';

test('a NUL byte in any id gets the validation error of its contract, never an internal one', async () => {
  const chat = await newChat({ members: 1 });
  const [U] = chat.users;
  const c = await connectUser(U, NODE1);
  assertErrorAck(await ack(c, 'room:join', { chatId: `${chat.chatId}${NUL}` }), 'VALIDATION_ERROR');
  assertErrorAck(await ack(c, 'room:leave', { chatId: `${NUL}` }), 'VALIDATION_ERROR');
  assertErrorAck(await ack(c, 'message:send', { chatId: `a${NUL}b`, body: 'x', clientId: uuid() }), 'VALIDATION_ERROR');
  assertErrorAck(await ack(c, 'message:send', { chatId: chat.chatId, body: 'x', clientId: `id${NUL}` }), 'VALIDATION_ERROR');
  // chat decided that a messageId string which is no message id names no message: NOT_FOUND
  // (after the membership check); a NUL makes it such a string, and nothing worse.
  const receipt = await ack(c, 'receipt:read', { chatId: chat.chatId, messageId: `1${NUL}2` });
  assertErrorAck(receipt, receipt.error === 'NOT_FOUND' ? 'NOT_FOUND' : 'VALIDATION_ERROR');

  const conv = await newConversation({ members: 1 });
  const a = await connectApp(conv.users[0], NODE2);
  assertAppError(await ack(a, 'conversations:join', { conversationId: `${conv.conversationId}${NUL}` }), 'VALIDATION_ERROR');

  const g = await newGuild({ members: 1 });
  const gs = await connectGuild(g.users[0], NODE1);
  for (const [event, payload] of [
    ['channel:join', { channelId: `${g.channelId}${NUL}` }],
    ['server:join', { serverId: `${NUL}${g.serverId}` }],
  ]) {
    const from = mark(gs);
    gs.emit(event, payload);
    assertGuildError(await waitAfter(gs, from, 'error:validation'), 'E_VALIDATION');
  }

  const v = await newVault({ roles: ['owner'] });
  const vs = await connectVault(v.users[0], NODE2);
  let from = mark(vs);
  vs.emit('vault:join', `${v.vaultId}${NUL}`);
  const vErr = await waitAfter(vs, from, 'error');
  assert.equal(vErr.code, 'INVALID_VAULT_ID', JSON.stringify(vErr));

  const p = await newProject({ roles: ['researcher'] });
  const ts = await connectTasks(p.users[0], NODE1);
  from = mark(ts);
  ts.emit('room:join', { type: 'project', id: `${p.projectId}${NUL}` });
  assertRoomError(await waitAfter(ts, from, 'room:error'));
  from = mark(ts);
  ts.emit('message:read', { messageId: `1${NUL}` });
  assertTaskError(await waitAfter(ts, from, 'error'), 'VALIDATION_ERROR');

  // The integration API and the user routes: 400 VALIDATION_ERROR.
  for (const [method, path, body] of [
    ['PUT', `/v1/users/${enc(`u${NUL}x`)}`, { username: 'x' }],
    ['PUT', `/v1/rooms/chat/${enc(`c${NUL}`)}`, { title: 'x' }],
    ['PUT', `/v1/rooms/chat/${enc(chat.chatId)}/members/${enc(`${U.id}${NUL}`)}`, { role: 'member' }],
    ['POST', '/v1/tokens', { userId: `${U.id}${NUL}` }],
    ['POST', '/v1/sessions', { userId: `${U.id}${NUL}` }],
    ['POST', `/v1/users/${enc(`${U.id}${NUL}`)}/disconnect`, { reason: 'x' }],
    ['POST', `/v1/users/${enc(`${U.id}${NUL}`)}/events`, { event: 'x', data: {} }],
    ['POST', `/v1/rooms/chat/${enc(chat.chatId)}/messages`, { senderId: `${U.id}${NUL}`, content: 'x' }],
    ['PUT', `/v1/rooms/chat/${enc(rid('c'))}`, { title: `a${NUL}b` }],
    ['PUT', `/v1/users/${enc(rid('u'))}`, { username: `evil${NUL}name` }],
  ]) {
    const res = await http(method, path, { body, node: NODE2 });
    assertHttpError(res, 400, 'VALIDATION_ERROR');
  }
  const history = await chatHistory(`${chat.chatId}${NUL}`, U.token, {}, NODE1);
  assertHttpError(history, 400, 'VALIDATION_ERROR');
  for (const s of [c, a, gs, vs, ts]) assert.ok(s.connected, `${s.__name} survived`);
});

test('a NUL byte in message text is either refused as invalid or stored, never an internal error', async () => {
  const chat = await newChat({ members: 1 });
  const c = await connectUser(chat.users[0], NODE2);
  const res = await ack(c, 'message:send', { chatId: chat.chatId, body: `before${NUL}after`, clientId: uuid() });
  if (res.ok !== true) assertErrorAck(res, 'VALIDATION_ERROR');

  const g = await newGuild({ members: 1 });
  const gs = await connectGuild(g.users[0], NODE1);
  const gRes = await gs.timeout(10000).emitWithAck('message:create', { channelId: g.channelId, content: `x${NUL}y` });
  if (gRes.ok !== true) assert.equal(gRes.code, 'E_VALIDATION', JSON.stringify(gRes));

  const p = await newProject({ roles: ['researcher'] });
  const ts = await connectTasks(p.users[0], NODE2);
  await joinRoom(ts, 'project', p.projectId);
  const tRes = await ts.timeout(10000).emitWithAck('message:send', { roomType: 'project', roomId: p.projectId, content: `x${NUL}y`, type: 'text' });
  if (tRes.ok !== true) assert.equal(tRes.code, 'VALIDATION_ERROR', JSON.stringify(tRes));
  for (const s of [c, gs, ts]) {
    const internal = eventsOf(s).filter((e) => /INTERNAL/.test(JSON.stringify(e.data ?? null)));
    assert.deepEqual(internal, [], `${s.__name}: no internal error`);
  }
  // The integration API's send and edit take text too.
  const sender = chat.users[0].id;
  const clean = await http('POST', `/v1/rooms/chat/${enc(chat.chatId)}/messages`, { body: { senderId: sender, content: 'clean' } });
  assert.equal(clean.status, 201, clean.text.slice(0, 200));
  const api = [
    ['send', await http('POST', `/v1/rooms/chat/${enc(chat.chatId)}/messages`, { body: { senderId: sender, content: `api${NUL}` } })],
    ['edit', await http('PATCH', `/v1/rooms/chat/${enc(chat.chatId)}/messages/${clean.json.id}`, { body: { content: `edit${NUL}`, actorId: sender } })],
  ];
  const internal = api.filter(([, res]) => res.status >= 500).map(([what, res]) => `${what}: ${res.status} ${res.text.slice(0, 200)}`);
  assert.deepEqual(internal, [], "the integration API's send and edit with a NUL are answered 2xx or 400, never 5xx");
  for (const [what, res] of api) assert.ok([200, 201, 400].includes(res.status), `${what}: ${res.status}`);
});

test('integration-API strings over their bounds are 400 VALIDATION_ERROR and change nothing; at the bound they pass', async () => {
  const roomId = rid('bounds');
  assertHttpError(await http('PUT', `/v1/rooms/chat/${roomId}`, { body: { title: 't'.repeat(1025) } }), 400, 'VALIDATION_ERROR');
  assert.deepEqual(await dbQuery('SELECT id FROM rooms WHERE kind = $1 AND id = $2', ['chat', roomId]), [], 'the refused room was not created');
  assert.equal((await http('PUT', `/v1/rooms/chat/${roomId}`, { body: { title: '😀'.repeat(1024) } })).status, 200, '1,024 code points (emoji) pass');
  assertHttpError(await http('PUT', `/v1/rooms/chat/${roomId}`, { body: { title: 'é'.repeat(1025) } }), 400, 'VALIDATION_ERROR');
  assertHttpError(await http('PUT', `/v1/rooms/chat/${roomId}`, { body: { title: 'x', type: 'y'.repeat(65) } }), 400, 'VALIDATION_ERROR');
  const [room] = await dbQuery('SELECT title FROM rooms WHERE kind = $1 AND id = $2', ['chat', roomId]);
  assert.equal(room.title, '😀'.repeat(1024), 'the refused updates left the title alone');

  const userId = await putUser(rid('bounds'), { username: 'original' });
  assertHttpError(await http('PUT', `/v1/users/${userId}`, { body: { username: 'n'.repeat(257) } }), 400, 'VALIDATION_ERROR');
  assertHttpError(await http('PUT', `/v1/users/${userId}`, { body: { username: 'ok', firstName: 'f'.repeat(257) } }), 400, 'VALIDATION_ERROR');
  assertHttpError(await http('PUT', `/v1/users/${userId}`, { body: { username: 'ok', role: 'r'.repeat(65) } }), 400, 'VALIDATION_ERROR');
  const [user] = await dbQuery('SELECT username, first_name, role FROM users WHERE id = $1', [userId]);
  assert.deepEqual(user, { username: 'original', first_name: null, role: null }, 'the refused updates changed nothing');
  assert.equal((await http('PUT', `/v1/users/${userId}`, { body: { username: 'n'.repeat(256) } })).status, 200, '256 code points pass');

  assertHttpError(await http('PUT', `/v1/rooms/chat/${roomId}/members/${userId}`, { body: { role: 'm'.repeat(65) } }), 400, 'VALIDATION_ERROR');
  assert.deepEqual(await dbQuery('SELECT role FROM memberships WHERE room_id = $1', [roomId]), [], 'no membership from the refused grant');
  assertHttpError(await http('PUT', `/v1/users/${'u'.repeat(300)}`, { body: { username: 'x' } }), 400, 'VALIDATION_ERROR');
});

test(`a socket holds at most ${LIMITS.maxRoomsPerSocket} rooms: further joins are VALIDATION_ERROR, a leave frees one, another socket has its own`, async () => {
  const U = await newUser('rooms');
  const chats = [];
  for (let i = 0; i < LIMITS.maxRoomsPerSocket + 3; i++) {
    const chatId = rid('many');
    await http('PUT', `/v1/rooms/chat/${chatId}`, { body: { title: chatId } });
    await http('PUT', `/v1/rooms/chat/${chatId}/members/${U.id}`, { body: { role: 'member' } });
    chats.push(chatId);
  }
  const s = await connectUser(U, NODE1);
  const tick = pacer();
  const outcomes = [];
  for (const chatId of chats) {
    await tick();
    outcomes.push(await ack(s, 'room:join', { chatId }));
  }
  const ok = outcomes.filter((r) => r.ok === true).length;
  const firstRefused = outcomes.findIndex((r) => r.ok !== true);
  assert.ok(firstRefused > 0, `some joins succeed, then one is refused: ${JSON.stringify(outcomes.map((r) => r.ok))}`);
  assert.ok(ok <= LIMITS.maxRoomsPerSocket, `at most the cap of rooms: ${ok}`);
  for (const r of outcomes.slice(firstRefused)) assertErrorAck(r, 'VALIDATION_ERROR');

  // Joining a room already held is not a new room; leaving one frees a place.
  await tick();
  assert.deepEqual(await ack(s, 'room:join', { chatId: chats[0] }), { ok: true });
  await tick();
  assert.deepEqual(await ack(s, 'room:leave', { chatId: chats[0] }), { ok: true });
  await tick();
  assert.deepEqual(await ack(s, 'room:join', { chatId: chats[firstRefused] }), { ok: true }, 'a leave frees a place');
  // Another socket of the same user has its own rooms.
  const other = await connectUser(U, NODE2);
  await join(other, chats[chats.length - 1]);

  // guild channels count the same way.
  const g = await newGuild({ members: 1, channels: LIMITS.maxRoomsPerSocket + 2 });
  const gs = await connectGuild(g.users[0], NODE2);
  let joined = 0;
  let refusal = null;
  for (const channelId of g.channelIds) {
    await tick();
    const from = mark(gs);
    gs.emit('channel:join', { channelId });
    const got = await firstOf(gs, from, ['channel:joined', 'error:validation', 'error:permission', 'error:not_found']);
    if (got.event === 'channel:joined') joined++;
    else {
      refusal = got.data;
      break;
    }
  }
  assert.ok(refusal, `guild: a join beyond the cap is refused (${joined} joined)`);
  assertGuildError(refusal, 'E_VALIDATION');
  assert.ok(joined <= LIMITS.maxRoomsPerSocket);
  assert.ok(gs.connected && s.connected);
});

test('a 2 MiB frame before any handshake closes the raw WebSocket; a 2 MiB polling body is refused; other sockets carry on', async () => {
  const chat = await newChat({ members: 2 });
  const bystander = await connectUser(chat.users[0], NODE2);
  const big = 'x'.repeat(2 * 1024 * 1024);
  for (const [what, frame] of [
    ['a message packet', `4${big}`],
    ['a Socket.IO CONNECT', `40{"token":"${big}"}`],
    ['an event packet', `42["message:send",{"body":"${big}"}]`],
  ]) {
    const raw = rawEngine(NODE1);
    const ws = await raw.opened;
    const before = raw.messages.length;
    ws.send(frame);
    assert.ok(await closesWithin(raw.closed, 5000), `${what} of 2 MiB: the connection is closed`);
    assert.deepEqual(raw.messages.slice(before).filter((m) => m !== '2'), [], `${what}: nothing answered`);
  }
  // Polling: a fresh Engine.IO session, then a 2 MiB POST.
  const open = await fetch(new URL('/socket.io/?EIO=4&transport=polling', NODE2), { signal: AbortSignal.timeout(5000) });
  const text = await open.text();
  const sid = JSON.parse(text.slice(1)).sid;
  const post = await fetch(new URL(`/socket.io/?EIO=4&transport=polling&sid=${sid}`, NODE2), {
    method: 'POST',
    body: `4${big}`,
    headers: { 'content-type': 'text/plain;charset=UTF-8' },
    signal: AbortSignal.timeout(10000),
  }).catch((e) => ({ status: 0, error: e }));
  assert.notEqual(post.status, 200, `a 2 MiB polling body is not accepted (${post.status})`);
  const res = await ack(bystander, 'room:join', { chatId: chat.chatId });
  assert.deepEqual(res, { ok: true }, 'the bystander still works');
});

test('binary attachments are refused in every namespace (the socket is closed), and other sockets carry on', async () => {
  const g = await newGuild({ members: 2 });
  const p = await newProject({ roles: ['researcher'] });
  const v = await newVault({ roles: ['owner'] });
  const conv = await newConversation({ members: 1 });
  const bystander = await connectGuild(g.users[1], NODE2);
  await joinChannel(bystander, g.channelId);
  const attackers = [
    [await connectGuild(g.users[0], NODE1), 'message:create', { channelId: g.channelId, content: Buffer.from('bin') }],
    [await connectTasks(p.users[0], NODE1), 'message:send', Buffer.alloc(32)],
    [await connectVault(v.users[0], NODE2), 'vault:join', Buffer.from(v.vaultId)],
    [await connectApp(conv.users[0], NODE2), 'conversations:join', { conversationId: Buffer.alloc(4) }],
  ];
  for (const [socket, event, payload] of attackers) {
    const gone = waitForDisconnect(socket, 5000);
    socket.emit(event, payload);
    await gone;
    assert.equal(socket.connected, false, `${socket.__name}: closed`);
  }
  const stored = await storedMessages('channel', g.channelId);
  assert.deepEqual(stored, [], 'nothing stored from the binary packet');
  const res = await bystander.timeout(10000).emitWithAck('message:create', { channelId: g.channelId, content: 'still here' });
  assert.equal(res.ok, true, JSON.stringify(res));
});
