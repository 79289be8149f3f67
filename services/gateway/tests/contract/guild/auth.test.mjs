// guild (000) handshake: only express-session's signed connect.sid cookie, behind the Origin
// allow-list (no Origin at all is accepted), over websocket and long-polling, on both nodes.
// Every refusal is connect_error E_UNAUTHORIZED; revoking the session disconnects its sockets.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { afterEach, test } from 'node:test';
import { ALLOWED_ORIGIN, NODE1, NODE2, SESSION_SECRET, closeAll, createSession, http, mintToken, waitForDisconnect } from '../helpers.mjs';
import {
  TRANSPORTS,
  connectGuild,
  cookieFor,
  expectGuildRefused,
  joinServer,
  newGuild,
  sidOf,
  signSid,
} from './helpers.mjs';

afterEach(closeAll);

/** A server with one member: `{ serverId, user }`. */
async function memberOfAServer() {
  const g = await newGuild({ members: 1, channels: 0 });
  return { serverId: g.serverId, user: g.users[0] };
}

/** The handshake worked, as this user: the socket can join the user's server. */
async function assertWorks(socket, serverId, transport) {
  assert.ok(socket.connected, 'connected');
  if (transport) assert.equal(socket.io.engine.transport.name, transport, 'on the transport asked for');
  await joinServer(socket, serverId);
}

test('POST /v1/sessions answers an express-session signed connect.sid cookie', async () => {
  const { user } = await memberOfAServer();
  const value = decodeURIComponent(user.cookie.slice('connect.sid='.length));
  const sid = sidOf(user.cookie);
  assert.equal(value, `s:${signSid(sid, SESSION_SECRET.split(',')[0])}`, 'signed with the session secret (cookie-signature)');
});

for (const transports of TRANSPORTS) {
  const [transport] = transports;

  test(`the connect.sid cookie from the allowed Origin connects over ${transport} on both nodes`, async () => {
    const { serverId, user } = await memberOfAServer();
    for (const node of [NODE1, NODE2]) {
      await assertWorks(await connectGuild(user, node, { transports }), serverId, transport);
    }
  });

  test(`a valid cookie without any Origin header connects over ${transport}`, async () => {
    const { serverId, user } = await memberOfAServer();
    await assertWorks(await connectGuild(user, NODE2, { transports, origin: null }), serverId, transport);
    await assertWorks(await connectGuild(user, NODE1, { transports, origin: null }), serverId, transport);
  });

  test(`the connect.sid cookie among other cookies connects over ${transport}`, async () => {
    const { serverId, user } = await memberOfAServer();
    const cookie = `theme=dark; ${user.cookie}; _ga=GA1.2.3`;
    await assertWorks(await connectGuild(user, NODE1, { transports, cookie }), serverId, transport);
  });
}

/** Refused handshakes: each makes the handshake options for a user (a fresh server member). */
const refusals = [
  ['no cookie', () => ({ cookie: null })],
  ['no cookie and no Origin', () => ({ cookie: null, origin: null })],
  ['a connect.sid with a forged signature', (u) => {
    const sid = sidOf(u.cookie);
    return { cookie: `connect.sid=${encodeURIComponent(`s:${sid}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`)}` };
  }],
  ['a connect.sid signed with another secret', (u) => ({ cookie: cookieFor(sidOf(u.cookie), 'not-the-session-secret') })],
  ['the session id without its signature', (u) => ({ cookie: `connect.sid=${encodeURIComponent(sidOf(u.cookie))}` })],
  ['a correctly signed connect.sid of a session that does not exist', () => ({
    cookie: cookieFor(crypto.randomBytes(24).toString('base64url')),
  })],
  ['a valid cookie from a foreign Origin', (u) => ({ cookie: u.cookie, origin: 'http://evil.example' })],
  ['a valid cookie from an Origin that only extends an allowed one', (u) => ({
    cookie: u.cookie,
    origin: `${ALLOWED_ORIGIN}.evil.example`,
  })],
];

for (const [what, make] of refusals) {
  test(`${what} is refused with connect_error E_UNAUTHORIZED (websocket and polling, both nodes)`, async () => {
    const { user } = await memberOfAServer();
    const opts = make(user);
    await expectGuildRefused(NODE1, { ...opts, transports: ['websocket'] });
    await expectGuildRefused(NODE2, { ...opts, transports: ['polling'] });
  });
}

test('a JWT in auth.token without a cookie is refused with E_UNAUTHORIZED: guild takes only the cookie', async () => {
  const { user } = await memberOfAServer();
  const jwt = await mintToken(String(user.id));
  await expectGuildRefused(NODE1, { token: jwt, transports: ['websocket'] });
  await expectGuildRefused(NODE2, { token: jwt, transports: ['polling'] });
  await expectGuildRefused(NODE2, { token: jwt, query: { token: jwt } });
});

test('an opaque session token in auth.token without a cookie is refused with E_UNAUTHORIZED', async () => {
  const { user } = await memberOfAServer();
  await expectGuildRefused(NODE1, { token: user.token });
  await expectGuildRefused(NODE2, { token: user.token, transports: ['polling'] });
});

test('the cookie of a revoked session is refused with E_UNAUTHORIZED', async () => {
  const { user } = await memberOfAServer();
  const res = await http('DELETE', `/v1/sessions/${encodeURIComponent(user.token)}`);
  assert.ok(res.status >= 200 && res.status < 300, `DELETE /v1/sessions → ${res.status} ${res.text}`);
  await expectGuildRefused(NODE1, { cookie: user.cookie });
  await expectGuildRefused(NODE2, { cookie: user.cookie, transports: ['polling'] });
});

test("revoking the session disconnects its /guild sockets on both nodes; the user's other session stays", async () => {
  const { serverId, user } = await memberOfAServer();
  const other = await createSession(String(user.id));
  const s1 = await connectGuild(user, NODE1);
  const s2 = await connectGuild(user, NODE2, { transports: ['polling'] });
  const untouched = await connectGuild(user, NODE2, { cookie: other.cookie, name: 'other-session' });
  await joinServer(s1, serverId);

  const res = await http('DELETE', `/v1/sessions/${encodeURIComponent(user.token)}`);
  assert.ok(res.status >= 200 && res.status < 300, `DELETE /v1/sessions → ${res.status} ${res.text}`);
  await waitForDisconnect(s1, 10000);
  await waitForDisconnect(s2, 10000);
  assert.ok(untouched.connected, "the user's other session stays connected");
  await joinServer(untouched, serverId);
});
