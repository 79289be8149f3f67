// tasks (004) message:read { messageId }: needs a room:join of the message's room; moves the
// reader's forward-only cursor and broadcasts message:read { messageId, readBy: { userId, readAt } }
// to the room on every move (nothing for an older message); an ack gets { ok: true, readAt }.
// typing:start / typing:stop { roomType, roomId }: access needed, no join; the others in the room
// get typing:started { roomType, roomId, user: { id, firstName, lastName } } / typing:stopped
// { roomType, roomId, userId }, never the typer's own sockets; typing stops by itself after 3 s.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, TYPING_TTL_MS, assertIso, closeAll } from '../helpers.mjs';
import {
  connectTasks,
  emitAck,
  eventsAfter,
  expectError,
  expectNoAfter,
  joinRoom,
  mark,
  newProject,
  nonce,
  postMessage,
  sendMessage,
  tasksUser,
  waitAfter,
} from './helpers.mjs';

afterEach(closeAll);

/** A project where A (a, node 1) and B (b, node 2) joined the project room. */
async function scene() {
  const p = await newProject({ roles: ['researcher', 'researcher'] });
  const [A, B] = p.users;
  const a = await connectTasks(A, NODE1);
  const b = await connectTasks(B, NODE2, { transports: ['polling'] });
  await joinRoom(a, 'project', p.projectId);
  await joinRoom(b, 'project', p.projectId);
  return { ...p, A, B, a, b };
}

function assertRead(ev, messageId, userId) {
  const text = JSON.stringify(ev);
  assert.deepEqual(Object.keys(ev).sort(), ['messageId', 'readBy'], `message:read keys: ${text}`);
  assert.equal(ev.messageId, messageId, `messageId is the number: ${text}`);
  assert.deepEqual(Object.keys(ev.readBy).sort(), ['readAt', 'userId'], `readBy is { userId, readAt }: ${text}`);
  assert.equal(ev.readBy.userId, userId, `readBy.userId is the reader, a number: ${text}`);
  assertIso(ev.readBy.readAt, 'readBy.readAt');
}

test('message:read broadcasts { messageId, readBy } to the room on both nodes and acks { ok: true, readAt }', async () => {
  const { projectId, B, a, b } = await scene();
  const m = await sendMessage(a, 'project', projectId, `read me ${nonce()}`);
  const fromA = mark(a);
  const fromB = mark(b);
  const res = await emitAck(b, 'message:read', { messageId: m.id });
  assert.ok(res && res.ok === true, `ack { ok: true, readAt }: ${JSON.stringify(res)}`);
  assert.deepEqual(Object.keys(res).sort(), ['ok', 'readAt'], `the ack is { ok, readAt }: ${JSON.stringify(res)}`);
  assertIso(res.readAt, 'ack readAt');
  const seenByA = await waitAfter(a, fromA, 'message:read', (x) => x.messageId === m.id);
  assertRead(seenByA, m.id, B.id);
  assert.equal(seenByA.readBy.readAt, res.readAt, 'the broadcast readAt is the acknowledged one');
  const seenByB = await waitAfter(b, fromB, 'message:read', (x) => x.messageId === m.id);
  assert.deepEqual(seenByB, seenByA, "the reader's socket (in the room) receives the same broadcast");
});

test('the cursor only moves forward: reading an older message broadcasts nothing; a newer one broadcasts again', async () => {
  const { projectId, A, B, a, b } = await scene();
  const m1 = await postMessage('project', projectId, A.id, `first ${nonce()}`);
  const m2 = await postMessage('project', projectId, A.id, `second ${nonce()}`);
  const m3 = await postMessage('project', projectId, A.id, `third ${nonce()}`);
  const [id1, id2, id3] = [m1, m2, m3].map((m) => Number(m.id));
  let from = mark(a);
  b.emit('message:read', { messageId: id2 });
  assertRead(await waitAfter(a, from, 'message:read', (x) => x.messageId === id2), id2, B.id);
  from = mark(a);
  b.emit('message:read', { messageId: String(id1) }); // older than the cursor (and as a numeric string)
  b.emit('message:read', { messageId: id2 }); // the cursor itself: no move either
  await expectNoAfter(a, from, 'message:read', QUIET_MS);
  from = mark(a);
  b.emit('message:read', { messageId: id3 });
  assertRead(await waitAfter(a, from, 'message:read', (x) => x.messageId === id3), id3, B.id);
  assert.equal(eventsAfter(a, from, 'message:read').length, 1, 'one broadcast for the one move');
});

test('message:read without a room:join of the message\'s room is NOT_JOINED, and broadcasts nothing', async () => {
  const { projectId, B, a } = await scene();
  const m = await sendMessage(a, 'project', projectId, `unjoined ${nonce()}`);
  const fromA = mark(a);
  const b2 = await connectTasks(B, NODE1); // a member's socket that did not join
  await expectError(b2, 'NOT_JOINED', 'message:read', { messageId: m.id });
  await expectError(b2, 'VALIDATION_ERROR', 'message:read', { messageId: 'abc' });
  await expectNoAfter(a, fromA, 'message:read', QUIET_MS);
  assert.ok(b2.connected);
});

test('typing:start / typing:stop reach the others in the room on the other node, never the typer\'s own sockets', async () => {
  const { projectId, A, a, b } = await scene();
  const a2 = await connectTasks(A, NODE2); // A's other socket, in the room
  await joinRoom(a2, 'project', projectId);
  const t = await connectTasks(A, NODE1); // the typing socket: access, but no room:join
  const fromB = mark(b);
  const fromA = [a, a2, t].map((s) => mark(s));
  t.emit('typing:start', { roomType: 'project', roomId: projectId });
  const started = await waitAfter(b, fromB, 'typing:started');
  assert.deepEqual(
    started,
    { roomType: 'project', roomId: projectId, user: { id: A.id, firstName: A.firstName, lastName: A.lastName } },
    `typing:started { roomType, roomId, user: { id, firstName, lastName } }: ${JSON.stringify(started)}`,
  );
  t.emit('typing:stop', { roomType: 'project', roomId: String(projectId) });
  const stopped = await waitAfter(b, fromB, 'typing:stopped');
  assert.deepEqual(stopped, { roomType: 'project', roomId: projectId, userId: A.id }, `typing:stopped: ${JSON.stringify(stopped)}`);
  for (const [i, s] of [a, a2, t].entries()) {
    await expectNoAfter(s, fromA[i], 'typing:started', i === 0 ? QUIET_MS : 0);
    await expectNoAfter(s, fromA[i], 'typing:stopped', 0);
    await expectNoAfter(s, fromA[i], 'error', 0);
  }
});

test('without typing:stop, typing:stopped arrives by itself after the typing TTL', async () => {
  const { studyId, A, a, b } = await scene();
  await joinRoom(b, 'study', studyId); // B in the study room (project membership grants it)
  const fromB = mark(b);
  a.emit('typing:start', { roomType: 'study', roomId: studyId }); // A has access to the study, not joined
  const started = await waitAfter(b, fromB, 'typing:started', (x) => x.roomType === 'study');
  assert.equal(started.roomId, studyId);
  assert.equal(started.user.id, A.id);
  const stopped = await waitAfter(b, fromB, 'typing:stopped', (x) => x.roomType === 'study', TYPING_TTL_MS + 6000);
  assert.deepEqual(stopped, { roomType: 'study', roomId: studyId, userId: A.id });
  assert.equal(eventsAfter(b, fromB, 'typing:stopped').length, 1, 'one typing:stopped');
  assert.equal(eventsAfter(b, fromB, 'typing:started', (x) => x.roomType === 'project').length, 0, 'the project room is another room');
});

test('typing by a user without access to the room is FORBIDDEN and broadcasts nothing', async () => {
  const { projectId, b } = await scene();
  const X = await tasksUser({ role: 'manager' }); // a global manager, no membership
  const x = await connectTasks(X, NODE1);
  const fromB = mark(b);
  await expectError(x, 'FORBIDDEN', 'typing:start', { roomType: 'project', roomId: projectId });
  await expectError(x, 'FORBIDDEN', 'typing:stop', { roomType: 'project', roomId: projectId });
  await expectNoAfter(b, fromB, 'typing:started', QUIET_MS);
  await expectNoAfter(b, fromB, 'typing:stopped', 0);
});
