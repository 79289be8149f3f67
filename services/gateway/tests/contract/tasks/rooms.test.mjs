// tasks (004) rooms: room:join { type, id } answers room:joined { roomType, roomId, memberCount }
// (memberCount: distinct users joined across the cluster) then message:history (latest 50, oldest
// first, paged with nextCursor); access comes from memberships (a project grants its studies, a
// study only itself, a global role nothing); refusals and malformed payloads answer room:error
// and join nothing; room:leave answers room:left and stops room broadcasts.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll } from '../helpers.mjs';
import {
  assertRoomError,
  connectTasks,
  expectNoAfter,
  expectRoomError,
  grant,
  joinRoom,
  leaveRoom,
  mark,
  newId,
  newProject,
  nonce,
  postMessage,
  putProject,
  putStudy,
  roomHistory,
  tasksUser,
  waitAfter,
} from './helpers.mjs';

afterEach(closeAll);

/** Posts a message through the integration API; the `reach` sockets receive it, the `miss` ones do not. */
async function probe(kind, roomId, senderId, { reach = [], miss = [] }) {
  const content = `probe ${nonce()}`;
  const froms = new Map([...reach, ...miss].map((s) => [s, mark(s)]));
  await postMessage(kind, roomId, senderId, content);
  for (const s of reach) await waitAfter(s, froms.get(s), 'message:new', (x) => x.message.content === content);
  for (const s of miss) await expectNoAfter(s, froms.get(s), 'message:new', QUIET_MS, (x) => x.message.content === content);
}

test('memberCount counts distinct users joined across the cluster, the joiner included', async () => {
  const { projectId, users } = await newProject({ roles: ['researcher', 'researcher', 'member'] });
  const [A, B, C] = users;
  const a1 = await connectTasks(A, NODE1);
  const a2 = await connectTasks(A, NODE2, { transports: ['polling'] });
  const b = await connectTasks(B, NODE2);
  assert.equal((await joinRoom(a1, 'project', projectId)).joined.memberCount, 1, 'A alone');
  assert.equal((await joinRoom(a2, 'project', projectId)).joined.memberCount, 1, "A's second socket (other node): still one user");
  assert.equal((await joinRoom(b, 'project', projectId)).joined.memberCount, 2, 'A and B');
  await leaveRoom(a1, 'project', projectId);
  await leaveRoom(a2, 'project', projectId);
  const c = await connectTasks(C, NODE1);
  assert.equal((await joinRoom(c, 'project', projectId)).joined.memberCount, 2, 'B and C: A left with both sockets');
});

test('room:join accepts a numeric string id and answers numbers; an empty room has an empty history', async () => {
  const { projectId, studyId, users } = await newProject({ roles: ['researcher'] });
  const s = await connectTasks(users[0], NODE2);
  const { joined, history } = await joinRoom(s, 'project', projectId, String(projectId));
  assert.deepEqual(joined, { roomType: 'project', roomId: projectId, memberCount: 1 });
  assert.deepEqual(history.messages, []);
  assert.equal(history.hasMore, false);
  assert.ok(history.nextCursor === undefined || history.nextCursor === null, `no nextCursor: ${JSON.stringify(history)}`);
  const study = await joinRoom(s, 'study', studyId, String(studyId));
  assert.deepEqual(study.joined, { roomType: 'study', roomId: studyId, memberCount: 1 });
});

test('message:history carries the latest 50 messages oldest first; nextCursor pages the older ones', async () => {
  const { projectId, users } = await newProject({ roles: ['researcher', 'researcher'] });
  const [A, B] = users;
  const tag = nonce();
  const contents = [];
  for (let i = 0; i < 55; i++) {
    const content = `h${tag}-${String(i).padStart(2, '0')}`;
    contents.push(content);
    await postMessage('project', projectId, i % 2 ? A.id : B.id, content, i % 2 ? NODE2 : NODE1);
  }
  const s = await connectTasks(A, NODE2);
  const { history } = await joinRoom(s, 'project', projectId);
  assert.equal(history.messages.length, 50, 'a page of 50');
  assert.deepEqual(history.messages.map((m) => m.content), contents.slice(5), 'the latest 50, oldest first');
  assert.equal(history.hasMore, true);
  assert.equal(typeof history.nextCursor, 'number', `nextCursor is a number: ${JSON.stringify(history.nextCursor)}`);
  assert.equal(history.nextCursor, history.messages[0].id, 'nextCursor is the id of the oldest message of the page');
  const older = await roomHistory('project', projectId, { before: history.nextCursor });
  assert.deepEqual(
    older.messages.map((m) => m.content).sort(),
    contents.slice(0, 5).sort(),
    'the older page holds the 5 first messages',
  );
  assert.equal(older.hasMore, false);
});

test('with 3 messages, message:history has all 3 oldest first, hasMore false and no nextCursor', async () => {
  const { studyId, users } = await newProject({ roles: ['researcher'] });
  const [A] = users;
  const contents = [`one ${nonce()}`, `two ${nonce()}`, `three ${nonce()}`];
  for (const c of contents) await postMessage('study', studyId, A.id, c);
  const s = await connectTasks(A, NODE1, { transports: ['polling'] });
  const { history } = await joinRoom(s, 'study', studyId);
  assert.deepEqual(history.messages.map((m) => m.content), contents);
  for (const m of history.messages) assert.equal(m.senderId, A.id);
  assert.equal(history.hasMore, false);
  assert.ok(history.nextCursor === undefined || history.nextCursor === null, `no nextCursor: ${JSON.stringify(history)}`);
});

test('project membership grants its studies; study-only membership grants that study, not the project nor a sibling', async () => {
  const projectId = await putProject(newId());
  const studyId = await putStudy(newId(), projectId);
  const siblingId = await putStudy(newId(), projectId);
  const P = await tasksUser();
  const S = await tasksUser();
  await grant('project', projectId, P, 'researcher');
  await grant('study', studyId, S, 'researcher');
  const p = await connectTasks(P, NODE1);
  const s = await connectTasks(S, NODE2);
  await joinRoom(p, 'study', studyId);
  await joinRoom(p, 'study', siblingId);
  await joinRoom(s, 'study', studyId);
  const err = await expectRoomError(s, 'room:join', { type: 'project', id: projectId });
  assertRoomError(err, { roomType: 'project', roomId: projectId });
  const err2 = await expectRoomError(s, 'room:join', { type: 'study', id: siblingId });
  assertRoomError(err2, { roomType: 'study', roomId: siblingId });
  // nothing was joined: project messages do not reach S; study messages reach both
  await probe('project', projectId, P.id, { reach: [], miss: [s] });
  await probe('study', studyId, P.id, { reach: [p, s] });
});

test('a non-member, a global manager without membership, and a room that does not exist get room:error; nothing joined', async () => {
  const { projectId, users } = await newProject({ roles: ['researcher'] });
  const [A] = users;
  const outsider = await tasksUser({ role: 'researcher' });
  const boss = await tasksUser({ role: 'manager' });
  const o = await connectTasks(outsider, NODE1);
  const m = await connectTasks(boss, NODE2);
  for (const s of [o, m]) {
    const err = await expectRoomError(s, 'room:join', { type: 'project', id: projectId });
    assertRoomError(err, { roomType: 'project', roomId: projectId });
    assert.equal(typeof err.roomId, 'number', 'roomId is rendered as a number');
  }
  const missing = newId();
  const err = await expectRoomError(o, 'room:join', { type: 'study', id: String(missing) });
  assertRoomError(err, { roomType: 'study', roomId: missing });
  const a = await connectTasks(A, NODE2);
  await joinRoom(a, 'project', projectId);
  await probe('project', projectId, A.id, { reach: [a], miss: [o, m] });
});

test('malformed room:join payloads answer room:error (echoing what is readable, else null) and keep the socket', async () => {
  const { projectId, users } = await newProject({ roles: ['researcher'] });
  const [A] = users;
  const s = await connectTasks(A, NODE1);
  const taskType = await expectRoomError(s, 'room:join', { type: 'task', id: projectId });
  assertRoomError(taskType);
  const abc = await expectRoomError(s, 'room:join', { type: 'project', id: 'abc' });
  assertRoomError(abc, { roomType: 'project' });
  assert.ok(abc.roomId === null || abc.roomId === 'abc', `roomId of 'abc' is null (or echoed): ${JSON.stringify(abc)}`);
  const noId = await expectRoomError(s, 'room:join', { type: 'project' });
  assertRoomError(noId, { roomType: 'project', roomId: null });
  for (const bad of [`project:${projectId}`, 42, null, [projectId]]) {
    const err = await expectRoomError(s, 'room:join', bad);
    assertRoomError(err, { roomType: null, roomId: null });
  }
  assert.ok(s.connected, 'still connected');
  const { joined } = await joinRoom(s, 'project', projectId);
  assert.equal(joined.memberCount, 1, 'the refused joins joined nothing, the valid one works');
});

test('room:leave answers room:left { roomType, roomId }; afterwards room broadcasts no longer reach the socket', async () => {
  const { projectId, studyId, users } = await newProject({ roles: ['researcher', 'researcher'] });
  const [A, B] = users;
  const a = await connectTasks(A, NODE1);
  const b = await connectTasks(B, NODE2);
  await joinRoom(a, 'project', projectId);
  await joinRoom(a, 'study', studyId);
  await joinRoom(b, 'project', projectId);
  await probe('project', projectId, B.id, { reach: [a, b] });
  await leaveRoom(a, 'project', projectId);
  await probe('project', projectId, B.id, { reach: [b], miss: [a] });
  await probe('study', studyId, B.id, { reach: [a] }); // the other room is still joined
  const { joined } = await joinRoom(b, 'study', studyId);
  assert.equal(joined.memberCount, 2, 'A is still in the study room');
});
