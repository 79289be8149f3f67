// Handshake authentication of the app dialect (001) on /ws/app: a JWT in auth.token, over
// WebSocket and long-polling; every refusal is a connect_error whose message is the documented
// code (socket_error:unauthorized, or socket_error:token_expired for an expired JWT). Opaque
// session tokens and the connect.sid cookie are not app credentials. The identity comes from the
// token only.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  ADMIN_TOKEN,
  ALLOWED_ORIGIN,
  NODE1,
  NODE2,
  SESSION_SECRET,
  closeAll,
  createSession,
  expectConnectError,
  expectNo,
  forgeJwt,
  mintToken,
  nowSeconds,
  waitFor,
} from '../helpers.mjs';
import {
  DELIVERY_MS,
  appUrl,
  appUser,
  assertConnectError,
  connectApp,
  joinConversation,
  newConversation,
  postMessage,
  publishToUser,
  waitReady,
} from './helpers.mjs';

afterEach(closeAll);

const UNAUTHORIZED = 'socket_error:unauthorized';
const TOKEN_EXPIRED = 'socket_error:token_expired';

/** Refused on node 1 over WebSocket and on node 2 over long-polling, with `code`. */
async function expectRefusedBoth(token, code, opts = {}) {
  assertConnectError(await expectConnectError(appUrl(NODE1), token, { transports: ['websocket'], ...opts }), code);
  assertConnectError(await expectConnectError(appUrl(NODE2), token, { transports: ['polling'], ...opts }), code);
}

test('a JWT from POST /v1/tokens connects over WebSocket on both nodes', async () => {
  const user = await appUser();
  assert.equal(user.token.split('.').length, 3, 'POST /v1/tokens answers a JWT');
  for (const node of [NODE1, NODE2]) {
    const s = await connectApp(user, node, { transports: ['websocket'] });
    assert.ok(s.connected);
    assert.equal(s.io.engine.transport.name, 'websocket');
    await waitReady(s, user.id);
  }
});

test('a JWT connects over long-polling only, and the socket works end to end', async () => {
  const { conversationId, users } = await newConversation({ members: 2 });
  const [A, B] = users;
  const b = await connectApp(B, NODE2, { transports: ['polling'] });
  assert.equal(b.io.engine.transport.name, 'polling');
  await waitReady(b, B.id);
  await joinConversation(b, conversationId);
  const msg = await postMessage(conversationId, A.id, 'over long-polling', NODE1);
  const got = await waitFor(b, 'messages:new', (p) => p.message.id === msg.id, DELIVERY_MS);
  assert.equal(got.message.body, 'over long-polling');
});

test('polling with upgrade to WebSocket connects too', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE1, { transports: ['polling', 'websocket'] });
  await waitReady(s, user.id);
});

test('a JWT minted by the application with the shared key (HS256, sub, exp) connects', async () => {
  const user = await appUser();
  const token = forgeJwt({ sub: user.id, iat: nowSeconds(), exp: nowSeconds() + 600 });
  const s = await connectApp({ id: user.id, token }, NODE2);
  await waitReady(s, user.id);
});

const refusals = [
  ['a garbage token', () => 'this-is-not-a-token'],
  ['an empty token', () => ''],
  ['a JWT signed with another secret', (u) => forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }, { secret: 'not-the-secret' })],
  ['a JWT signed with the session secret', (u) => forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }, { secret: SESSION_SECRET })],
  ['a JWT with alg none', (u) => forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }, { alg: 'none' })],
  ['a JWT without exp', (u) => forgeJwt({ sub: u.id, iat: nowSeconds() })],
  ['a JWT without sub', () => forgeJwt({ exp: nowSeconds() + 600 })],
  ['a JWT with a tampered payload', (u) => {
    const [h, , s] = forgeJwt({ sub: u.id, exp: nowSeconds() + 600 }).split('.');
    const other = Buffer.from(JSON.stringify({ sub: 'someone-else', exp: nowSeconds() + 600 })).toString('base64url');
    return `${h}.${other}.${s}`;
  }],
  ['an unknown opaque token', () => 'f'.repeat(64)],
  ['the admin token', () => ADMIN_TOKEN],
];

for (const [what, make] of refusals) {
  test(`${what} is refused: connect_error socket_error:unauthorized`, async () => {
    const user = await appUser();
    await expectRefusedBoth(make(user), UNAUTHORIZED);
  });
}

test('no token at all (no auth, or auth without token) is socket_error:unauthorized', async () => {
  await expectRefusedBoth(undefined, UNAUTHORIZED);
  await expectRefusedBoth(undefined, UNAUTHORIZED, { auth: {} });
  await expectRefusedBoth(undefined, UNAUTHORIZED, { auth: { token: null } });
});

test('an opaque session token from POST /v1/sessions is refused (the app accepts JWTs only)', async () => {
  const user = await appUser();
  const session = await createSession(user.id);
  await expectRefusedBoth(session.token, UNAUTHORIZED);
});

test('the connect.sid cookie is not an app credential: socket_error:unauthorized', async () => {
  const user = await appUser();
  const session = await createSession(user.id);
  await expectRefusedBoth(undefined, UNAUTHORIZED, {
    extraHeaders: { cookie: session.cookie, origin: ALLOWED_ORIGIN },
  });
});

test('an expired JWT is refused with socket_error:token_expired', async () => {
  const user = await appUser();
  await expectRefusedBoth(forgeJwt({ sub: user.id, exp: nowSeconds() - 60 }), TOKEN_EXPIRED);
  await expectRefusedBoth(
    forgeJwt({ sub: user.id, iat: nowSeconds() - 7200, exp: nowSeconds() - 3600 }),
    TOKEN_EXPIRED,
  );
});

test('a JWT from POST /v1/tokens with a short ttl is token_expired once it has expired', async () => {
  const user = await appUser();
  const token = await mintToken(user.id, 1);
  await new Promise((r) => setTimeout(r, 2500));
  await expectRefusedBoth(token, TOKEN_EXPIRED);
});

test('the identity comes from the token only: a userId in auth or in the query is ignored', async () => {
  const A = await appUser();
  const B = await appUser();
  const s1 = await connectApp(A, NODE1, { auth: { token: A.token, userId: B.id, sub: B.id } });
  const s2 = await connectApp(A, NODE2, { query: { userId: B.id } });
  await waitReady(s1, A.id);
  await waitReady(s2, A.id);

  // Events published for B do not reach A's sockets; events for A do.
  await publishToUser(B.id, 'notifications:new', { eventKey: 'x.for-b', notification: { id: 'n-b' } });
  await publishToUser(A.id, 'notifications:new', { eventKey: 'x.for-a', notification: { id: 'n-a' } }, { node: NODE2 });
  for (const s of [s1, s2]) {
    await waitFor(s, 'notifications:new', (d) => d.eventKey === 'x.for-a', DELIVERY_MS);
  }
  await expectNo(s1, 'notifications:new', 500, (d) => d.eventKey === 'x.for-b');
  await expectNo(s2, 'notifications:new', 0, (d) => d.eventKey === 'x.for-b');
});

test('a JWT whose sub is another user identifies that user, not the one named elsewhere', async () => {
  const A = await appUser();
  const B = await appUser();
  // A token for B, presented by a client that claims to be A everywhere else.
  const s = await connectApp({ id: A.id, token: B.token }, NODE1, { auth: { token: B.token, userId: A.id } });
  await waitReady(s, B.id);
});
