// tasks (004) message:send: stored and broadcast as message:new { message } to every socket that
// joined the room, the sender's own included, on both nodes; the Message carries the document's
// fields, sender { id, username, firstName, lastName } and replyTo for replies; an ack callback
// gets { ok: true, message }; the identity is the socket's, never the payload's; 10 messages per
// minute per user across the cluster.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll } from '../helpers.mjs';
import {
  assertTaskError,
  assertTaskMessage,
  connectTasks,
  emitAck,
  eventsAfter,
  expectError,
  expectNoAfter,
  joinRoom,
  mark,
  newProject,
  nonce,
  roomHistory,
  sendMessage,
  grant,
  tasksUser,
  waitAfter,
} from './helpers.mjs';

afterEach(closeAll);

/** A project (with a study) where A (a, node 1) and B (b, node 2) have joined the project room. */
async function scene() {
  const p = await newProject({ roles: ['researcher', 'researcher'] });
  const [A, B] = p.users;
  const a = await connectTasks(A, NODE1);
  const b = await connectTasks(B, NODE2, { transports: ['polling'] });
  await joinRoom(a, 'project', p.projectId);
  await joinRoom(b, 'project', p.projectId);
  return { ...p, A, B, a, b };
}

const byId = (id) => (x) => x.message.id === id;

test('message:new reaches every joined socket on both nodes, the sender and its other socket included, fully shaped', async () => {
  const { projectId, A, B, a, b } = await scene();
  const a2 = await connectTasks(A, NODE2); // A's second socket, in the room, on the other node
  await joinRoom(a2, 'project', projectId);
  const a3 = await connectTasks(A, NODE2); // A's third socket, not in the room
  const fromB = mark(b);
  const from2 = mark(a2);
  const from3 = mark(a3);
  const content = `Hello team ${nonce()}`;
  const mine = await sendMessage(a, 'project', projectId, content);
  assertTaskMessage(mine, {
    roomType: 'project',
    roomId: projectId,
    type: 'text',
    content,
    sender: A,
    replyToId: null,
    editedAt: null,
    deletedAt: null,
    fileId: null,
    fileName: null,
    fileSize: null,
    mimeType: null,
  });
  for (const [s, from] of [[b, fromB], [a2, from2]]) {
    const got = await waitAfter(s, from, 'message:new', byId(mine.id));
    assert.deepEqual(Object.keys(got), ['message'], 'message:new is { message }');
    assert.deepEqual(got.message, mine, `${s.__name} receives the same message`);
  }
  await expectNoAfter(a3, from3, 'message:new');
  assert.equal(eventsAfter(b, fromB, 'message:new', byId(mine.id)).length, 1, 'B receives it once');
  const stored = (await roomHistory('project', projectId)).messages.find((m) => m.id === mine.id);
  assert.ok(stored, 'stored: the history endpoint has it');
  assert.equal(stored.content, content);
  assert.equal(Number(stored.senderId), A.id);
});

test('an ack callback gets { ok: true, message }, the message broadcast to the room', async () => {
  const { projectId, A, a, b } = await scene();
  const from = mark(b);
  const content = `acked ${nonce()}`;
  const res = await emitAck(a, 'message:send', { roomType: 'project', roomId: projectId, content, type: 'text' });
  assert.ok(res && res.ok === true, `ack { ok: true, … }: ${JSON.stringify(res)?.slice(0, 300)}`);
  assert.deepEqual(Object.keys(res).sort(), ['message', 'ok'], `the ack is { ok, message }: ${JSON.stringify(res).slice(0, 300)}`);
  assertTaskMessage(res.message, { roomType: 'project', roomId: projectId, content, sender: A });
  const got = await waitAfter(b, from, 'message:new', byId(res.message.id));
  assert.deepEqual(got.message, res.message);
});

test('a reply carries replyToId and replyTo, the replied message without relations', async () => {
  const { projectId, B, a, b } = await scene();
  const original = await sendMessage(a, 'project', projectId, `question ${nonce()}`);
  const from = mark(a);
  const reply = await sendMessage(b, 'project', projectId, `answer ${nonce()}`, { replyToId: original.id });
  assertTaskMessage(reply, { replyToId: original.id, sender: B });
  const { sender, replyTo, ...bare } = original;
  assert.deepEqual(reply.replyTo, bare, 'replyTo is the original message, without sender/replyTo');
  const seen = await waitAfter(a, from, 'message:new', byId(reply.id));
  assert.deepEqual(seen.message, reply, 'the other node sees the same reply');
});

test('a roomId as a numeric string is accepted; a study message reaches the study room only', async () => {
  const { projectId, studyId, A, B, a, b } = await scene();
  await joinRoom(a, 'study', studyId);
  const b2 = await connectTasks(B, NODE2);
  await joinRoom(b2, 'study', studyId);
  const fromB = mark(b); // b joined only the project room
  const fromB2 = mark(b2);
  const m = await sendMessage(a, 'study', studyId, `study note ${nonce()}`, { roomId: String(studyId) });
  assertTaskMessage(m, { roomType: 'study', roomId: studyId, sender: A });
  await waitAfter(b2, fromB2, 'message:new', byId(m.id));
  await expectNoAfter(b, fromB, 'message:new', QUIET_MS, byId(m.id));
});

test('a forged senderId or sender in the payload is ignored: the message is the socket user\'s', async () => {
  const { projectId, A, B, a, b } = await scene();
  const from = mark(b);
  const content = `not really B ${nonce()}`;
  const m = await sendMessage(a, 'project', projectId, content, {
    senderId: B.id,
    sender: { id: B.id, username: B.username, firstName: B.firstName, lastName: B.lastName },
  });
  assertTaskMessage(m, { sender: A, content });
  const got = await waitAfter(b, from, 'message:new', byId(m.id));
  assert.equal(got.message.senderId, A.id);
  assert.deepEqual(got.message.sender.id, A.id);
});

test('10,000 code points (emoji) is within the limit', async () => {
  const { projectId, a, b } = await scene();
  const from = mark(b);
  const content = '😀'.repeat(10000);
  const m = await sendMessage(a, 'project', projectId, content);
  assert.equal([...m.content].length, 10000);
  await waitAfter(b, from, 'message:new', byId(m.id));
});

test('rate limit: 10 messages per minute per user across both nodes; the 11th is RATE_LIMITED and not stored', async () => {
  const { projectId, B, b } = await scene();
  const R = await tasksUser();
  await grant('project', projectId, R, 'researcher');
  const r1 = await connectTasks(R, NODE1);
  const r2 = await connectTasks(R, NODE2);
  await joinRoom(r1, 'project', projectId);
  await joinRoom(r2, 'project', projectId);
  const tag = nonce();
  for (let i = 0; i < 10; i++) {
    await sendMessage(i % 2 ? r2 : r1, 'project', projectId, `burst ${tag} ${i}`); // fails on any error
  }
  const fromB = mark(b);
  const over = `burst ${tag} over`;
  await expectError(r1, 'RATE_LIMITED', 'message:send', { roomType: 'project', roomId: projectId, content: over, type: 'text' });
  const over2 = `burst ${tag} over2`;
  const err = await expectError(r2, 'RATE_LIMITED', 'message:send', { roomType: 'project', roomId: projectId, content: over2, type: 'text' });
  assertTaskError(err, 'RATE_LIMITED');
  await expectNoAfter(b, fromB, 'message:new', QUIET_MS, (x) => x.message.content.startsWith(`burst ${tag} over`));
  const stored = (await roomHistory('project', projectId, { limit: 100 })).messages.filter((m) => m.content.startsWith(`burst ${tag}`));
  assert.equal(stored.length, 10, 'exactly the 10 accepted messages are stored');
  assert.ok(r1.connected && r2.connected, 'the limited sockets stay connected');
  // other users are not limited by R's window
  await sendMessage(b, 'project', projectId, `B is fine ${tag}`);
});
