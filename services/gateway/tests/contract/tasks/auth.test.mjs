// tasks (004) handshake: a JWT in auth.token. Success: the socket connects and receives
// auth:success { userId: <number>, userRole: <global role | null> }. Failure: the socket connects
// at the Socket.IO level, receives auth:failed { message } and is disconnected by the server
// ('io server disconnect'); never a connect_error, never anything else. Websocket and
// long-polling, both nodes.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, createSession, eventsOf, forgeJwt, mintToken, nowSeconds, sleep } from '../helpers.mjs';
import { TRANSPORTS, connectTasks, joinRoom, newProject, openTasks, tasksUser, until } from './helpers.mjs';

afterEach(closeAll);

/**
 * Opens a socket with `token` and expects the refusal of the contract: connected, exactly one
 * auth:failed { message } and nothing else, then the server's disconnect.
 */
async function expectAuthFailed(node, token, transports) {
  const s = openTasks(node, token, { transports });
  await until(() => s.__disconnects.length > 0 || s.__connectErrors.length > 0, `auth:failed and a disconnect on ${s.__name}`);
  assert.deepEqual(
    s.__connectErrors.map((e) => e.message),
    [],
    'no connect_error: the refusal is auth:failed on a connected socket',
  );
  assert.equal(s.__connects, 1, 'the socket connected at the Socket.IO level first');
  assert.equal(s.__disconnects[0], 'io server disconnect', `disconnected by the server: ${s.__disconnects[0]}`);
  await sleep(QUIET_MS);
  const got = eventsOf(s);
  assert.deepEqual(
    got.map((e) => e.event),
    ['auth:failed'],
    `exactly one auth:failed and nothing else: ${JSON.stringify(got.map((e) => [e.event, e.data]))}`,
  );
  const payload = got[0].data;
  assert.ok(payload && typeof payload === 'object', `auth:failed carries an object: ${JSON.stringify(payload)}`);
  assert.equal(typeof payload.message, 'string', `auth:failed { message: string }: ${JSON.stringify(payload)}`);
  assert.ok(payload.message.length > 0, 'the message is not empty');
  assert.equal(s.connected, false, 'the socket is disconnected');
  return payload;
}

for (const transports of TRANSPORTS) {
  const [transport] = transports;

  test(`a gateway JWT connects over ${transport} on both nodes with auth:success { userId, userRole }`, async () => {
    const user = await tasksUser({ role: 'researcher' });
    for (const node of [NODE1, NODE2]) {
      const s = await connectTasks(user, node, { transports }); // asserts auth:success exactly
      assert.equal(s.io.engine.transport.name, transport, 'on the transport asked for');
      assert.equal(eventsOf(s).filter((e) => e.event === 'auth:success').length, 1, 'one auth:success');
      assert.equal(eventsOf(s).filter((e) => e.event === 'auth:failed').length, 0, 'no auth:failed');
    }
  });

  const refusals = [
    ['no token at all', () => undefined],
    ['an empty token', () => ''],
    ['a garbage token', () => 'not-a-jwt'],
    ['an expired JWT', (u) => forgeJwt({ sub: String(u.id), exp: nowSeconds() - 60 })],
    ['a JWT signed with another key', (u) => forgeJwt({ sub: String(u.id), exp: nowSeconds() + 600 }, { secret: 'not-the-key' })],
    ['an opaque session token', async (u) => (await createSession(String(u.id))).token],
  ];

  for (const [what, make] of refusals) {
    test(`${what} over ${transport}: auth:failed { message }, then disconnected by the server; no connect_error`, async () => {
      const user = await tasksUser();
      const token = await make(user);
      await expectAuthFailed(NODE1, token, transports);
      await expectAuthFailed(NODE2, token, transports);
    });
  }
}

test('userRole is the global role given to PUT /v1/users: manager, and null for a user without one', async () => {
  const manager = await tasksUser({ role: 'manager' });
  await connectTasks(manager, NODE1);
  const nobody = await tasksUser({ role: null });
  await connectTasks(nobody, NODE2, { transports: ['polling'] });
});

test('a JWT forged with the shared key works like a minted one; the authenticated socket can join its room', async () => {
  const { projectId, users } = await newProject({ roles: ['researcher'] });
  const [A] = users;
  const own = { ...A, token: forgeJwt({ sub: String(A.id), exp: nowSeconds() + 600 }) };
  const s = await connectTasks(own, NODE2);
  const { joined } = await joinRoom(s, 'project', projectId);
  assert.equal(joined.memberCount, 1);
});

test('a refused socket does not disturb an authenticated socket of the same user', async () => {
  const user = await tasksUser();
  const good = await connectTasks(user, NODE1);
  await expectAuthFailed(NODE1, forgeJwt({ sub: String(user.id), exp: nowSeconds() - 60 }), ['websocket']);
  assert.ok(good.connected, 'the authenticated socket stays connected');
  // and it still works: a fresh token for the same user connects too
  const again = await connectTasks({ ...user, token: await mintToken(String(user.id)) }, NODE2);
  assert.ok(again.connected && good.connected);
});
