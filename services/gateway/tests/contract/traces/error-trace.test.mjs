// The trace of an error (issue #18): a socket event the messages service refuses (a reply to a
// message that does not exist) answers `error` with a `correlationId`, and so does a send
// through the integration API that the messages service refuses (NUL in its content). The harness (tests/contract.rs
// `trace_of_an_error`) runs every process at RUST_LOG=warn, exporting to an OTLP receiver of
// its own; it reads the correlation ids written here and checks that the gateway's and the
// messages service's spans of that send share that trace.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';

import { closeAll, http } from '../helpers.mjs';
import { connectTasks, expectError, joinRoom, newProject, nonce } from '../tasks/helpers.mjs';

after(closeAll);

const HEX32 = /^[0-9a-f]{32}$/;

test('a refused send answers a correlationId that is a 128-bit trace id', async () => {
  const { projectId, users } = await newProject();
  const a = await connectTasks(users[0]);
  await joinRoom(a, 'project', projectId);
  const err = await expectError(a, 'NOT_FOUND', 'message:send', {
    roomType: 'project',
    roomId: projectId,
    content: `a reply to nothing ${nonce()}`,
    replyToId: 1_999_999_999,
  });
  assert.match(err.correlationId, HEX32);
  const [high, low] = [err.correlationId.slice(0, 16), err.correlationId.slice(16)];
  assert.notEqual(high, low, `not a made-up id of two equal halves: ${err.correlationId}`);
  record('socket', err.correlationId);
});

test('a send the messages service refuses answers a correlationId too', async () => {
  const { projectId, users } = await newProject();
  const res = await http('POST', `/v1/rooms/project/${projectId}/messages`, {
    body: { senderId: String(users[0].id), content: `nul \u0000 ${nonce()}` },
  });
  assert.equal(res.status, 400, res.text);
  assert.equal(res.json.error, 'VALIDATION_ERROR');
  assert.match(res.json.correlationId, HEX32);
  record('api', res.json.correlationId);
});

/** Hands `correlationId` to the harness, which looks for its trace. */
function record(kind, correlationId) {
  fs.appendFileSync(path.join(process.env.SB_TEMP_DIR, 'correlation-ids.txt'), `${kind} ${correlationId}\n`);
}
