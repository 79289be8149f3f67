// The files API (POST /v1/files, GET /v1/files/{fileId}) and tasks' image and file messages:
// uploads with the user's own credential only, the limits at their exact boundary (images
// 10 MiB, other files 50 MiB; one byte more is 413 and leaves neither a row nor an object),
// the stored name, size and type carried by messages, and downloads for the uploader and the
// members of a room where the file was sent (404 for everyone else).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, test } from 'node:test';
import pg from 'pg';
import { ADMIN_TOKEN, DATABASE_URL, NODE1, NODE2, closeAll, createSession } from '../helpers.mjs';
import {
  connectTasks,
  expectError,
  grant,
  joinRoom,
  mark,
  newProject,
  nonce,
  tasksUser,
  waitUnlessError,
} from './helpers.mjs';

afterEach(closeAll);

const MIB = 1_048_576;
const FILES_DIR = process.env.SB_FILES_DIR ?? '';

/** POST /v1/files with one `file` field; answers `{ status, json }`. */
async function upload(bytes, { name = 'a.bin', type = 'application/octet-stream', token, cookie, node = NODE1 } = {}) {
  const form = new FormData();
  form.append('file', new Blob([bytes], { type }), name);
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (cookie) headers.cookie = cookie;
  const res = await fetch(new URL('/v1/files', node), { method: 'POST', body: form, headers, signal: AbortSignal.timeout(60000) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text };
}

async function download(fileId, token, node = NODE2) {
  const res = await fetch(new URL(`/v1/files/${fileId}`, node), {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(60000),
  });
  return { status: res.status, body: Buffer.from(await res.arrayBuffer()), headers: res.headers };
}

async function fileRows() {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  try {
    return Number((await client.query('SELECT count(*) AS n FROM files')).rows[0].n);
  } finally {
    await client.end();
  }
}

/** Regular files under the store's folder (uploads in progress included). */
function storedObjects(dir = FILES_DIR) {
  if (!dir || !fs.existsSync(dir)) return 0;
  let n = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    n += entry.isDirectory() ? storedObjects(p) : 1;
  }
  return n;
}

test('an upload answers { fileId, fileName, fileSize, mimeType }; the uploader downloads the same bytes', async () => {
  const U = await tasksUser();
  const bytes = Buffer.from(`hello ${nonce()}`);
  const res = await upload(bytes, { name: 'notes.txt', type: 'text/plain', token: U.token });
  assert.equal(res.status, 201, res.text);
  assert.deepEqual(Object.keys(res.json).sort(), ['fileId', 'fileName', 'fileSize', 'mimeType']);
  assert.ok(Number.isInteger(res.json.fileId) && res.json.fileId > 0);
  assert.equal(res.json.fileName, 'notes.txt');
  assert.equal(res.json.fileSize, bytes.length);
  assert.equal(res.json.mimeType, 'text/plain');
  const got = await download(res.json.fileId, U.token);
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, bytes);
  assert.equal(got.headers.get('content-type'), 'text/plain');
});

test('uploads need a user credential: none is 401, the admin token is 403; a session cookie works', async () => {
  const none = await upload(Buffer.from('x'));
  assert.equal(none.status, 401, none.text);
  const adminUpload = await upload(Buffer.from('x'), { token: ADMIN_TOKEN });
  assert.equal(adminUpload.status, 403, adminUpload.text);
  const U = await tasksUser();
  const session = await createSession(String(U.id));
  const viaCookie = await upload(Buffer.from('x'), { cookie: session.cookie });
  assert.equal(viaCookie.status, 201, viaCookie.text);
});

test('images up to exactly 10 MiB are accepted, one byte more is 413 and leaves no row and no object', async () => {
  const U = await tasksUser();
  const ok = await upload(Buffer.alloc(10 * MIB, 1), { name: 'big.png', type: 'image/png', token: U.token });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.json.fileSize, 10 * MIB);
  const rows = await fileRows();
  const objects = storedObjects();
  const over = await upload(Buffer.alloc(10 * MIB + 1, 1), { name: 'big.png', type: 'image/png', token: U.token });
  assert.equal(over.status, 413, over.text);
  assert.equal(await fileRows(), rows, 'no row for the refused upload');
  assert.equal(storedObjects(), objects, 'no object for the refused upload');
});

test('other files up to exactly 50 MiB are accepted, one byte more is 413', async () => {
  const U = await tasksUser();
  const ok = await upload(Buffer.alloc(50 * MIB, 2), { name: 'data.pdf', type: 'application/pdf', token: U.token });
  assert.equal(ok.status, 201, ok.text);
  assert.equal(ok.json.fileSize, 50 * MIB);
  const over = await upload(Buffer.alloc(50 * MIB + 1, 2), { name: 'data.pdf', type: 'application/pdf', token: U.token });
  assert.equal(over.status, 413, over.text);
});

test('image and file messages carry the stored file; members of the room may download it, nobody else', async () => {
  const { projectId, users } = await newProject({ roles: ['researcher', 'researcher'] });
  const [A, B] = users;
  const outsider = await tasksUser();
  const a = await connectTasks(A, NODE1);
  const b = await connectTasks(B, NODE2);
  await joinRoom(a, 'project', projectId);
  await joinRoom(b, 'project', projectId);

  const png = Buffer.from(`png ${nonce()}`);
  const up = await upload(png, { name: 'chart.png', type: 'image/png', token: A.token });
  assert.equal(up.status, 201, up.text);
  // Before it is sent, only its uploader may download it.
  assert.equal((await download(up.json.fileId, B.token)).status, 404);

  const from = mark(b);
  // The client's own name, size and type are ignored: the stored file's are used.
  a.emit('message:send', {
    roomType: 'project',
    roomId: projectId,
    type: 'image',
    content: '',
    fileId: up.json.fileId,
    fileName: 'forged.exe',
    fileSize: 1,
    mimeType: 'application/x-msdownload',
  });
  const { message } = await waitUnlessError(b, from, 'message:new', (x) => x.message.fileId === up.json.fileId);
  assert.equal(message.type, 'image');
  assert.equal(message.content, '');
  assert.equal(message.fileName, 'chart.png');
  assert.equal(message.fileSize, png.length);
  assert.equal(message.mimeType, 'image/png');

  const got = await download(up.json.fileId, B.token);
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, png);
  assert.equal((await download(up.json.fileId, outsider.token)).status, 404, 'a non-member gets 404');
  assert.equal((await download(999_999_999, A.token)).status, 404, 'no such file');

  // Another user's file cannot be sent; an image message needs an image.
  await grant('project', projectId, outsider, 'researcher');
  const o = await connectTasks(outsider, NODE1);
  await joinRoom(o, 'project', projectId);
  await expectError(o, 'NOT_FOUND', 'message:send', { roomType: 'project', roomId: projectId, type: 'file', content: 'x', fileId: up.json.fileId });
  const pdf = await upload(Buffer.from('%PDF-1.4'), { name: 'paper.pdf', type: 'application/pdf', token: A.token });
  await expectError(a, 'VALIDATION_ERROR', 'message:send', { roomType: 'project', roomId: projectId, type: 'image', content: 'x', fileId: pdf.json.fileId });
  const fromB = mark(b);
  a.emit('message:send', { roomType: 'project', roomId: projectId, type: 'file', content: 'the paper', fileId: pdf.json.fileId });
  const file = await waitUnlessError(b, fromB, 'message:new', (x) => x.message.fileId === pdf.json.fileId);
  assert.equal(file.message.fileName, 'paper.pdf');
  assert.equal(file.message.mimeType, 'application/pdf');
});
