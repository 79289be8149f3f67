// Reconnection and backfill (002): after a reconnect (to the other node) the client re-joins and
// fetches what it missed from GET /v1/chats/{chatId}/messages with its own token; paging with
// after= (oldest first) and before= (newest first); the generic history route; refusals.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  assertChatMessage,
  assertHttpError,
  assertIso,
  chatHistory,
  closeAll,
  connectUser,
  http,
  join,
  newChat,
  newUser,
  rid,
  send,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

const enc = encodeURIComponent;

/** A on node 1 and B on node 2 in one chat; A sent `n` messages; answers them in order. */
async function chatWithMessages(n) {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await connectUser(A, NODE1);
  await join(a, chat.chatId);
  const sent = [];
  for (let i = 0; i < n; i++) sent.push(await send(a, chat.chatId, `message ${i}`));
  return { ...chat, A, B, a, sent };
}

function assertPage(res, expectedIds, { hasMore }) {
  assert.equal(res.status, 200, res.text.slice(0, 300));
  assert.ok(Array.isArray(res.json?.messages), `{ messages, hasMore, nextCursor }: ${res.text.slice(0, 300)}`);
  assert.deepEqual(
    res.json.messages.map((m) => m._id),
    expectedIds,
    'the page holds exactly these messages in this order',
  );
  assert.equal(res.json.hasMore, hasMore, 'hasMore');
  assert.ok('nextCursor' in res.json, 'nextCursor is present');
  if (hasMore) {
    assert.equal(typeof res.json.nextCursor, 'string', 'nextCursor is a string');
    assert.match(res.json.nextCursor, /^[0-9]+$/, 'nextCursor is a message id as a decimal string');
  }
}

test('B misses 3 messages while disconnected, reconnects to the other node and backfills with after=', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const { chatId } = chat;
  const a = await connectUser(A, NODE1);
  let b = await connectUser(B, NODE2);
  await join(a, chatId);
  await join(b, chatId);
  const seen = await send(a, chatId, 'seen live');
  const live = await waitFor(b, 'message:new', (m) => m.clientId === seen.clientId, 5000);
  const lastSeenId = live._id;

  b.close();
  const missed = [];
  for (let i = 0; i < 3; i++) missed.push(await send(a, chatId, `missed ${i}`));

  b = await connectUser(B, NODE1); // the other node this time
  await join(b, chatId);
  const res = await chatHistory(chatId, B.token, { after: lastSeenId }, NODE1);
  assertPage(res, missed.map((m) => m.serverId), { hasMore: false });
  res.json.messages.forEach((m, i) => {
    assertChatMessage(m, {
      chatId,
      _id: missed[i].serverId,
      body: `missed ${i}`,
      senderId: A.id,
      clientId: missed[i].clientId,
    });
  });

  // Live delivery resumes after the re-join.
  const next = await send(a, chatId, 'live again');
  await waitFor(b, 'message:new', (m) => m.clientId === next.clientId, 5000);
});

test('history items have the shape of message:new', async () => {
  const { chatId, B, sent } = await chatWithMessages(1);
  const b = await connectUser(B, NODE2);
  await join(b, chatId);
  const res = await chatHistory(chatId, B.token, { limit: 10 }, NODE2);
  assert.equal(res.status, 200, res.text);
  const [m] = res.json.messages;
  assertChatMessage(m, { chatId, _id: sent[0].serverId, body: 'message 0', clientId: sent[0].clientId });
  for (const key of Object.keys(m)) {
    assert.ok(['chatId', '_id', 'body', 'senderId', 'createdAt', 'clientId'].includes(key), `unexpected key ${key}`);
  }
});

test('after= pages oldest first with hasMore and nextCursor', async () => {
  const { chatId, B, sent } = await chatWithMessages(5);
  const ids = sent.map((m) => m.serverId);
  const page1 = await chatHistory(chatId, B.token, { after: ids[0], limit: 2 });
  assertPage(page1, [ids[1], ids[2]], { hasMore: true });
  const page2 = await chatHistory(chatId, B.token, { after: page1.json.nextCursor, limit: 2 }, NODE2);
  assertPage(page2, [ids[3], ids[4]], { hasMore: false });
});

test('before= pages newest first with hasMore and nextCursor', async () => {
  const { chatId, B, sent } = await chatWithMessages(5);
  const ids = sent.map((m) => m.serverId);
  const page1 = await chatHistory(chatId, B.token, { before: ids[4], limit: 2 });
  assertPage(page1, [ids[3], ids[2]], { hasMore: true });
  const page2 = await chatHistory(chatId, B.token, { before: page1.json.nextCursor, limit: 2 }, NODE2);
  assertPage(page2, [ids[1], ids[0]], { hasMore: false });
});

test('neither cursor: the newest messages', async () => {
  const { chatId, B, sent } = await chatWithMessages(4);
  const ids = sent.map((m) => m.serverId);
  const res = await chatHistory(chatId, B.token, { limit: 2 });
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.json.messages.map((m) => m._id).sort(), [ids[2], ids[3]].sort());
  assert.equal(res.json.hasMore, true);
  const all = await chatHistory(chatId, B.token, {});
  assert.equal(all.status, 200, all.text);
  assert.deepEqual(all.json.messages.map((m) => m._id).sort(), [...ids].sort(), 'default limit covers them all');
  assert.equal(all.json.hasMore, false);
});

test('the generic GET /v1/rooms/chat/{id}/messages works with the user token and with the admin token', async () => {
  const { chatId, A, B, sent } = await chatWithMessages(3);
  const ids = sent.map((m) => Number(m.serverId));
  for (const [who, token] of [['user', B.token], ['admin', undefined]]) {
    const res = await http('GET', `/v1/rooms/chat/${enc(chatId)}/messages?after=${ids[0]}&limit=100`, {
      node: NODE2,
      ...(token === undefined ? {} : { token }),
    });
    assert.equal(res.status, 200, `${who}: ${res.text.slice(0, 300)}`);
    assert.ok(Array.isArray(res.json.messages), who);
    assert.equal(typeof res.json.hasMore, 'boolean', who);
    assert.ok('nextCursor' in res.json, who);
    assert.deepEqual(res.json.messages.map((m) => m.id), [ids[1], ids[2]], `${who}: oldest first, integer ids`);
    const m = res.json.messages[0];
    assert.equal(m.roomKind, 'chat');
    assert.equal(m.roomId, chatId);
    assert.equal(m.senderId, A.id);
    assert.equal(m.content, 'message 1');
    assert.equal(m.clientId, sent[1].clientId);
    assert.equal(m.type, 'text');
    assert.equal(typeof m.seq, 'number');
    assertIso(m.createdAt);
  }
  const forbidden = await http('GET', `/v1/rooms/chat/${enc(chatId)}/messages`, { token: (await newUser()).token });
  assertHttpError(forbidden, 403);
});

test('a non-member and an unknown chat get 403; a missing credential gets 401', async () => {
  const { chatId, B } = await chatWithMessages(1);
  const outsider = await newUser();
  for (const node of [NODE1, NODE2]) {
    const res = await chatHistory(chatId, outsider.token, {}, node);
    assert.equal(res.status, 403, res.text);
  }
  const unknown = await chatHistory(rid('c-missing'), B.token, {});
  assert.equal(unknown.status, 403, unknown.text);
  const anonymous = await http('GET', `/v1/chats/${enc(chatId)}/messages`, { token: null });
  assert.equal(anonymous.status, 401, anonymous.text);
});

test('limit outside 1..100 is 400', async () => {
  const { chatId, B } = await chatWithMessages(1);
  for (const limit of [0, 101, -1]) {
    const res = await chatHistory(chatId, B.token, { limit });
    assert.equal(res.status, 400, `limit=${limit}: ${res.status} ${res.text}`);
    const generic = await http('GET', `/v1/rooms/chat/${enc(chatId)}/messages?limit=${limit}`, { token: B.token });
    assertHttpError(generic, 400);
  }
  for (const limit of [1, 100]) {
    const res = await chatHistory(chatId, B.token, { limit });
    assert.equal(res.status, 200, `limit=${limit}: ${res.text}`);
  }
});
