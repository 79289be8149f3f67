// vault (003) handshake on /vault: a JWT or an opaque session token in auth.token, or NextAuth's
// session cookie (`next-auth.session-token`, or `__Secure-next-auth.session-token`) carrying the
// opaque session token, behind the Origin allow-list (no Origin at all is accepted); over
// websocket and long-polling, on both nodes. Every refusal is connect_error UNAUTHORIZED.
// Revoking a session disconnects its sockets.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { afterEach, test } from 'node:test';
import { ALLOWED_ORIGIN, NODE1, NODE2, closeAll, createSession, forgeJwt, http, nowSeconds, waitForDisconnect } from '../helpers.mjs';
import {
  SECURE_COOKIE_NAME,
  TRANSPORTS,
  connectVault,
  expectVaultRefused,
  joinVault,
  newVault,
  sessionCookie,
  vaultUser,
} from './helpers.mjs';

afterEach(closeAll);

/** A vault with one owner: `{ vaultId, user }`. */
async function ownerOfAVault() {
  const { vaultId, users } = await newVault({ roles: ['owner'] });
  return { vaultId, user: users[0] };
}

/** The handshake worked, as this user: the socket joins the user's vault with the user's role. */
async function assertWorks(socket, vaultId, role, transport) {
  assert.ok(socket.connected, 'connected');
  if (transport) assert.equal(socket.io.engine.transport.name, transport, 'on the transport asked for');
  await joinVault(socket, vaultId, role);
}

const revoke = async (token) => {
  const res = await http('DELETE', `/v1/sessions/${encodeURIComponent(token)}`);
  assert.ok(res.status >= 200 && res.status < 300, `DELETE /v1/sessions → ${res.status} ${res.text}`);
};

for (const transports of TRANSPORTS) {
  const [transport] = transports;

  test(`a JWT from POST /v1/tokens in auth.token connects over ${transport} on both nodes`, async () => {
    const { vaultId, user } = await ownerOfAVault();
    assert.equal(user.jwt.split('.').length, 3, 'a JWT');
    for (const node of [NODE1, NODE2]) {
      await assertWorks(await connectVault(user, node, { via: 'jwt', transports }), vaultId, 'owner', transport);
    }
  });

  test(`an opaque session token from POST /v1/sessions in auth.token connects over ${transport} on both nodes`, async () => {
    const { vaultId, user } = await ownerOfAVault();
    for (const node of [NODE1, NODE2]) {
      await assertWorks(await connectVault(user, node, { via: 'session', transports }), vaultId, 'owner', transport);
    }
  });

  test(`the next-auth.session-token cookie from the allowed Origin connects over ${transport} on both nodes`, async () => {
    const { vaultId, user } = await ownerOfAVault();
    assert.equal(user.cookie, `next-auth.session-token=${user.sessionToken}`);
    for (const node of [NODE1, NODE2]) {
      await assertWorks(await connectVault(user, node, { via: 'cookie', transports }), vaultId, 'owner', transport);
    }
  });

  test(`the __Secure-next-auth.session-token cookie connects over ${transport} on both nodes`, async () => {
    const { vaultId, user } = await ownerOfAVault();
    for (const node of [NODE1, NODE2]) {
      await assertWorks(await connectVault(user, node, { via: 'secureCookie', transports }), vaultId, 'owner', transport);
    }
  });

  test(`the session cookie without any Origin header connects over ${transport}`, async () => {
    const { vaultId, user } = await ownerOfAVault();
    await assertWorks(await connectVault(user, NODE2, { via: 'cookie', transports, origin: null }), vaultId, 'owner', transport);
    await assertWorks(await connectVault(user, NODE1, { via: 'secureCookie', transports, origin: null }), vaultId, 'owner', transport);
  });

  test(`the session cookie among NextAuth's other cookies connects over ${transport}`, async () => {
    const { vaultId, user } = await ownerOfAVault();
    const cookie = `next-auth.csrf-token=abc%7Cdef; ${user.cookie}; next-auth.callback-url=http%3A%2F%2Fallowed.example`;
    await assertWorks(await connectVault(user, NODE1, { via: 'cookie', transports, cookie }), vaultId, 'owner', transport);
  });
}

test('a JWT minted by the application with the shared key (HS256, sub, exp) connects', async () => {
  const { vaultId, user } = await ownerOfAVault();
  const token = forgeJwt({ sub: user.id, iat: nowSeconds(), exp: nowSeconds() + 600 });
  await assertWorks(await connectVault(user, NODE2, { token }), vaultId, 'owner');
});

test('the identity comes from the credential: a userId in auth or in the query is ignored', async () => {
  // A is the owner, B a viewer: A's credential with B's id still joins as A (owner).
  const { vaultId, users } = await newVault({ roles: ['owner', 'viewer'] });
  const [A, B] = users;
  const s = await connectVault(A, NODE1, { auth: { token: A.jwt, userId: B.id }, query: { userId: B.id } });
  await joinVault(s, vaultId, 'owner');
  const c = await connectVault(A, NODE2, { via: 'cookie', auth: { userId: B.id }, transports: ['polling'] });
  await joinVault(c, vaultId, 'owner');
});

/** Refused handshakes: each makes the handshake options for a user (a fresh vault owner). */
const refusals = [
  ['no credential at all', () => ({})],
  ['no credential and no Origin', () => ({ origin: null })],
  ['an expired JWT', (u) => ({ token: forgeJwt({ sub: u.id, iat: nowSeconds() - 600, exp: nowSeconds() - 60 }) })],
  ['a JWT signed with another key', (u) => ({
    token: forgeJwt({ sub: u.id, iat: nowSeconds(), exp: nowSeconds() + 600 }, { secret: 'not-the-jwt-secret' }),
  })],
  ['an unsigned JWT (alg none)', (u) => ({ token: forgeJwt({ sub: u.id, iat: nowSeconds(), exp: nowSeconds() + 600 }, { alg: 'none' }) })],
  ['a JWT without exp', (u) => ({ token: forgeJwt({ sub: u.id, iat: nowSeconds() }) })],
  ['an unknown opaque session token in auth.token', () => ({ token: crypto.randomBytes(32).toString('base64url') })],
  ['an empty auth.token', () => ({ token: '' })],
  ['an unknown session token in the next-auth.session-token cookie', () => ({
    cookie: sessionCookie(crypto.randomBytes(32).toString('base64url')),
  })],
  ['an unknown session token in the __Secure- cookie', () => ({
    cookie: sessionCookie(crypto.randomBytes(32).toString('base64url'), SECURE_COOKIE_NAME),
  })],
  ['the session token under another cookie name (next-auth.csrf-token)', (u) => ({ cookie: `next-auth.csrf-token=${u.sessionToken}` })],
  ['a valid session cookie from a foreign Origin', (u) => ({ cookie: u.cookie, origin: 'http://evil.example' })],
  ['a valid __Secure- session cookie from a foreign Origin', (u) => ({
    cookie: sessionCookie(u.sessionToken, SECURE_COOKIE_NAME),
    origin: 'http://evil.example',
  })],
  ['a valid session cookie from an Origin that only extends the allowed one', (u) => ({
    cookie: u.cookie,
    origin: `${ALLOWED_ORIGIN}.evil.example`,
  })],
];

for (const [what, make] of refusals) {
  test(`${what} is refused with connect_error UNAUTHORIZED (websocket and polling, both nodes)`, async () => {
    const { user } = await ownerOfAVault();
    const opts = make(user);
    await expectVaultRefused(NODE1, { ...opts, transports: ['websocket'] });
    await expectVaultRefused(NODE2, { ...opts, transports: ['polling'] });
  });
}

test('a revoked session is refused with UNAUTHORIZED, in auth.token and in either cookie', async () => {
  const { user } = await ownerOfAVault();
  await revoke(user.sessionToken);
  for (const [node, transports] of [[NODE1, ['websocket']], [NODE2, ['polling']]]) {
    await expectVaultRefused(node, { token: user.sessionToken, transports });
    await expectVaultRefused(node, { cookie: user.cookie, transports });
    await expectVaultRefused(node, { cookie: sessionCookie(user.sessionToken, SECURE_COOKIE_NAME), transports });
  }
});

test("DELETE /v1/sessions/{token} disconnects that session's /vault sockets on both nodes; the user's other credentials stay", async () => {
  const { vaultId, user } = await ownerOfAVault();
  const other = await createSession(user.id);
  const viaToken = await connectVault(user, NODE1, { via: 'session' });
  const viaCookie = await connectVault(user, NODE2, { via: 'cookie', transports: ['polling'] });
  const viaSecure = await connectVault(user, NODE2, { via: 'secureCookie' });
  await joinVault(viaToken, vaultId, 'owner');
  const otherSession = await connectVault(user, NODE2, { token: other.token, name: 'other-session' });
  const viaJwt = await connectVault(user, NODE1, { via: 'jwt', name: 'jwt' });

  await revoke(user.sessionToken);
  await waitForDisconnect(viaToken, 10000);
  await waitForDisconnect(viaCookie, 10000);
  await waitForDisconnect(viaSecure, 10000);
  assert.ok(otherSession.connected, "the user's other session stays connected");
  assert.ok(viaJwt.connected, "the user's JWT socket stays connected");
  await joinVault(otherSession, vaultId, 'owner');
  await joinVault(viaJwt, vaultId, 'owner');
});

test('a user without any vault connects (membership is checked on vault:join, not at the handshake)', async () => {
  const user = await vaultUser();
  const s = await connectVault(user, NODE1, { via: 'cookie' });
  assert.ok(s.connected);
});
