// Attacks on authorization: insecure direct object references (a user joining, sending to,
// reading, marking read, editing or deleting in a room they are not a member of, in every
// dialect, by naming its id) and identity spoofing (a payload naming another user as the
// sender, typer, reader, actor or heartbeat owner). Every reference is refused with the
// dialect's error, nothing is stored (checked in Postgres), nothing reaches the room's members,
// and whatever is broadcast names the socket's own user.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  NODE1,
  NODE2,
  QUIET_MS,
  ack,
  admin,
  assertErrorAck,
  chatHistory,
  connectUser,
  eventsAfter,
  expectNoAfter,
  http,
  join,
  mark,
  newChat,
  send,
  uuid,
  waitAfter,
} from '../helpers.mjs';
import { assertAppError, connectApp, joinConversation, newConversation } from '../app/helpers.mjs';
import { assertGuildError, connectGuild, joinChannel, newGuild, postMessage as postGuildMessage } from '../guild/helpers.mjs';
import {
  assertRoomError,
  assertTaskError,
  connectTasks,
  grant,
  joinRoom,
  newProject,
  postMessage as postTaskMessage,
  putProject,
  tasksUser,
} from '../tasks/helpers.mjs';
import { ACCESS_DENIED, connectVault, joinVault, newVault, sourceOf } from '../vault/helpers.mjs';
import { dbQuery, firstOf, useControlClient, storedMessages } from './common.mjs';

useControlClient();

const enc = encodeURIComponent;

test('chat: a non-member naming a chat cannot join, send, mark read, type, read its history or edit/delete its messages; nothing stored or delivered', async () => {
  const victim = await newChat({ members: 2 });
  const [X, Y] = victim.users;
  const own = await newChat({ members: 1 });
  const [M] = own.users; // the attacker, member of another chat only
  const x = await connectUser(X, NODE1);
  const y = await connectUser(Y, NODE2);
  await join(y, victim.chatId);
  const original = await send(x, victim.chatId, 'private to X and Y');
  const before = await storedMessages('chat', victim.chatId);
  const fromY = mark(y);

  const m = await connectUser(M, NODE1);
  const chatId = victim.chatId;
  assertErrorAck(await ack(m, 'room:join', { chatId }), 'FORBIDDEN');
  assertErrorAck(await ack(m, 'message:send', { chatId, body: 'injected', clientId: uuid() }), 'FORBIDDEN');
  assertErrorAck(await ack(m, 'receipt:read', { chatId, messageId: original.serverId }), 'FORBIDDEN');
  // Typing is refused silently; the members must not see it.
  m.emit('typing:start', { chatId });
  // The same ids through the HTTP user routes.
  for (const res of [
    await chatHistory(chatId, M.token, {}, NODE2),
    await http('GET', `/v1/chats/${enc(chatId)}/receipts`, { token: M.token }),
    await http('GET', `/v1/rooms/chat/${enc(chatId)}/messages`, { token: M.token, node: NODE2 }),
  ]) {
    assert.equal(res.status, 403, `a non-member reading the chat over HTTP: ${res.status} ${res.text.slice(0, 200)}`);
  }
  // Edit and delete in the integration API are checked against actorId too.
  const patch = await http('PATCH', `/v1/rooms/chat/${enc(chatId)}/messages/${original.serverId}`, { body: { content: 'defaced', actorId: M.id } });
  assert.ok([403, 404].includes(patch.status), `PATCH by a non-member actor: ${patch.status} ${patch.text.slice(0, 200)}`);
  const del = await http('DELETE', `/v1/rooms/chat/${enc(chatId)}/messages/${original.serverId}?actorId=${enc(M.id)}`);
  assert.ok([403, 404].includes(del.status), `DELETE by a non-member actor: ${del.status} ${del.text.slice(0, 200)}`);

  await expectNoAfter(y, fromY, 'message:new', QUIET_MS);
  assert.equal(eventsAfter(y, fromY, 'typing:update').length, 0, 'no typing from the outsider reached the chat');
  assert.equal(eventsAfter(y, fromY, 'receipt:update').length, 0, 'no receipt from the outsider reached the chat');
  assert.deepEqual(await storedMessages('chat', chatId), before, 'the chat holds exactly what it held, unedited, undeleted');
  const cursors = await dbQuery('SELECT count(*)::int AS n FROM read_cursors WHERE user_id = $1', [M.id]);
  assert.equal(cursors[0].n, 0, 'no read cursor of the outsider was stored');
  const members = await dbQuery('SELECT count(*)::int AS n FROM memberships WHERE room_kind = $1 AND room_id = $2 AND user_id = $3', ['chat', chatId, M.id]);
  assert.equal(members[0].n, 0, 'the outsider was not made a member');
});

test('tasks: a member of another project (a manager there) cannot join, send, edit, delete or mark read in this project or its study; nothing changes', async () => {
  const p = await newProject({ roles: ['researcher'] });
  const [X] = p.users;
  const target = await postTaskMessage('project', p.projectId, X.id, 'the original');
  const M = await tasksUser({ role: 'manager' });
  const ownProject = await putProject();
  await grant('project', ownProject, M, 'manager');
  const x = await connectTasks(X, NODE2);
  await joinRoom(x, 'project', p.projectId);
  const fromX = mark(x);
  const before = await storedMessages('project', p.projectId);

  const m = await connectTasks(M, NODE1);
  await joinRoom(m, 'project', ownProject);
  for (const [type, id] of [
    ['project', p.projectId],
    ['study', p.studyId],
  ]) {
    const from = mark(m);
    m.emit('room:join', { type, id });
    assertRoomError(await waitAfter(m, from, 'room:error'), { roomType: type, roomId: id });
  }
  const attempts = [
    ['message:send', { roomType: 'project', roomId: p.projectId, content: 'injected', type: 'text' }],
    ['message:send', { roomType: 'study', roomId: p.studyId, content: 'injected', type: 'text' }],
    ['message:edit', { messageId: target.id, content: 'defaced' }],
    ['message:delete', { messageId: target.id }],
    ['message:read', { messageId: target.id }],
    ['typing:start', { roomType: 'project', roomId: p.projectId }],
  ];
  for (const [event, payload] of attempts) {
    const from = mark(m);
    m.emit(event, payload);
    const err = await waitAfter(m, from, 'error');
    assert.ok(['FORBIDDEN', 'NOT_JOINED', 'NOT_FOUND'].includes(err.code), `${event}: refused, got ${JSON.stringify(err)}`);
    assertTaskError(err, err.code);
  }
  const history = await http('GET', `/v1/rooms/project/${p.projectId}/messages`, { token: M.token });
  assert.equal(history.status, 403, `history of a foreign project: ${history.status}`);

  await expectNoAfter(x, fromX, 'message:new', QUIET_MS);
  for (const name of ['message:edited', 'message:deleted', 'message:read', 'typing:started']) {
    assert.equal(eventsAfter(x, fromX, name).length, 0, `no ${name} reached the project`);
  }
  assert.deepEqual(await storedMessages('project', p.projectId), before, 'the project holds exactly what it held');
  assert.deepEqual(await storedMessages('study', p.studyId), [], 'nothing was stored in the study');
  const cursors = await dbQuery('SELECT count(*)::int AS n FROM read_cursors WHERE user_id = $1', [String(M.id)]);
  assert.equal(cursors[0].n, 0, 'no read cursor of the outsider');
});

test('guild: a member of another server cannot join, send to or type in this server or its channel; nothing stored', async () => {
  const g = await newGuild({ members: 1 });
  const other = await newGuild({ members: 1 });
  const [X] = g.users;
  const [M] = other.users;
  const x = await connectGuild(X, NODE1);
  await joinChannel(x, g.channelId);
  await postGuildMessage(g.channelId, X.id, 'before');
  const before = await storedMessages('channel', g.channelId);
  const fromX = mark(x);

  const m = await connectGuild(M, NODE2);
  const attempts = [
    ['server:join', { serverId: g.serverId }, 'E_FORBIDDEN'],
    ['channel:join', { channelId: g.channelId }, 'E_FORBIDDEN'],
    ['message:create', { channelId: g.channelId, content: 'injected' }, 'E_FORBIDDEN'],
    ['typing:start', { channelId: g.channelId }, 'E_FORBIDDEN'],
    // A channel of the other server named as this one's: still the membership of its own server.
    ['message:create', { channelId: g.channelId, serverId: other.serverId, content: 'via a foreign serverId' }, 'E_FORBIDDEN'],
  ];
  for (const [event, payload, code] of attempts) {
    const from = mark(m);
    m.emit(event, payload);
    const err = await waitAfter(m, from, 'error:permission');
    assertGuildError(err, code);
  }
  // The attacker's own session token on the history route: never the channel's messages.
  const history = await http('GET', `/v1/rooms/channel/${g.channelId}/messages`, { token: M.token });
  assert.ok([401, 403].includes(history.status), `history of a foreign channel: ${history.status} ${history.text.slice(0, 200)}`);
  await expectNoAfter(x, fromX, 'message:new', QUIET_MS);
  assert.equal(eventsAfter(x, fromX, 'typing:update').length, 0);
  assert.deepEqual(await storedMessages('channel', g.channelId), before, 'the channel holds exactly what it held');
});

test('vault and app: naming a foreign vault or conversation is refused; a mismatched vaultId cannot smuggle a source into another vault', async () => {
  const v = await newVault({ roles: ['owner'] });
  const mine = await newVault({ roles: ['owner'] });
  const [X] = v.users;
  const [M] = mine.users;
  const x = await connectVault(X, NODE1);
  await joinVault(x, v.vaultId, 'owner');
  const fromX = mark(x);
  const m = await connectVault(M, NODE2);
  await joinVault(m, mine.vaultId, 'owner');

  let from = mark(m);
  m.emit('vault:join', v.vaultId);
  let err = await waitAfter(m, from, 'error');
  assert.deepEqual([err.message, err.code], ACCESS_DENIED, JSON.stringify(err));
  for (const payload of [
    { source: sourceOf(v.vaultId) },
    { vaultId: v.vaultId, source: sourceOf(undefined) },
    // Authorized for the top-level vault, aimed at another one inside the source.
    { vaultId: mine.vaultId, source: sourceOf(v.vaultId) },
    { source: sourceOf(v.vaultId), vaultId: mine.vaultId },
  ]) {
    from = mark(m);
    m.emit('source:created', payload);
    // Refused, or (authorized for the attacker's own vault) delivered there only.
    const outcome = await firstOf(m, from, ['error', 'source:created']);
    if (outcome.event === 'error') assert.ok(['FORBIDDEN', 'VALIDATION_ERROR'].includes(outcome.data.code), JSON.stringify(outcome.data));
    else assert.equal(outcome.data.source?.vaultId, mine.vaultId, `kept in the attacker's vault: ${JSON.stringify(outcome.data)}`);
  }
  from = mark(m);
  m.emit('source:deleted', { sourceId: 'anything', vaultId: v.vaultId });
  err = await waitAfter(m, from, 'error');
  assert.equal(err.code, 'FORBIDDEN', JSON.stringify(err));
  await expectNoAfter(x, fromX, 'source:created', QUIET_MS);
  assert.equal(eventsAfter(x, fromX, 'source:deleted').length, 0, 'nothing reached the victim vault');

  // app: a participant of one conversation names another.
  const conv = await newConversation({ members: 1 });
  const mineConv = await newConversation({ members: 1 });
  const victim = await connectApp(conv.users[0], NODE2);
  await joinConversation(victim, conv.conversationId);
  const a = await connectApp(mineConv.users[0], NODE1);
  assertAppError(await ack(a, 'conversations:join', { conversationId: conv.conversationId }), 'FORBIDDEN');
  // The refused join put the attacker in no room: a room publish does not reach them.
  const fromA = mark(a);
  await admin('POST', `/v1/rooms/conversation/${enc(conv.conversationId)}/events`, { event: 'probe', data: { n: 1 } });
  await waitAfter(victim, 0, 'probe');
  await expectNoAfter(a, fromA, 'probe', QUIET_MS);
});

test('spoofing: a userId, sender, user or actor in a payload never changes who the server says acted', async () => {
  const chat = await newChat({ members: 3 });
  const [X, M, Y] = chat.users; // M spoofs X; Y watches
  const chatId = chat.chatId;
  const m = await connectUser(M, NODE1);
  const y = await connectUser(Y, NODE2);
  await join(m, chatId);
  await join(y, chatId);
  const fromY = mark(y);

  // chat: typing and sends name the socket's user, whatever the payload says.
  m.emit('typing:start', { chatId, userId: X.id, user: X.id, senderId: X.id });
  const typing = await waitAfter(y, fromY, 'typing:update');
  assert.equal(typing.userId, M.id, `typing:update names the socket's user: ${JSON.stringify(typing)}`);
  const clientId = uuid();
  const res = await ack(m, 'message:send', { chatId, body: 'spoof', clientId, senderId: X.id, userId: X.id, sender: { id: X.id } });
  assert.equal(res.ok, true, JSON.stringify(res));
  const msg = await waitAfter(y, fromY, 'message:new', (d) => d.clientId === clientId);
  assert.equal(msg.senderId, M.id, `message:new names the real sender: ${JSON.stringify(msg)}`);
  const rec = await ack(m, 'receipt:read', { chatId, messageId: msg._id, userId: X.id });
  assert.equal(rec.ok, true, JSON.stringify(rec));
  const receipt = await waitAfter(y, fromY, 'receipt:update');
  assert.equal(receipt.userId, M.id, `receipt:update names the reader: ${JSON.stringify(receipt)}`);
  assert.equal(eventsAfter(y, fromY, 'typing:update', (u) => u.userId === X.id).length, 0, 'X never appeared to type');
  const stored = await dbQuery('SELECT sender_id FROM messages WHERE client_id = $1', [clientId]);
  assert.deepEqual(stored, [{ sender_id: M.id }], 'stored under the real sender');

  // guild: typing:update carries the socket's user and username.
  const g = await newGuild({ members: 2 });
  const [GX, GM] = g.users;
  const gx = await connectGuild(GX, NODE2);
  await joinChannel(gx, g.channelId);
  const gm = await connectGuild(GM, NODE1);
  const fromGX = mark(gx);
  gm.emit('typing:start', { channelId: g.channelId, userId: GX.id, username: GX.username, user: { id: GX.id, username: GX.username } });
  const gt = await waitAfter(gx, fromGX, 'typing:update');
  assert.equal(gt.userId, GM.id, `guild typing names the typer: ${JSON.stringify(gt)}`);
  assert.equal(gt.username, GM.username);

  // tasks: typing:started carries the socket's user.
  const p = await newProject({ roles: ['researcher', 'researcher'] });
  const [TX, TM] = p.users;
  const tx = await connectTasks(TX, NODE1);
  await joinRoom(tx, 'project', p.projectId);
  const tm = await connectTasks(TM, NODE2);
  const fromTX = mark(tx);
  tm.emit('typing:start', { roomType: 'project', roomId: p.projectId, userId: TX.id, user: { id: TX.id, firstName: TX.firstName } });
  const tt = await waitAfter(tx, fromTX, 'typing:started');
  assert.equal(tt.user.id, TM.id, `tasks typing names the typer: ${JSON.stringify(tt)}`);
  assert.equal(tt.user.firstName, TM.firstName);

  // app: a heartbeat naming someone else refreshes the sender only.
  const conv = await newConversation({ members: 2 });
  const [AX, AM] = conv.users; // AX never connects
  const watcher = await connectApp((await newConversation({ members: 1 })).users[0], NODE1);
  const am = await connectApp(AM, NODE2);
  const fromW = mark(watcher);
  am.emit('presence:heartbeat', { userId: AX.id, user: AX.id });
  await waitAfter(watcher, fromW, 'presence:update', (p2) => p2.userId === AM.id);
  await expectNoAfter(watcher, fromW, 'presence:update', QUIET_MS, (p2) => p2.userId === AX.id);
});
