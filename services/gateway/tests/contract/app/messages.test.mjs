// messages:new / messages:updated / messages:deleted (001). Messages are created, edited and
// soft-deleted by the application through the integration API; each change reaches every socket in
// `conversation:<id>` and every participant's `user:<id>` sockets exactly once, on both nodes,
// with the MessageDTO { id, conversationId, senderId, body, status, createdAt, updatedAt, editedAt,
// deletedAt }. Edit and delete need the sender or a manager/owner of the conversation.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  QUIET_MS,
  ack,
  assertHttpError,
  assertIso,
  closeAll,
  count,
  expectNo,
  sleep,
  waitFor,
} from '../helpers.mjs';
import {
  DELIVERY_MS,
  aboutMessage,
  appUser,
  assertAppError,
  assertMessagesEvent,
  connectApp,
  deleteMessage,
  editMessage,
  joinConversation,
  newConversation,
  postMessage,
} from './helpers.mjs';

afterEach(closeAll);

/** Waits for `event` about `id` on every socket, then checks each got it exactly once. */
async function expectOnceEach(sockets, event, id) {
  const got = [];
  for (const s of sockets) got.push(await waitFor(s, event, aboutMessage(id), DELIVERY_MS));
  await sleep(QUIET_MS);
  for (const s of sockets) {
    assert.equal(count(s, event, aboutMessage(id)), 1, `${event} exactly once on ${s.__name}`);
  }
  return got;
}

/**
 * Conversation of A (sender), B and C. Sockets: A on node 2 (user room only), B on node 2
 * (joined: both rooms) and on node 1 (user room only), C on node 1 (joined).
 */
async function threeParticipants(roles = []) {
  const { conversationId, users } = await newConversation({ members: 3, roles });
  const [A, B, C] = users;
  const a = await connectApp(A, NODE2);
  const bJoined = await connectApp(B, NODE2);
  const bUserRoom = await connectApp(B, NODE1);
  const c = await connectApp(C, NODE1);
  await joinConversation(bJoined, conversationId);
  await joinConversation(c, conversationId);
  return { conversationId, A, B, C, a, bJoined, bUserRoom, c, sockets: [a, bJoined, bUserRoom, c] };
}

test('messages:new reaches the conversation room and every participant (sender included) on both nodes, each socket exactly once', async () => {
  const t = await threeParticipants();
  const msg = await postMessage(t.conversationId, t.A.id, 'hello everyone', NODE1);
  const got = await expectOnceEach(t.sockets, 'messages:new', msg.id);
  for (const p of got) {
    assertMessagesEvent(p, {
      conversationId: t.conversationId,
      senderId: t.A.id,
      recipients: [t.A.id, t.B.id, t.C.id],
      message: { id: msg.id, body: 'hello everyone', status: 'sent', editedAt: null, deletedAt: null },
    });
  }
  // Every socket received the same payload.
  for (const p of got.slice(1)) assert.deepEqual(p, got[0]);
});

test('the MessageDTO: exactly nine fields, id the API message id as a decimal string, status sent, ISO times, null editedAt/deletedAt', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const b = await connectApp(B, NODE1);
  const msg = await postMessage(conversationId, A.id, 'shape check', NODE2);
  const p = await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);
  assert.deepEqual(Object.keys(p).sort(), ['conversationId', 'message', 'recipients', 'senderId']);
  const m = p.message;
  assert.deepEqual(Object.keys(m).sort(), [
    'body', 'conversationId', 'createdAt', 'deletedAt', 'editedAt', 'id', 'senderId', 'status', 'updatedAt',
  ]);
  assert.equal(m.id, String(msg.core.id));
  assert.match(m.id, /^[0-9]+$/);
  assert.equal(m.conversationId, conversationId);
  assert.equal(m.senderId, A.id);
  assert.equal(m.body, 'shape check');
  assert.equal(m.status, 'sent');
  assertIso(m.createdAt, 'createdAt');
  assertIso(m.updatedAt, 'updatedAt');
  assert.equal(m.editedAt, null);
  assert.equal(m.deletedAt, null);
  assert.equal(Date.parse(m.createdAt), Date.parse(msg.core.createdAt), 'createdAt is the stored time');
  assert.equal(p.conversationId, conversationId);
  assert.equal(p.senderId, A.id);
  assert.deepEqual([...p.recipients].sort(), [A.id, B.id].sort());
});

test('recipients are the participant ids as strings, sender included, whoever has a socket', async () => {
  // Four participants, only one of them connected.
  const { conversationId, users } = await newConversation({ members: 4 });
  const d = await connectApp(users[3], NODE2);
  const msg = await postMessage(conversationId, users[0].id, 'to all four', NODE1);
  const p = await waitFor(d, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);
  assert.ok(p.recipients.every((r) => typeof r === 'string'));
  assert.deepEqual([...p.recipients].sort(), users.map((u) => u.id).sort());
});

test('a body with unicode and whitespace is delivered unchanged', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const b = await connectApp(users[1], NODE2);
  const content = '  héllo 😀\n\t“quoted” <b>not html</b>  ';
  const msg = await postMessage(conversationId, users[0].id, content, NODE1);
  const p = await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);
  assert.equal(p.message.body, content);
});

test('a non-participant receives nothing, even after trying to join', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const outsider = await appUser();
  const o1 = await connectApp(outsider, NODE1);
  const o2 = await connectApp(outsider, NODE2);
  assertAppError(await ack(o1, 'conversations:join', { conversationId }), 'FORBIDDEN');
  o2.emit('conversations:join', { conversationId });
  const b = await connectApp(users[1], NODE1);
  await joinConversation(b, conversationId);

  const msg = await postMessage(conversationId, users[0].id, 'private', NODE2);
  await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);
  await expectNo(o1, 'messages:new', QUIET_MS);
  await expectNo(o2, 'messages:new', 0);
});

test('messages of one conversation do not reach the participants of another', async () => {
  const one = await newConversation({ members: 2 });
  const two = await newConversation({ members: 1 });
  const other = await connectApp(two.users[0], NODE1);
  await joinConversation(other, two.conversationId);
  const b = await connectApp(one.users[1], NODE1);
  const msg = await postMessage(one.conversationId, one.users[0].id, 'only for one', NODE2);
  await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);
  await expectNo(other, 'messages:new', QUIET_MS);
});

test('messages:updated after the sender edits: body changed, editedAt set, status sent, once per socket', async () => {
  const t = await threeParticipants();
  const msg = await postMessage(t.conversationId, t.A.id, 'original', NODE1);
  await expectOnceEach(t.sockets, 'messages:new', msg.id);

  const res = await editMessage(t.conversationId, msg.id, 'edited', t.A.id, NODE2);
  assert.equal(res.status, 200, `PATCH → ${res.status} ${res.text.slice(0, 300)}`);
  const got = await expectOnceEach(t.sockets, 'messages:updated', msg.id);
  for (const p of got) {
    assertMessagesEvent(p, {
      conversationId: t.conversationId,
      senderId: t.A.id,
      recipients: [t.A.id, t.B.id, t.C.id],
      message: { id: msg.id, body: 'edited', status: 'sent', deletedAt: null },
    });
    assertIso(p.message.editedAt, 'editedAt');
    assert.ok(Date.parse(p.message.editedAt) >= Date.parse(p.message.createdAt), 'editedAt is not before createdAt');
    assert.ok(Date.parse(p.message.updatedAt) >= Date.parse(p.message.createdAt), 'updatedAt is not before createdAt');
  }
  for (const p of got.slice(1)) assert.deepEqual(p, got[0]);
  // The edit emitted no messages:new.
  for (const s of t.sockets) assert.equal(count(s, 'messages:new', aboutMessage(msg.id)), 1);
});

test('an edit by a member who is neither the sender nor a manager/owner is 403 and emits nothing', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const b = await connectApp(B, NODE1);
  const a = await connectApp(A, NODE2);
  const msg = await postMessage(conversationId, A.id, 'mine', NODE1);
  await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);

  assertHttpError(await editMessage(conversationId, msg.id, 'hijacked', B.id, NODE2), 403);
  await expectNo(a, 'messages:updated', QUIET_MS);
  await expectNo(b, 'messages:updated', 0);

  // A non-participant is refused too.
  const stranger = await appUser();
  assertHttpError(await editMessage(conversationId, msg.id, 'hijacked', stranger.id, NODE1), 403);
  await expectNo(b, 'messages:updated', QUIET_MS);

  // The sender still may, and the body is the sender's.
  const ok = await editMessage(conversationId, msg.id, 'mine, edited', A.id, NODE1);
  assert.equal(ok.status, 200, ok.text);
  const p = await waitFor(b, 'messages:updated', aboutMessage(msg.id), DELIVERY_MS);
  assert.equal(p.message.body, 'mine, edited');
});

for (const role of ['manager', 'owner']) {
  test(`a participant with role ${role} may edit another participant's message`, async () => {
    // A is the sender, M the privileged participant, B an observer on the other node.
    const { conversationId, users } = await newConversation({ members: 3, roles: ['member', role, 'member'] });
    const [A, M, B] = users;
    const b = await connectApp(B, NODE2);
    const msg = await postMessage(conversationId, A.id, 'to be moderated', NODE1);
    await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);

    const res = await editMessage(conversationId, msg.id, `moderated by the ${role}`, M.id, NODE1);
    assert.equal(res.status, 200, `PATCH by a ${role} → ${res.status} ${res.text.slice(0, 300)}`);
    const p = await waitFor(b, 'messages:updated', aboutMessage(msg.id), DELIVERY_MS);
    assertMessagesEvent(p, {
      conversationId,
      senderId: A.id,
      recipients: [A.id, M.id, B.id],
      message: { id: msg.id, body: `moderated by the ${role}`, status: 'sent', deletedAt: null },
    });
    assertIso(p.message.editedAt, 'editedAt');
  });

  test(`a participant with role ${role} may delete another participant's message`, async () => {
    const { conversationId, users } = await newConversation({ members: 3, roles: ['member', role, 'member'] });
    const [A, M, B] = users;
    const b = await connectApp(B, NODE1);
    const msg = await postMessage(conversationId, A.id, 'to be removed', NODE2);
    await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);

    const res = await deleteMessage(conversationId, msg.id, M.id, NODE2);
    assert.ok(res.status >= 200 && res.status < 300, `DELETE by a ${role} → ${res.status} ${res.text.slice(0, 300)}`);
    const p = await waitFor(b, 'messages:deleted', aboutMessage(msg.id), DELIVERY_MS);
    assert.equal(p.message.status, 'deleted');
    assertIso(p.message.deletedAt, 'deletedAt');
    assert.equal(p.senderId, A.id, 'senderId stays the author');
  });
}

test('messages:deleted after the sender soft-deletes: status deleted, deletedAt set, once per socket', async () => {
  const t = await threeParticipants();
  const msg = await postMessage(t.conversationId, t.A.id, 'soon gone', NODE2);
  await expectOnceEach(t.sockets, 'messages:new', msg.id);

  const res = await deleteMessage(t.conversationId, msg.id, t.A.id, NODE1);
  assert.ok(res.status >= 200 && res.status < 300, `DELETE → ${res.status} ${res.text.slice(0, 300)}`);
  const got = await expectOnceEach(t.sockets, 'messages:deleted', msg.id);
  for (const p of got) {
    assertMessagesEvent(p, {
      conversationId: t.conversationId,
      senderId: t.A.id,
      recipients: [t.A.id, t.B.id, t.C.id],
      message: { id: msg.id, status: 'deleted' },
    });
    assertIso(p.message.deletedAt, 'deletedAt');
    assert.ok(Date.parse(p.message.deletedAt) >= Date.parse(p.message.createdAt), 'deletedAt is not before createdAt');
  }
  for (const p of got.slice(1)) assert.deepEqual(p, got[0]);
  for (const s of t.sockets) assert.equal(count(s, 'messages:updated', aboutMessage(msg.id)), 0, 'a delete is not an update');
});

test('a delete by a member who is neither the sender nor a manager/owner is 403 and emits nothing', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const a = await connectApp(A, NODE1);
  const b = await connectApp(B, NODE2);
  const msg = await postMessage(conversationId, A.id, 'keep me', NODE1);
  await waitFor(b, 'messages:new', aboutMessage(msg.id), DELIVERY_MS);

  assertHttpError(await deleteMessage(conversationId, msg.id, B.id, NODE2), 403);
  await expectNo(a, 'messages:deleted', QUIET_MS);
  await expectNo(b, 'messages:deleted', 0);

  const ok = await deleteMessage(conversationId, msg.id, A.id, NODE2);
  assert.ok(ok.status >= 200 && ok.status < 300, ok.text);
  await waitFor(a, 'messages:deleted', aboutMessage(msg.id), DELIVERY_MS);
});

test('an edited then deleted message keeps its id and editedAt in messages:deleted', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const b = await connectApp(B, NODE2);
  const msg = await postMessage(conversationId, A.id, 'v1', NODE1);
  const edit = await editMessage(conversationId, msg.id, 'v2', A.id, NODE1);
  assert.equal(edit.status, 200, edit.text);
  const updated = await waitFor(b, 'messages:updated', aboutMessage(msg.id), DELIVERY_MS);
  const del = await deleteMessage(conversationId, msg.id, A.id, NODE1);
  assert.ok(del.status >= 200 && del.status < 300, del.text);
  const deleted = await waitFor(b, 'messages:deleted', aboutMessage(msg.id), DELIVERY_MS);
  assert.equal(deleted.message.id, msg.id);
  assert.equal(deleted.message.createdAt, updated.message.createdAt);
  assertIso(deleted.message.editedAt, 'editedAt');
  assertIso(deleted.message.deletedAt, 'deletedAt');
});

test('four joined sockets of one participant on two nodes each get a message once', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const sockets = [];
  for (const node of [NODE1, NODE2, NODE1, NODE2]) {
    const s = await connectApp(B, node);
    await joinConversation(s, conversationId);
    sockets.push(s);
  }
  const msg = await postMessage(conversationId, A.id, 'many devices', NODE1);
  await expectOnceEach(sockets, 'messages:new', msg.id);
});
