// Attack: credentials harvested from logs. With both gateway nodes at RUST_LOG=debug (the
// security cluster's setting), nothing written to their logs (`$SB_TEMP_DIR/gw-a.log`,
// `gw-b.log`) may contain a credential used in this file: the admin token, JWTs (in auth.token,
// in ?token=, in an Authorization header, and the ones POST /v1/tokens answers), opaque session
// tokens (in auth.token, in DELETE /v1/sessions/{token}, and after their revocation), nor the
// connect.sid / next-auth cookies, whole, URL-encoded or decoded.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  ADMIN_TOKEN,
  NODE1,
  NODE2,
  ack,
  chatHistory,
  connect,
  createSession,
  expectRefused,
  forgeJwt,
  http,
  join,
  mintToken,
  newChat,
  nowSeconds,
  sleep,
  waitForDisconnect,
} from '../helpers.mjs';
import { connectGuild, guildUser } from '../guild/helpers.mjs';
import { connectVault, vaultUser } from '../vault/helpers.mjs';
import { TEMP_DIR, useControlClient } from './common.mjs';

useControlClient();

const LOGS = ['gw-a.log', 'gw-b.log'];
const logPath = (name) => path.join(TEMP_DIR, name);
const readLog = (name) => fs.readFileSync(logPath(name), 'latin1');

/** Every form of a secret a log line could carry: whole, URL-encoded, a JWT's signature. */
function formsOf(secret) {
  const forms = new Set([secret, encodeURIComponent(secret)]);
  const parts = secret.split('.');
  if (parts.length === 3 && parts[2].length >= 16) forms.add(parts[2]);
  return [...forms].filter((f) => f.length >= 16);
}

test('no credential used against the nodes reaches their debug logs', async () => {
  assert.ok(TEMP_DIR, 'the harness passes SB_TEMP_DIR');
  const sizes = Object.fromEntries(LOGS.map((n) => [n, fs.statSync(logPath(n)).size]));
  const secrets = new Map([['the admin token', ADMIN_TOKEN]]);

  const { chatId, users } = await newChat({ members: 2 });
  const [U, W] = users;
  secrets.set('a minted JWT', U.token).set("another user's minted JWT", W.token);

  // JWTs: auth.token on both nodes, ?token= in the URL, a Bearer header on the user routes.
  const viaAuth = await connect(NODE1, U.token, { name: 'jwt auth @1' });
  await join(viaAuth, chatId);
  const viaQuery = await connect(NODE2, undefined, { query: { token: W.token }, name: 'jwt query @2' });
  await join(viaQuery, chatId);
  const polling = await connect(NODE1, undefined, { query: { token: W.token }, transports: ['polling'], name: 'jwt query polling @1' });
  assert.ok(polling.connected);
  assert.equal((await chatHistory(chatId, U.token, {}, NODE2)).status, 200);
  const forged = forgeJwt({ sub: U.id, iat: nowSeconds(), exp: nowSeconds() + 600 });
  secrets.set('an application-minted JWT', forged);
  const viaForged = await connect(NODE2, forged, { name: 'forged @2' });
  assert.ok(viaForged.connected);

  // Opaque sessions: auth.token on both nodes, then DELETE /v1/sessions/{token}, then a refused reuse.
  const session = await createSession(U.id);
  secrets.set('a session token', session.token).set('its connect.sid cookie', session.cookie);
  const cookieValue = session.cookie.slice(session.cookie.indexOf('=') + 1);
  secrets.set('the cookie value', cookieValue).set('the decoded cookie value', decodeURIComponent(cookieValue));
  const s1 = await connect(NODE1, session.token, { name: 'session @1' });
  const s2 = await connect(NODE2, session.token, { name: 'session @2' });
  const gone = [waitForDisconnect(s1, 10000), waitForDisconnect(s2, 10000)];
  const del = await http('DELETE', `/v1/sessions/${encodeURIComponent(session.token)}`, { node: NODE2 });
  assert.ok(del.status >= 200 && del.status < 300, `DELETE /v1/sessions/{token}: ${del.status}`);
  await Promise.all(gone);
  await expectRefused(NODE1, session.token, 'UNAUTHORIZED');
  await http('DELETE', `/v1/sessions/${encodeURIComponent(session.token)}`, { node: NODE1 });

  // Cookies: connect.sid on /guild, next-auth.session-token on /vault.
  const g = await guildUser();
  secrets.set('a guild session token', g.token).set('a guild cookie', g.cookie);
  const gv = g.cookie.slice(g.cookie.indexOf('=') + 1);
  secrets.set('the guild cookie value', gv).set('the decoded guild cookie value', decodeURIComponent(gv));
  assert.ok((await connectGuild(g, NODE1)).connected);
  const v = await vaultUser();
  secrets.set('a vault session token', v.sessionToken).set('a vault JWT', v.jwt);
  assert.ok((await connectVault(v, NODE2, { via: 'cookie' })).connected);
  assert.ok((await connectVault(v, NODE1, { via: 'session' })).connected);

  // POST /v1/tokens answers a JWT: its response must not be logged either.
  const answered = await mintToken(W.id);
  secrets.set('a JWT answered by POST /v1/tokens', answered);
  const late = await connect(NODE2, answered, { name: 'answered jwt @2' });
  assert.deepEqual(await ack(late, 'room:join', { chatId }), { ok: true });

  await sleep(500); // let the last lines reach the files
  for (const name of LOGS) {
    const text = readLog(name);
    assert.ok(text.length > sizes[name], `${name} grew during the test: the nodes did log`);
    assert.match(text, /DEBUG/, `${name} holds debug lines (RUST_LOG=debug is in effect)`);
    for (const [what, secret] of secrets) {
      for (const form of formsOf(secret)) {
        const at = text.indexOf(form);
        assert.equal(
          at,
          -1,
          `${name} contains ${what} (${form.slice(0, 12)}…): ${JSON.stringify(text.slice(Math.max(0, at - 200), at + 40))}`,
        );
      }
    }
  }
});
