// Attack: a stolen JWT stays valid until it expires. `POST /v1/users/{userId}/revoke` (admin)
// answers `{ revokedBefore }`: from then on every JWT of that user issued at or before that
// second (and any without `iat`), and every session created before it, is refused on every
// node, and every socket of the user is disconnected cluster-wide, in every namespace. A token
// issued after it connects. Other users are not touched; unknown users are fine (idempotent);
// the route needs the admin token.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ALLOWED_ORIGIN,
  NODE1,
  NODE2,
  ack,
  assertIso,
  chatHistory,
  connect,
  connectUser,
  createSession,
  expectConnectError,
  expectRefused,
  forgeJwt,
  http,
  join,
  mintToken,
  newChat,
  nowSeconds,
  putUser,
  rid,
  sleep,
  waitForDisconnect,
} from '../helpers.mjs';
import { appUrl, connectApp } from '../app/helpers.mjs';
import { openTasks, tasksUser } from '../tasks/helpers.mjs';
import { useControlClient } from './common.mjs';

useControlClient();

const revoke = (userId, body = { reason: 'credentials leaked' }, opts = {}) =>
  http('POST', `/v1/users/${encodeURIComponent(userId)}/revoke`, { body, ...opts });

/** A 200 answer `{ revokedBefore: <ISO-8601> }` close to now; answers the second it names. */
function assertRevoked(res) {
  assert.equal(res.status, 200, `POST /revoke: ${res.status} ${res.text.slice(0, 300)}`);
  assertIso(res.json?.revokedBefore, 'revokedBefore');
  const at = Date.parse(res.json.revokedBefore);
  assert.ok(Math.abs(at - Date.now()) < 60_000, `revokedBefore is about now: ${res.json.revokedBefore}`);
  return Math.floor(at / 1000);
}

test("a revoke refuses the user's earlier JWTs on both nodes and disconnects every socket of theirs cluster-wide; others are untouched; a later token connects", async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const [U, W] = users;
  const minted = U.token; // POST /v1/tokens: carries iat
  const now = nowSeconds();
  const forgedOld = forgeJwt({ sub: U.id, iat: now - 30, exp: now + 600 });
  const forgedNoIat = forgeJwt({ sub: U.id, exp: now + 600 });

  const sockets = [
    await connect(NODE1, minted, { name: 'U minted @1' }),
    await connect(NODE2, forgedOld, { name: 'U forged @2' }),
    await connect(NODE1, forgedNoIat, { name: 'U no-iat @1' }),
    await connectApp(U, NODE2),
  ];
  const bystander = await connectUser(W, NODE2);
  await join(bystander, chatId);
  const gone = sockets.map((s) => waitForDisconnect(s, 10000));

  const revokedSecond = assertRevoked(await revoke(U.id));
  const reasons = await Promise.all(gone);
  for (const r of reasons) assert.equal(r, 'io server disconnect', 'each socket of the user was disconnected by the server');

  // Every credential issued up to that second is refused, on both nodes and in every namespace.
  const sameSecond = forgeJwt({ sub: U.id, iat: revokedSecond, exp: revokedSecond + 600 });
  for (const node of [NODE1, NODE2]) {
    for (const [what, token] of [
      ['the minted JWT', minted],
      ['an earlier forged JWT', forgedOld],
      ['a JWT without iat', forgedNoIat],
      ['a JWT issued in the revoke second', sameSecond],
    ]) {
      const err = await expectConnectError(node, token);
      assert.equal(err.message, 'UNAUTHORIZED', `${what} on ${node}: ${err.message}`);
    }
    const appErr = await expectConnectError(appUrl(node), minted);
    assert.equal(appErr.message, 'socket_error:unauthorized', `app on ${node}: ${appErr.message}`);
  }
  // The user routes refuse it too.
  const history = await chatHistory(chatId, minted, {}, NODE2);
  assert.equal(history.status, 401, `history with a revoked JWT: ${history.status} ${history.text.slice(0, 200)}`);

  // The other member was not touched.
  assert.ok(bystander.connected, 'another user of the same chat stays connected');
  assert.deepEqual(await ack(bystander, 'room:join', { chatId }), { ok: true });

  // A token issued after the revoke second connects (iat has a one-second resolution).
  await sleep(1100);
  const fresh = await mintToken(U.id);
  for (const node of [NODE1, NODE2]) {
    const s = await connect(node, fresh, { name: `U fresh @${node}` });
    assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true });
  }
  const later = forgeJwt({ sub: U.id, iat: nowSeconds(), exp: nowSeconds() + 600 });
  const s = await connect(NODE2, later, { name: 'U later forged' });
  assert.ok(s.connected);
});

test('a revoke reaches a tasks socket too (disconnected), and its old token is refused with auth:failed', async () => {
  const T = await tasksUser();
  const first = openTasks(NODE1, T.token);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no auth:success within 10 s')), 10000);
    first.once('auth:success', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  const gone = waitForDisconnect(first, 10000);
  assertRevoked(await revoke(String(T.id)));
  assert.equal(await gone, 'io server disconnect');
  const again = openTasks(NODE2, T.token);
  const failed = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no auth:failed within 10 s')), 10000);
    again.once('auth:failed', (d) => {
      clearTimeout(timer);
      resolve(d);
    });
    again.once('auth:success', () => reject(new Error('a revoked token was accepted on /tasks')));
  });
  assert.equal(typeof failed.message, 'string');
});

test("a revoke also refuses the user's earlier sessions (token and connect.sid cookie); a session created afterwards connects", async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const [U] = users;
  const before = await createSession(U.id);
  const live = await connect(NODE2, before.token, { name: 'U session @2' });
  const gone = waitForDisconnect(live, 10000);
  assertRevoked(await revoke(U.id, { reason: 'logout everywhere' }, { node: NODE2 }));
  assert.equal(await gone, 'io server disconnect', 'the session socket was disconnected');
  await expectRefused(NODE1, before.token, 'UNAUTHORIZED');
  const cookieErr = await expectConnectError(NODE2, undefined, { extraHeaders: { cookie: before.cookie, origin: ALLOWED_ORIGIN } });
  assert.equal(cookieErr.message, 'UNAUTHORIZED', `the session's cookie: ${cookieErr.message}`);
  await sleep(1100);
  const after = await createSession(U.id);
  const s = await connect(NODE1, after.token, { name: 'U new session @1' });
  assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true });
});

test('revoking an unknown user is 200, and revoking twice is fine', async () => {
  assertRevoked(await revoke(rid('nobody')));
  const id = rid('twice');
  assertRevoked(await revoke(id, {}));
  assertRevoked(await revoke(id, undefined, { node: NODE2 }));
});

test('the revoke route needs the admin token: no token or a user JWT is 401, and nothing is revoked', async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const [U] = users;
  const s = await connectUser(U, NODE1);
  for (const token of [null, U.token, 'not-the-admin-token']) {
    const res = await revoke(U.id, { reason: 'x' }, { token });
    assert.equal(res.status, 401, `POST /revoke with ${token === null ? 'no token' : 'a wrong token'}: ${res.status}`);
  }
  await sleep(300);
  assert.ok(s.connected, 'the user was not disconnected');
  assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true });
  const again = await connect(NODE2, U.token);
  assert.ok(again.connected, 'the token still connects');
});

test('a revoke of one user leaves a user whose id shares its prefix alone', async () => {
  const base = rid('pfx');
  const victim = { id: base };
  const neighbour = { id: `${base}0` };
  for (const u of [victim, neighbour]) {
    await putUser(u.id);
    u.token = await mintToken(u.id);
  }
  assertRevoked(await revoke(victim.id));
  await expectRefused(NODE1, victim.token, 'UNAUTHORIZED');
  const s = await connect(NODE1, neighbour.token);
  assert.ok(s.connected, `${neighbour.id} is not revoked by ${victim.id}'s revoke`);
});
