// Handshake authentication (002): JWT or opaque session token in auth.token or ?token=, the
// connect.sid cookie behind the Origin allow-list; every refusal is connect_error UNAUTHORIZED.
// Also: the admin API refuses missing/wrong admin tokens, and long-polling works end to end.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  ADMIN_TOKEN,
  ALLOWED_ORIGIN,
  JWT_SECRET,
  NODE1,
  NODE2,
  SESSION_SECRET,
  ack,
  assertHttpError,
  closeAll,
  connect,
  connectUser,
  createSession,
  expectRefused,
  forgeJwt,
  http,
  join,
  mintToken,
  newChat,
  newUser,
  nowSeconds,
  send,
  waitFor,
  waitForDisconnect,
} from '../helpers.mjs';

afterEach(closeAll);

/** The handshake worked and the socket is usable as this user (it can join its own chat). */
async function assertWorks(socket, chatId) {
  assert.ok(socket.connected);
  const res = await ack(socket, 'room:join', { chatId });
  assert.deepEqual(res, { ok: true });
}

async function memberOfAChat() {
  const { chatId, users } = await newChat({ members: 1 });
  return { chatId, user: users[0] };
}

test('a JWT from POST /v1/tokens connects on both nodes', async () => {
  const { chatId, user } = await memberOfAChat();
  const token = await mintToken(user.id);
  assert.equal(token.split('.').length, 3, 'a JWT');
  for (const node of [NODE1, NODE2]) await assertWorks(await connect(node, token), chatId);
});

test('a JWT minted by the application with the shared key (HS256, sub, exp) connects', async () => {
  const { chatId, user } = await memberOfAChat();
  const token = forgeJwt({ sub: user.id, iat: nowSeconds(), exp: nowSeconds() + 600 });
  await assertWorks(await connect(NODE2, token), chatId);
});

test('an opaque session token connects through auth.token', async () => {
  const { chatId, user } = await memberOfAChat();
  const session = await createSession(user.id);
  assert.equal(typeof session.expiresAt, 'string');
  assert.ok(!Number.isNaN(Date.parse(session.expiresAt)), 'expiresAt is a time');
  await assertWorks(await connect(NODE1, session.token), chatId);
});

test('an opaque session token connects through the ?token= query', async () => {
  const { chatId, user } = await memberOfAChat();
  const session = await createSession(user.id);
  await assertWorks(await connect(NODE2, undefined, { query: { token: session.token } }), chatId);
});

test('a JWT connects through the ?token= query', async () => {
  const { chatId, user } = await memberOfAChat();
  await assertWorks(await connect(NODE1, undefined, { query: { token: user.token } }), chatId);
});

test('the connect.sid cookie connects from an allowed Origin (websocket and polling)', async () => {
  const { chatId, user } = await memberOfAChat();
  const session = await createSession(user.id);
  assert.match(session.cookie, /^connect\.sid=s%3A/, 'express-session signed cookie');
  const extraHeaders = { Cookie: session.cookie, Origin: ALLOWED_ORIGIN };
  await assertWorks(await connect(NODE1, undefined, { extraHeaders }), chatId);
  await assertWorks(await connect(NODE2, undefined, { extraHeaders, transports: ['polling'] }), chatId);
});

test('the connect.sid cookie from another Origin is UNAUTHORIZED', async () => {
  const { user } = await memberOfAChat();
  const session = await createSession(user.id);
  const extraHeaders = { Cookie: session.cookie, Origin: 'http://evil.example' };
  await expectRefused(NODE1, undefined, 'UNAUTHORIZED', { extraHeaders });
  await expectRefused(NODE2, undefined, 'UNAUTHORIZED', { extraHeaders });
});

test('a connect.sid cookie with a forged signature is UNAUTHORIZED', async () => {
  const { user } = await memberOfAChat();
  const session = await createSession(user.id);
  const value = decodeURIComponent(session.cookie.slice('connect.sid='.length)); // s:<sid>.<sig>
  const sid = value.slice(2, value.lastIndexOf('.'));
  const forged = `connect.sid=${encodeURIComponent(`s:${sid}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`)}`;
  await expectRefused(NODE1, undefined, 'UNAUTHORIZED', { extraHeaders: { Cookie: forged, Origin: ALLOWED_ORIGIN } });
});

const refusals = [
  ['an expired JWT', (u) => forgeJwt({ sub: u.id, iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 })],
  ['a JWT signed with another secret', (u) => forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }, { secret: 'not-the-secret' })],
  ['a JWT with alg none', (u) => forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }, { alg: 'none' })],
  ['a JWT without exp', (u) => forgeJwt({ sub: u.id, iat: nowSeconds() })],
  ['a JWT without sub', () => forgeJwt({ exp: nowSeconds() + 600 })],
  ['a JWT signed with the session secret', (u) => forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }, { secret: SESSION_SECRET })],
  ['a JWT with a tampered payload', (u) => {
    const good = forgeJwt({ sub: u.id, exp: nowSeconds() + 600 });
    const [h, , s] = good.split('.');
    const other = Buffer.from(JSON.stringify({ sub: 'someone-else', exp: nowSeconds() + 600 })).toString('base64url');
    return `${h}.${other}.${s}`;
  }],
  ['a garbage token', () => 'this-is-not-a-token'],
  ['an unknown session token', () => 'f'.repeat(64)],
  ['the admin token', () => ADMIN_TOKEN],
  ['an empty token', () => ''],
];

for (const [what, make] of refusals) {
  test(`${what} is refused: connect_error UNAUTHORIZED`, async () => {
    const user = await newUser();
    const token = make(user);
    await expectRefused(NODE1, token);
    await expectRefused(NODE2, undefined, 'UNAUTHORIZED', { query: { token } });
  });
}

test('no token at all is refused: connect_error UNAUTHORIZED', async () => {
  await expectRefused(NODE1, undefined);
  await expectRefused(NODE2, undefined, 'UNAUTHORIZED', { auth: {} });
});

test('a revoked session disconnects its live sockets and can no longer connect', async () => {
  const { user } = await memberOfAChat();
  const session = await createSession(user.id);
  const other = await createSession(user.id);
  const s1 = await connect(NODE1, session.token);
  const s2 = await connect(NODE2, undefined, { extraHeaders: { Cookie: session.cookie, Origin: ALLOWED_ORIGIN } });
  const untouched = await connect(NODE2, other.token); // another session of the same user

  const res = await http('DELETE', `/v1/sessions/${encodeURIComponent(session.token)}`);
  assert.ok(res.status >= 200 && res.status < 300, `DELETE /v1/sessions → ${res.status} ${res.text}`);
  await waitForDisconnect(s1, 5000);
  await waitForDisconnect(s2, 5000);
  await expectRefused(NODE1, session.token);
  await expectRefused(NODE2, undefined, 'UNAUTHORIZED', {
    extraHeaders: { Cookie: session.cookie, Origin: ALLOWED_ORIGIN },
  });
  assert.ok(untouched.connected, "the user's other session stays connected");
  assert.equal((await ack(untouched, 'presence:ping', {})).ok, true);
});

test('admin routes without the admin token, or with a wrong one, are 401', async () => {
  const user = await newUser();
  const probes = [
    ['PUT', `/v1/users/${user.id}`, { username: 'x' }],
    ['PUT', '/v1/rooms/chat/c-nope', { type: 'group', title: 't' }],
    ['POST', '/v1/tokens', { userId: user.id }],
    ['POST', '/v1/sessions', { userId: user.id }],
    ['POST', `/v1/users/${user.id}/events`, { event: 'x', data: {} }],
  ];
  for (const [method, path, body] of probes) {
    for (const node of [NODE1, NODE2]) {
      assertHttpError(await http(method, path, { body, token: null, node }), 401, 'UNAUTHORIZED');
      assertHttpError(await http(method, path, { body, token: 'wrong-admin-token', node }), 401, 'UNAUTHORIZED');
    }
  }
  // A user's own credential is not an admin token either.
  const res = await http('POST', '/v1/tokens', { body: { userId: user.id }, token: user.token });
  assert.ok([401, 403].includes(res.status), `a user token on an admin route: ${res.status}`);
  // The JWT secret itself is not the admin token.
  const secret = await http('POST', '/v1/tokens', { body: { userId: user.id }, token: JWT_SECRET });
  assertHttpError(secret, 401, 'UNAUTHORIZED');
});

test('long-polling only: connect, send and receive', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await connectUser(A, NODE1, { transports: ['polling'] });
  const b = await connectUser(B, NODE2, { transports: ['polling'] });
  assert.equal(a.io.engine.transport.name, 'polling');
  await join(a, chat.chatId);
  await join(b, chat.chatId);
  const sent = await send(a, chat.chatId, 'over long-polling');
  const m = await waitFor(b, 'message:new', (x) => x.clientId === sent.clientId, 5000);
  assert.equal(m.body, 'over long-polling');
  const back = await send(b, chat.chatId, 'and back');
  await waitFor(a, 'message:new', (x) => x.clientId === back.clientId, 5000);
});

test('polling with upgrade to websocket works too', async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const a = await connectUser(A, NODE2, { transports: ['polling', 'websocket'] });
  const b = await connectUser(B, NODE1);
  await join(a, chat.chatId);
  await join(b, chat.chatId);
  const sent = await send(b, chat.chatId, 'to an upgraded socket');
  await waitFor(a, 'message:new', (x) => x.clientId === sent.clientId, 5000);
});
