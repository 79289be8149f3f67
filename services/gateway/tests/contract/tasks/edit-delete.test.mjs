// tasks (004) message:edit { messageId, content } and message:delete { messageId }: by the sender,
// or by a member with the `manager` role on the room or on the study's parent project; broadcast
// as message:edited { message } / message:deleted { messageId, roomType, roomId } to the room on
// both nodes. Anyone else: FORBIDDEN; a socket that did not join the message's room: NOT_JOINED;
// an unknown message: NOT_FOUND; malformed: VALIDATION_ERROR. Nothing changes on a refusal.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll } from '../helpers.mjs';
import {
  assertTaskMessage,
  connectTasks,
  expectError,
  expectNoAfter,
  grant,
  joinRoom,
  mark,
  newProject,
  nonce,
  roomHistory,
  sendMessage,
  tasksUser,
  waitAfter,
  waitUnlessError,
} from './helpers.mjs';

afterEach(closeAll);

const byId = (id) => (x) => x.message.id === id;

/** A project with a study; A (a, node 1) and B (b, node 2) joined the project room; A posted `m`. */
async function scene() {
  const p = await newProject({ roles: ['researcher', 'researcher'] });
  const [A, B] = p.users;
  const a = await connectTasks(A, NODE1);
  const b = await connectTasks(B, NODE2);
  await joinRoom(a, 'project', p.projectId);
  await joinRoom(b, 'project', p.projectId);
  const m = await sendMessage(a, 'project', p.projectId, `original ${nonce()}`);
  return { ...p, A, B, a, b, m };
}

/** Edits as `actor` and expects message:edited on every socket of `sockets`; answers the message. */
async function editOk(actor, messageId, content, sockets) {
  const froms = sockets.map((s) => mark(s));
  const fromActor = mark(actor);
  actor.emit('message:edit', { messageId, content });
  await waitUnlessError(actor, fromActor, 'message:edited', byId(messageId));
  const got = [];
  for (const [i, s] of sockets.entries()) got.push(await waitAfter(s, froms[i], 'message:edited', byId(messageId)));
  for (const g of got) {
    assert.deepEqual(Object.keys(g), ['message'], 'message:edited is { message }');
    assert.deepEqual(g.message, got[0].message, 'every socket receives the same message');
  }
  return got[0].message;
}

/** Deletes as `actor` and expects message:deleted { messageId, roomType, roomId } on `sockets`. */
async function deleteOk(actor, messageId, roomType, roomId, sockets) {
  const froms = sockets.map((s) => mark(s));
  const fromActor = mark(actor);
  actor.emit('message:delete', { messageId });
  await waitUnlessError(actor, fromActor, 'message:deleted', (x) => x.messageId === messageId);
  for (const [i, s] of sockets.entries()) {
    const d = await waitAfter(s, froms[i], 'message:deleted', (x) => x.messageId === messageId);
    assert.deepEqual(d, { messageId, roomType, roomId }, `message:deleted is { messageId, roomType, roomId }: ${JSON.stringify(d)}`);
  }
}

async function stored(kind, roomId, id) {
  return (await roomHistory(kind, roomId, { limit: 100 })).messages.find((x) => x.id === id);
}

test('the sender edits (message:edited, content changed, editedAt set) and deletes (message:deleted) on both nodes', async () => {
  const { projectId, A, a, b, m } = await scene();
  const content = `edited ${nonce()}`;
  const edited = await editOk(a, m.id, content, [a, b]);
  assertTaskMessage(edited, { id: m.id, roomType: 'project', roomId: projectId, content, sender: A, createdAt: m.createdAt });
  assert.notEqual(edited.editedAt, null, 'editedAt is set');
  assert.ok(Date.parse(edited.editedAt) >= Date.parse(m.createdAt), 'editedAt is not before createdAt');
  assert.equal(edited.deletedAt, null);
  assert.equal((await stored('project', projectId, m.id))?.content, content, 'the edit is stored');
  await deleteOk(a, m.id, 'project', projectId, [a, b]);
  const after = await stored('project', projectId, m.id);
  assert.ok(after === undefined || after.deletedAt !== null, `soft-deleted in the store: ${JSON.stringify(after)}`);
});

test('a manager of the room edits and deletes another member\'s message', async () => {
  const { projectId, a, b, m } = await scene();
  const M = await tasksUser({ role: 'researcher' }); // the room role counts, not the global role
  await grant('project', projectId, M, 'manager');
  const mgr = await connectTasks(M, NODE2, { transports: ['polling'] });
  await joinRoom(mgr, 'project', projectId);
  const content = `moderated ${nonce()}`;
  const edited = await editOk(mgr, m.id, content, [a, b]);
  assertTaskMessage(edited, { id: m.id, content, senderId: m.senderId });
  await deleteOk(mgr, m.id, 'project', projectId, [a, b]);
});

test('a manager of the parent project edits and deletes a message in its study', async () => {
  const { projectId, studyId, B } = await scene();
  const S = await tasksUser();
  await grant('study', studyId, S, 'researcher');
  const s = await connectTasks(S, NODE1);
  await joinRoom(s, 'study', studyId);
  const msg = await sendMessage(s, 'study', studyId, `in the study ${nonce()}`);
  await grant('project', projectId, B, 'manager');
  const mgr = await connectTasks(B, NODE2);
  await joinRoom(mgr, 'study', studyId);
  const edited = await editOk(mgr, msg.id, `fixed ${nonce()}`, [s]);
  assertTaskMessage(edited, { id: msg.id, roomType: 'study', roomId: studyId, sender: S });
  await deleteOk(mgr, msg.id, 'study', studyId, [s]);
});

test('another member (researcher, member, or global manager without the room role) gets FORBIDDEN; nothing changes', async () => {
  const { projectId, a, m } = await scene();
  const others = [
    await tasksUser({ role: 'researcher' }),
    await tasksUser({ role: 'researcher' }),
    await tasksUser({ role: 'manager' }),
  ];
  await grant('project', projectId, others[0], 'researcher');
  await grant('project', projectId, others[1], 'member');
  await grant('project', projectId, others[2], 'member');
  const fromA = mark(a);
  for (const [i, O] of others.entries()) {
    const o = await connectTasks(O, i % 2 ? NODE1 : NODE2);
    await joinRoom(o, 'project', projectId);
    await expectError(o, 'FORBIDDEN', 'message:edit', { messageId: m.id, content: `hijack ${nonce()}` });
    await expectError(o, 'FORBIDDEN', 'message:delete', { messageId: m.id });
  }
  await expectNoAfter(a, fromA, 'message:edited', QUIET_MS);
  await expectNoAfter(a, fromA, 'message:deleted', 0);
  const s = await stored('project', projectId, m.id);
  assert.equal(s?.content, m.content, 'content unchanged');
  assert.equal(s?.deletedAt ?? null, null, 'not deleted');
});

test('NOT_JOINED without a room:join of the message\'s room (even for its sender); NOT_FOUND for an unknown id', async () => {
  const { projectId, studyId, A, a, b, m } = await scene();
  const a2 = await connectTasks(A, NODE2); // the sender, not joined
  await expectError(a2, 'NOT_JOINED', 'message:edit', { messageId: m.id, content: `x ${nonce()}` });
  await expectError(a2, 'NOT_JOINED', 'message:delete', { messageId: m.id });
  await joinRoom(a2, 'study', studyId); // joined another room: still not the message's room
  await expectError(a2, 'NOT_JOINED', 'message:edit', { messageId: m.id, content: `y ${nonce()}` });
  await expectError(b, 'NOT_FOUND', 'message:edit', { messageId: 999999999, content: 'nothing' });
  await expectError(b, 'NOT_FOUND', 'message:delete', { messageId: 999999999 });
  await expectError(a, 'NOT_FOUND', 'message:edit', { messageId: '999999999', content: 'nothing' });
  assert.equal((await stored('project', projectId, m.id))?.content, m.content, 'unchanged');
});

test('malformed edit/delete payloads get VALIDATION_ERROR, change nothing and keep the socket', async () => {
  const { projectId, a, b, m } = await scene();
  const fromB = mark(b);
  const bad = [
    ['message:edit', { messageId: m.id, content: '' }],
    ['message:edit', { messageId: m.id, content: 'x'.repeat(10001) }],
    ['message:edit', { messageId: m.id }],
    ['message:edit', { messageId: m.id, content: 42 }],
    ['message:edit', { messageId: 'abc', content: 'x' }],
    ['message:edit', { content: 'x' }],
    ['message:edit', 'not an object'],
    ['message:delete', {}],
    ['message:delete', { messageId: 'abc' }],
    ['message:delete', [m.id]],
  ];
  for (const [event, payload] of bad) await expectError(a, 'VALIDATION_ERROR', event, payload);
  await expectNoAfter(b, fromB, 'message:edited', QUIET_MS);
  await expectNoAfter(b, fromB, 'message:deleted', 0);
  assert.ok(a.connected && b.connected, 'both sockets stay connected');
  assert.equal((await stored('project', projectId, m.id))?.content, m.content, 'unchanged');
  const edited = await editOk(a, m.id, `still works ${nonce()}`, [b]);
  assert.notEqual(edited.editedAt, null);
});
