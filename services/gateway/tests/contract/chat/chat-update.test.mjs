// chat:update (002): emitted when a chat's title or membership changes through the integration
// API, to the chat room and to each member's user room, each socket receiving it once; a removed
// member receives it too and is cut off from the chat at once, on every node.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  addMember,
  assertErrorAck,
  assertIso,
  closeAll,
  connectUser,
  count,
  expectNo,
  join,
  newUser,
  putChat,
  removeMember,
  rid,
  send,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

const sorted = (xs) => [...xs].sort();

function assertChat(update, expected) {
  assert.deepEqual(Object.keys(update), ['chat'], `chat:update is { chat }: ${JSON.stringify(update)}`);
  const chat = update.chat;
  assert.deepEqual(
    Object.keys(chat).sort(),
    ['_id', 'createdAt', 'createdBy', 'memberIds', 'title', 'type', 'updatedAt'],
    JSON.stringify(chat),
  );
  assert.equal(chat._id, expected._id);
  assert.equal(chat.type, expected.type);
  assert.equal(chat.title, expected.title);
  assert.ok(Array.isArray(chat.memberIds));
  assert.deepEqual(sorted(chat.memberIds), sorted(expected.memberIds));
  assert.equal(chat.createdBy, expected.createdBy);
  assertIso(chat.createdAt, 'createdAt');
  assertIso(chat.updatedAt, 'updatedAt');
}

/**
 * A group chat of A and B (A created it). Sockets: a1 (node 1, joined to the chat room), a2
 * (node 2, user room only), b1 (node 2, joined), b2 (node 1, user room only).
 */
async function scene() {
  const A = await newUser();
  const B = await newUser();
  const chatId = rid('c');
  await putChat(chatId, { type: 'group', title: 'Original', createdBy: A.id });
  await addMember(chatId, A.id);
  await addMember(chatId, B.id);
  const a1 = await connectUser(A, NODE1);
  const a2 = await connectUser(A, NODE2);
  const b1 = await connectUser(B, NODE2);
  const b2 = await connectUser(B, NODE1);
  await join(a1, chatId);
  await join(b1, chatId);
  return { chatId, A, B, a1, a2, b1, b2 };
}

async function expectOnce(socket, predicate) {
  const update = await waitFor(socket, 'chat:update', predicate, 5000);
  await sleep(1000);
  assert.equal(count(socket, 'chat:update', predicate), 1, `${socket.__name} got chat:update exactly once`);
  return update;
}

test('a title change reaches every member socket once, joined to the chat room or not', async () => {
  const { chatId, A, B, a1, a2, b1, b2 } = await scene();
  await putChat(chatId, { type: 'group', title: 'Renamed', createdBy: A.id });
  const renamed = (u) => u.chat?._id === chatId && u.chat?.title === 'Renamed';
  for (const s of [a1, a2, b1, b2]) {
    const update = await expectOnce(s, renamed);
    assertChat(update, { _id: chatId, type: 'group', title: 'Renamed', memberIds: [A.id, B.id], createdBy: A.id });
  }
});

test('an added member gets chat:update (with themselves in memberIds), and so do the others, once each', async () => {
  const { chatId, A, B, a1, a2, b1, b2 } = await scene();
  const C = await newUser();
  const c1 = await connectUser(C, NODE2);
  const c2 = await connectUser(C, NODE1);
  await addMember(chatId, C.id);
  const withC = (u) => u.chat?._id === chatId && u.chat?.memberIds?.includes(C.id);
  for (const s of [c1, c2, a1, a2, b1, b2]) {
    const update = await expectOnce(s, withC);
    assertChat(update, {
      _id: chatId,
      type: 'group',
      title: 'Original',
      memberIds: [A.id, B.id, C.id],
      createdBy: A.id,
    });
  }
  // The new member can take part at once.
  await join(c1, chatId);
  const sent = await send(a1, chatId, 'welcome');
  await waitFor(c1, 'message:new', (m) => m.clientId === sent.clientId, 5000);
});

test('a removed member gets chat:update once (without them) and is cut off from the chat on every node', async () => {
  const { chatId, A, B, a1, a2, b1, b2 } = await scene();
  await removeMember(chatId, B.id);
  const withoutB = (u) => u.chat?._id === chatId && Array.isArray(u.chat?.memberIds) && !u.chat.memberIds.includes(B.id);
  for (const s of [b1, b2, a1, a2]) {
    const update = await expectOnce(s, withoutB);
    assertChat(update, { _id: chatId, type: 'group', title: 'Original', memberIds: [A.id], createdBy: A.id });
  }

  // b1 had joined the chat room on node 2; A sends from node 1: the room gets it, B does not.
  const sent = await send(a1, chatId, 'after the removal');
  await waitFor(a1, 'message:new', (m) => m.clientId === sent.clientId, 5000);
  await expectNo(b1, 'message:new', 1000, (m) => m.clientId === sent.clientId);
  await expectNo(b2, 'message:new', 0, (m) => m.clientId === sent.clientId);

  // Typing and receipts of the chat no longer reach B either.
  a1.emit('typing:start', { chatId });
  await expectNo(b1, 'typing:update', 800, (u) => u.chatId === chatId);

  // And B can no longer send, nor join again.
  for (const s of [b1, b2]) {
    assertErrorAck(await ack(s, 'message:send', { chatId, body: 'still here?', clientId: uuid() }), 'FORBIDDEN');
    assertErrorAck(await ack(s, 'room:join', { chatId }), 'FORBIDDEN');
  }
});

test('createdBy falls back to the earliest-granted current member', async () => {
  const X = await newUser();
  const Y = await newUser();
  const chatId = rid('c');
  await putChat(chatId, { type: 'group', title: 'No creator' }); // no createdBy
  await addMember(chatId, X.id);
  await sleep(50);
  await addMember(chatId, Y.id);
  const y = await connectUser(Y, NODE2);
  await putChat(chatId, { type: 'group', title: 'Renamed' });
  const renamed = await waitFor(y, 'chat:update', (u) => u.chat?.title === 'Renamed', 5000);
  assertChat(renamed, { _id: chatId, type: 'group', title: 'Renamed', memberIds: [X.id, Y.id], createdBy: X.id });

  await removeMember(chatId, X.id);
  const after = await waitFor(y, 'chat:update', (u) => u.chat?.memberIds?.length === 1, 5000);
  assertChat(after, { _id: chatId, type: 'group', title: 'Renamed', memberIds: [Y.id], createdBy: Y.id });
});

test('a dm renders type "dm" and a null title', async () => {
  const X = await newUser();
  const Y = await newUser();
  const chatId = rid('c');
  await putChat(chatId, { type: 'dm', title: null, createdBy: X.id });
  await addMember(chatId, X.id);
  const y = await connectUser(Y, NODE1);
  await addMember(chatId, Y.id);
  const update = await waitFor(y, 'chat:update', (u) => u.chat?._id === chatId, 5000);
  assertChat(update, { _id: chatId, type: 'dm', title: null, memberIds: [X.id, Y.id], createdBy: X.id });
});
