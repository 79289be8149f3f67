// tasks (004) refusals of message:send and malformed payloads: every `error` is exactly
// { message, code, correlationId } (a 32-hex trace id); no prior room:join → NOT_JOINED; bad
// content, roomType, or a payload that is not an object → VALIDATION_ERROR; image and file
// messages without a file of the sender's are refused (files.test.mjs has the rest). Nothing is stored or
// broadcast on a refusal, and malformed payloads never disconnect the socket or disturb others.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, sleep } from '../helpers.mjs';
import {
  connectTasks,
  expectError,
  expectNoAfter,
  grant,
  joinRoom,
  leaveRoom,
  mark,
  newProject,
  nonce,
  roomHistory,
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
  const b = await connectTasks(B, NODE2);
  await joinRoom(a, 'project', p.projectId);
  await joinRoom(b, 'project', p.projectId);
  return { ...p, A, B, a, b };
}

/** No message whose content starts with `prefix` was broadcast to `socket` or stored. */
async function nothingOf(prefix, socket, from, projectId) {
  await expectNoAfter(socket, from, 'message:new', QUIET_MS, (x) => x.message.content.startsWith(prefix));
  const stored = (await roomHistory('project', projectId, { limit: 100 })).messages.filter((m) => m.content?.startsWith(prefix));
  assert.deepEqual(stored, [], 'nothing stored');
}

test('message:send without a room:join of the room is NOT_JOINED (a member\'s fresh socket, and after room:leave)', async () => {
  const { projectId, studyId, A, a, b } = await scene();
  const tag = `nj ${nonce()}`;
  const fromB = mark(b);
  const fresh = await connectTasks(A, NODE2);
  const e1 = await expectError(fresh, 'NOT_JOINED', 'message:send', { roomType: 'project', roomId: projectId, content: `${tag} 1`, type: 'text' });
  await joinRoom(fresh, 'study', studyId);
  await expectError(fresh, 'NOT_JOINED', 'message:send', { roomType: 'project', roomId: projectId, content: `${tag} 2`, type: 'text' });
  await leaveRoom(a, 'project', projectId);
  const e3 = await expectError(a, 'NOT_JOINED', 'message:send', { roomType: 'project', roomId: projectId, content: `${tag} 3`, type: 'text' });
  assert.notEqual(e1.correlationId, e3.correlationId, 'each refusal has its own trace id');
  await nothingOf(tag, b, fromB, projectId);
});

test('invalid message:send payloads get VALIDATION_ERROR; nothing stored or broadcast; the socket stays', async () => {
  const { projectId, a, b } = await scene();
  const tag = `inv${nonce()}`;
  const fromB = mark(b);
  const base = { roomType: 'project', roomId: projectId, type: 'text' };
  const bad = [
    { ...base, content: '' },
    { ...base, content: tag + '😀'.repeat(10001 - tag.length) }, // 10,001 code points
    { ...base, roomType: 'task', content: `${tag} type` },
    { ...base, roomId: 'abc', content: `${tag} id` },
    { roomType: 'project', roomId: projectId, type: 'text' }, // no content
    { ...base, content: 42 },
    `${tag} just a string`,
    null,
  ];
  for (const payload of bad) await expectError(a, 'VALIDATION_ERROR', 'message:send', payload);
  await nothingOf(tag, b, fromB, projectId);
  assert.ok(a.connected && b.connected);
  await sendMessage(a, 'project', projectId, `${tag} valid after all`); // the socket still works
});

test('image and file messages need an uploaded file of the sender: none is VALIDATION_ERROR, nobody\'s is NOT_FOUND', async () => {
  const { projectId, a, b } = await scene();
  const tag = `file${nonce()}`;
  const fromB = mark(b);
  const fileMeta = { fileId: 987654321, fileName: 'photo.png', fileSize: 1234, mimeType: 'image/png' };
  await expectError(a, 'NOT_FOUND', 'message:send', { roomType: 'project', roomId: projectId, type: 'image', content: `${tag} i`, ...fileMeta });
  await expectError(a, 'NOT_FOUND', 'message:send', {
    roomType: 'project',
    roomId: projectId,
    type: 'file',
    content: `${tag} f`,
    ...fileMeta,
    fileName: 'report.pdf',
    mimeType: 'application/pdf',
  });
  await expectError(a, 'VALIDATION_ERROR', 'message:send', { roomType: 'project', roomId: projectId, type: 'image', content: `${tag} none` });
  await nothingOf(tag, b, fromB, projectId);
});

test('garbage on every event never disconnects the socket nor disturbs the other sockets', async () => {
  const { projectId, a, b } = await scene();
  const G = await tasksUser();
  await grant('project', projectId, G, 'researcher');
  const g = await connectTasks(G, NODE1);
  await joinRoom(g, 'project', projectId);
  const events = ['room:join', 'room:leave', 'message:send', 'message:edit', 'message:delete', 'message:read', 'typing:start', 'typing:stop'];
  const junk = [undefined, null, 'x', 7, [], [1, 2], { type: {} }, { roomType: ['project'], roomId: { id: 1 } }, { messageId: -1, content: {} }];
  for (const event of events) {
    for (const payload of junk) {
      if (event === 'message:send' && junk.indexOf(payload) > 4) continue; // stay well under the rate limit
      if (payload === undefined) g.emit(event);
      else g.emit(event, payload);
    }
  }
  await sleep(QUIET_MS);
  assert.ok(g.connected, 'the sender of garbage stays connected');
  assert.ok(a.connected && b.connected, 'the other sockets stay connected');
  for (const e of g.__events.filter((x) => x.event === 'error')) {
    assert.match(e.data?.correlationId ?? '', /^[0-9a-f]{32}$/, `every error carries a trace id: ${JSON.stringify(e.data)}`);
    assert.equal(typeof e.data.code, 'string');
  }
  // everyone still works, across the nodes
  const fromB = mark(b);
  const fromA = mark(a);
  const fromG = mark(g);
  const m = await sendMessage(a, 'project', projectId, `after the storm ${nonce()}`);
  await waitAfter(b, fromB, 'message:new', (x) => x.message.id === m.id);
  await waitAfter(g, fromG, 'message:new', (x) => x.message.id === m.id);
  const m2 = await sendMessage(g, 'project', projectId, `g is fine ${nonce()}`);
  await waitAfter(a, fromA, 'message:new', (x) => x.message.id === m2.id);
});
