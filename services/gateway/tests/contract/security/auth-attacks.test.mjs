// Attacks on authentication: forged JWTs (alg none in any spelling, a wrong key, another HMAC
// size, an RS256 header on an HMAC signature, a stripped or transplanted signature, a key id
// pointing at a file, expired, not yet valid, no exp, no or a bad sub, the admin token as a JWT),
// session fixation (made-up connect.sid, session tokens and NextAuth cookies; a session id chosen
// by the client is never adopted), cross-site WebSocket hijacking (cookie auth from a foreign or
// look-alike Origin, WebSocket and polling), and CORS preflights from foreign origins. Every one
// is refused with the dialect's refusal; a correct credential still connects.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ADMIN_TOKEN,
  ALLOWED_ORIGIN,
  JWT_SECRET,
  NODE1,
  NODE2,
  ack,
  connect,
  createSession,
  eventsOf,
  expectConnectError,
  forgeJwt,
  http,
  newChat,
  nowSeconds,
  putUser,
  rid,
  sleep,
} from '../helpers.mjs';
import { appUrl } from '../app/helpers.mjs';
import { connectGuild, cookieFor, expectGuildRefused, guildOptions, guildUrl, guildUser, signSid } from '../guild/helpers.mjs';
import { openTasks, tasksUser } from '../tasks/helpers.mjs';
import { connectVault, expectVaultRefused, sessionCookie, vaultUrl, vaultUser } from '../vault/helpers.mjs';
import { useControlClient } from './common.mjs';

useControlClient();

const EVIL = 'http://evil.example';
const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** Every forged or broken JWT for user `sub`: [what, token]. */
function forgeries(sub) {
  const now = nowSeconds();
  const claims = { sub, iat: now, exp: now + 600 };
  const good = forgeJwt(claims);
  const [head, body] = good.split('.');
  const other = forgeJwt({ ...claims, sub: `${sub}-other` });
  return [
    ['alg none', forgeJwt(claims, { alg: 'none' })],
    ['alg "None"', forgeJwt(claims, { alg: 'none', header: { alg: 'None' } })],
    ['alg "NONE"', forgeJwt(claims, { alg: 'none', header: { alg: 'NONE' } })],
    ['alg none with the real signature kept', `${b64url({ alg: 'none', typ: 'JWT' })}.${body}.${good.split('.')[2]}`],
    ['HS256 with a wrong key', forgeJwt(claims, { secret: 'not-the-gateway-secret-0123456789abcdef' })],
    ['HS256 with an empty key', forgeJwt(claims, { secret: '' })],
    ['HS384 with the right key (another algorithm)', forgeJwt(claims, { alg: 'HS384' })],
    ['HS512 with the right key (another algorithm)', forgeJwt(claims, { alg: 'HS512' })],
    ['an RS256 header on an HMAC signature (algorithm confusion)', forgeJwt(claims, { header: { alg: 'RS256' } })],
    ['an ES256 header on an HMAC signature', forgeJwt(claims, { header: { alg: 'ES256' } })],
    ['a kid pointing at /dev/null, signed with an empty key', forgeJwt(claims, { secret: '', header: { kid: '../../../../../../dev/null' } })],
    ['a jku pointing elsewhere, signed with a wrong key', forgeJwt(claims, { secret: 'attacker', header: { jku: 'http://evil.example/jwks.json' } })],
    ['the signature removed', `${head}.${body}.`],
    ['the signature of another token', `${head}.${body}.${other.split('.')[2]}`],
    ['the payload of another user under this signature', `${head}.${other.split('.')[1]}.${good.split('.')[2]}`],
    ['expired', forgeJwt({ sub, iat: now - 7200, exp: now - 3600 })],
    ['nbf an hour ahead', forgeJwt({ ...claims, nbf: now + 3600 })],
    ['no exp', forgeJwt({ sub, iat: now })],
    ['exp as a string', forgeJwt({ sub, iat: now, exp: String(now + 600) })],
    ['no sub', forgeJwt({ iat: now, exp: now + 600 })],
    ['an empty sub', forgeJwt({ sub: '', iat: now, exp: now + 600 })],
    ['a sub with a NUL byte', forgeJwt({ sub: `${sub}\u0000admin`, iat: now, exp: now + 600 })],
    ['a sub that is an object', forgeJwt({ sub: { $ne: null }, iat: now, exp: now + 600 })],
    ['two segments only', `${head}.${body}`],
    ['garbage', 'a.b.c'],
    ['the admin token', ADMIN_TOKEN],
    ['the JWT secret itself', JWT_SECRET],
  ];
}

test('chat: every forged or broken JWT is refused with UNAUTHORIZED on both nodes (auth.token and ?token=); the genuine one connects', async () => {
  const { chatId, users } = await newChat({ members: 1 });
  const [U] = users;
  let i = 0;
  for (const [what, token] of forgeries(U.id)) {
    const node = i++ % 2 ? NODE2 : NODE1;
    const err = await expectConnectError(node, token);
    assert.equal(err.message, 'UNAUTHORIZED', `${what} (auth.token, ${node}): ${err.message}`);
  }
  for (const [what, token] of forgeries(U.id).slice(0, 6)) {
    const err = await expectConnectError(NODE2, undefined, { query: { token } });
    assert.equal(err.message, 'UNAUTHORIZED', `${what} (?token=): ${err.message}`);
  }
  const genuine = forgeJwt({ sub: U.id, iat: nowSeconds(), exp: nowSeconds() + 600 });
  const s = await connect(NODE1, genuine);
  assert.deepEqual(await ack(s, 'room:join', { chatId }), { ok: true }, 'the same claims, correctly signed, connect');
});

test('app, vault and tasks refuse the same forgeries with their own refusal; guild takes no JWT at all', async () => {
  const u = await tasksUser(); // numeric id: valid in every dialect
  const sub = String(u.id);
  const sample = forgeries(sub).filter(([what]) =>
    ['alg none', 'HS256 with a wrong key', 'an RS256 header on an HMAC signature (algorithm confusion)', 'nbf an hour ahead', 'the signature removed', 'the admin token'].includes(what),
  );
  assert.equal(sample.length, 6);
  for (const [what, token] of sample) {
    const appErr = await expectConnectError(appUrl(NODE1), token);
    assert.match(appErr.message, /^socket_error:(unauthorized|token_expired)$/, `app, ${what}: ${appErr.message}`);
    const vaultErr = await expectConnectError(vaultUrl(NODE2), token);
    assert.equal(vaultErr.message, 'UNAUTHORIZED', `vault, ${what}: ${vaultErr.message}`);
    const t = openTasks(NODE1, token, { name: `tasks ${what}` });
    const deadline = Date.now() + 10000;
    while (!t.__disconnects.length) {
      assert.ok(Date.now() < deadline, `tasks, ${what}: disconnected within 10 s`);
      await sleep(25);
    }
    const names = eventsOf(t).map((e) => e.event);
    assert.ok(names.includes('auth:failed') && !names.includes('auth:success'), `tasks, ${what}: auth:failed only (${names})`);
  }
  // A genuine JWT is no credential on /guild (cookie only).
  await expectGuildRefused(NODE1, { token: u.token });
});

test('session fixation: made-up connect.sid cookies, session tokens and NextAuth cookies are refused everywhere', async () => {
  const g = await guildUser();
  const made = `attacker-chosen-${rid('sid')}`;
  const cookies = [
    ['a correctly signed cookie for a session that does not exist', cookieFor(made)],
    ['an unsigned s: cookie', `connect.sid=${encodeURIComponent(`s:${made}.AAAA`)}`],
    ['a cookie signed with another secret', cookieFor(made, 'keyboard cat')],
    ['a raw, unprefixed session id', `connect.sid=${made}`],
    ['the real signature on another session id', `connect.sid=${encodeURIComponent(`s:${made}.${signSid('x').split('.')[1]}`)}`],
  ];
  for (const [what, cookie] of cookies) {
    const err = await expectConnectError(guildUrl(NODE1), undefined, guildOptions({ cookie }));
    assert.equal(err.message, 'E_UNAUTHORIZED', `guild, ${what}: ${err.message}`);
    const chatErr = await expectConnectError(NODE2, undefined, { extraHeaders: { cookie, origin: ALLOWED_ORIGIN } });
    assert.equal(chatErr.message, 'UNAUTHORIZED', `chat, ${what}: ${chatErr.message}`);
  }
  for (const token of [made, `${made}==`, 'undefined', 'null', '[object Object]']) {
    const err = await expectConnectError(NODE1, token);
    assert.equal(err.message, 'UNAUTHORIZED', `chat, made-up session token ${token}: ${err.message}`);
    await expectVaultRefused(NODE2, { cookie: sessionCookie(token) });
    await expectVaultRefused(NODE1, { token });
  }
  // The genuine cookie of the same user connects (the refusals are about the credential).
  const s = await connectGuild(g, NODE2);
  assert.ok(s.connected);
});

test('session fixation: a client cannot choose its session id; the chosen id never becomes a credential', async () => {
  const id = await putUser(rid('fix'));
  const chosen = `fixated-${rid('t')}`;
  const res = await http('POST', '/v1/sessions', { body: { userId: id, token: chosen, sid: chosen, id: chosen } });
  if (res.status >= 200 && res.status < 300) {
    assert.notEqual(res.json.token, chosen, 'the server picks the session token');
    assert.ok(!res.json.cookie.includes(chosen), 'nor the cookie the client proposed');
  } else {
    assert.equal(res.status, 400, `unknown fields are refused: ${res.status} ${res.text.slice(0, 200)}`);
  }
  const err = await expectConnectError(NODE1, chosen);
  assert.equal(err.message, 'UNAUTHORIZED');
  await expectGuildRefused(NODE2, { cookie: cookieFor(chosen) });
  // A genuine session is unguessable: long and random.
  const genuine = await createSession(id);
  assert.ok(genuine.token.length >= 32, `a session token of at least 32 characters: ${genuine.token.length}`);
  assert.notEqual(genuine.token, (await createSession(id)).token, 'each session gets its own token');
});

const LOOKALIKES = [
  EVIL,
  'null',
  `${ALLOWED_ORIGIN}.evil.example`,
  `${ALLOWED_ORIGIN}:8080`,
  ALLOWED_ORIGIN.replace('http://', 'https://'),
  ALLOWED_ORIGIN.replace('http://', 'http://evil'),
  `${ALLOWED_ORIGIN}/`,
  `${ALLOWED_ORIGIN}, ${EVIL}`,
];

test('cross-site WebSocket hijacking: a cookie handshake from a foreign or look-alike Origin is refused (guild, vault, chat; websocket and polling)', async () => {
  const g = await guildUser();
  const v = await vaultUser();
  for (const origin of LOOKALIKES) {
    for (const transports of [['websocket'], ['polling']]) {
      const how = `Origin ${JSON.stringify(origin)} over ${transports[0]}`;
      const gErr = await expectConnectError(guildUrl(NODE1), undefined, guildOptions({ cookie: g.cookie, origin, transports }));
      assert.equal(gErr.message, 'E_UNAUTHORIZED', `guild, ${how}: ${gErr.message}`);
      await expectVaultRefused(NODE2, { cookie: v.cookie, origin, transports });
    }
    const cErr = await expectConnectError(NODE2, undefined, { extraHeaders: { cookie: g.cookie, origin } });
    assert.equal(cErr.message, 'UNAUTHORIZED', `chat, Origin ${origin}: ${cErr.message}`);
  }
  // From the allowed Origin the same cookies connect.
  assert.ok((await connectGuild(g, NODE2)).connected);
  assert.ok((await connectVault(v, NODE1, { via: 'cookie' })).connected);
});

test('CORS: preflights and requests from a foreign origin get no grant (API and Engine.IO paths); the allowed origin does', async () => {
  const preflight = (path, origin, method = 'POST', node = NODE1) =>
    fetch(new URL(path, node), {
      method: 'OPTIONS',
      headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization, content-type' },
      signal: AbortSignal.timeout(5000),
    });
  const paths = [
    ['/v1/tokens', 'POST'],
    ['/v1/sessions/some-token', 'DELETE'],
    ['/v1/users/someone/disconnect', 'POST'],
    ['/v1/files', 'POST'],
    ['/socket.io/?EIO=4&transport=polling', 'POST'],
  ];
  for (const [path, method] of paths) {
    for (const origin of [EVIL, 'null', `${ALLOWED_ORIGIN}.evil.example`]) {
      const res = await preflight(path, origin, method, NODE2);
      const grant = res.headers.get('access-control-allow-origin');
      assert.ok(grant !== origin && grant !== '*', `preflight ${method} ${path} from ${origin}: allow-origin ${grant}`);
    }
  }
  // A credentialed read from a foreign origin: no allow-origin in the response either.
  const { chatId, users } = await newChat({ members: 1 });
  const res = await fetch(new URL(`/v1/chats/${chatId}/messages`, NODE1), {
    headers: { origin: EVIL, authorization: `Bearer ${users[0].token}` },
    signal: AbortSignal.timeout(5000),
  });
  await res.text();
  assert.ok(![EVIL, '*'].includes(res.headers.get('access-control-allow-origin')), `GET from ${EVIL}: ${res.headers.get('access-control-allow-origin')}`);
  const ok = await preflight('/v1/tokens', ALLOWED_ORIGIN);
  assert.equal(ok.headers.get('access-control-allow-origin'), ALLOWED_ORIGIN, 'the allowed origin is granted');
});
