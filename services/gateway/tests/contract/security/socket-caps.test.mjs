// Attack: one account (a stolen or scripted credential) opening sockets without end, to exhaust
// a node's memory or the presence service. SWITCHBOARD_MAX_SOCKETS_PER_USER (5 in the security
// cluster) caps a user's authenticated sockets per namespace, counted across both nodes. Over it
// the handshake is refused with each dialect's rate-limit refusal (chat `RATE_LIMITED`, app
// `socket_error:rate_limited`, guild `E_RATE_LIMITED`, vault `RATE_LIMITED`, tasks
// `auth:failed { message: "Too many connections" }` then a disconnect). The user's open sockets,
// other users and the user's sockets in other namespaces are unaffected; closing a socket frees
// its slot.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  connect,
  connectUser,
  createSession,
  eventsOf,
  expectConnectError,
  newUser,
  sleep,
} from '../helpers.mjs';
import { appUrl, connectApp } from '../app/helpers.mjs';
import { connectGuild, guildOptions, guildUrl, guildUser } from '../guild/helpers.mjs';
import { connectTasks, openTasks, tasksUser } from '../tasks/helpers.mjs';
import { connectVault, vaultUrl, vaultUser } from '../vault/helpers.mjs';
import { LIMITS, useControlClient } from './common.mjs';

useControlClient();

const CAP = LIMITS.socketsPerUser;
const nodeFor = (i) => (i % 2 === 0 ? NODE1 : NODE2);

/**
 * The dialects, each with: a fresh user, how to connect one socket of that user (resolving with
 * the socket, rejecting when refused), and how to assert one refused handshake on a node.
 */
const DIALECTS = {
  chat: {
    user: () => newUser('cap'),
    open: (u, node) => connectUser(u, node),
    async refused(u, node) {
      const err = await expectConnectError(node, u.token);
      assert.equal(err.message, 'RATE_LIMITED', `chat refusal on ${node}: ${err.message}`);
    },
  },
  app: {
    user: () => newUser('capapp'),
    open: (u, node) => connectApp(u, node),
    async refused(u, node) {
      const err = await expectConnectError(appUrl(node), u.token);
      assert.equal(err.message, 'socket_error:rate_limited', `app refusal on ${node}: ${err.message}`);
    },
  },
  guild: {
    user: () => guildUser(),
    open: (u, node) => connectGuild(u, node),
    async refused(u, node) {
      const err = await expectConnectError(guildUrl(node), undefined, guildOptions({ cookie: u.cookie }));
      assert.equal(err.message, 'E_RATE_LIMITED', `guild refusal on ${node}: ${err.message}`);
    },
  },
  vault: {
    user: () => vaultUser(),
    open: (u, node) => connectVault(u, node),
    async refused(u, node) {
      const err = await expectConnectError(vaultUrl(node), u.jwt);
      assert.equal(err.message, 'RATE_LIMITED', `vault refusal on ${node}: ${err.message}`);
    },
  },
  tasks: {
    user: () => tasksUser(),
    open: (u, node) => connectTasks(u, node),
    async refused(u, node) {
      // The contract refuses with an event: the socket connects, hears auth:failed, and is
      // disconnected by the server, never hearing auth:success.
      const s = openTasks(node, u.token);
      const deadline = Date.now() + 10000;
      while (s.__disconnects.length === 0) {
        assert.ok(Date.now() < deadline, `tasks: the refused socket was disconnected within 10 s; events: ${JSON.stringify(eventsOf(s).map((e) => e.event))}`);
        await sleep(25);
      }
      const names = eventsOf(s).map((e) => e.event);
      assert.ok(!names.includes('auth:success'), `no auth:success for the socket over the cap: ${names}`);
      const failed = eventsOf(s).find((e) => e.event === 'auth:failed');
      assert.ok(failed, `auth:failed before the disconnect: ${names}`);
      assert.deepEqual(failed.data, { message: 'Too many connections' });
      assert.equal(s.__disconnects[0], 'io server disconnect');
      s.close();
    },
  },
};

/** Connects again until the slot freed by a close is seen (bounded), answering the socket. */
async function reconnectWhenFreed(dialect, u, node) {
  const deadline = Date.now() + 10000;
  let last;
  for (;;) {
    try {
      return await dialect.open(u, node);
    } catch (e) {
      last = e;
    }
    assert.ok(Date.now() < deadline, `a closed socket frees its slot within 10 s (last refusal: ${last?.message})`);
    await sleep(250);
  }
}

for (const [name, dialect] of Object.entries(DIALECTS)) {
  test(`${name}: a user's socket over the cap (${CAP}, both nodes together) is refused; the open ones, other users and other namespaces carry on; a close frees a slot`, async () => {
    assert.ok(CAP >= 2 && CAP <= 20, `a small cap is configured (${CAP})`);
    const u = await dialect.user();
    const sockets = [];
    for (let i = 0; i < CAP; i++) sockets.push(await dialect.open(u, nodeFor(i)));

    // One more, on either node: refused.
    await dialect.refused(u, NODE1);
    await dialect.refused(u, NODE2);
    for (const s of sockets) assert.ok(s.connected, 'the sockets under the cap stay connected');

    // Someone else connects as usual, on both nodes.
    const other = await dialect.user();
    await dialect.open(other, NODE1);
    await dialect.open(other, NODE2);

    // Closing one of the user's sockets frees its slot, and only one.
    sockets[0].close();
    const replacement = await reconnectWhenFreed(dialect, u, NODE2);
    assert.ok(replacement.connected);
    await dialect.refused(u, NODE1);
  });
}

test("the cap is per namespace: a user at the cap in chat still connects to /ws/app, and the chat sockets still work", async () => {
  const u = await newUser('capns');
  const sockets = [];
  for (let i = 0; i < CAP; i++) sockets.push(await connectUser(u, nodeFor(i)));
  await DIALECTS.chat.refused(u, NODE2);
  const app = await connectApp(u, NODE1);
  assert.ok(app.connected, 'the same user connects to another namespace');
  for (const s of sockets) {
    const res = await ack(s, 'presence:ping', {});
    assert.equal(res.ok, true, `a chat socket under the cap still answers: ${JSON.stringify(res)}`);
  }
});

test('refused handshakes do not take slots: after many refusals, a closed socket still frees one', async () => {
  const u = await newUser('caprefused');
  const sockets = [];
  for (let i = 0; i < CAP; i++) sockets.push(await connectUser(u, nodeFor(i)));
  for (let i = 0; i < 6; i++) await DIALECTS.chat.refused(u, nodeFor(i));
  sockets[1].close();
  const s = await reconnectWhenFreed(DIALECTS.chat, u, NODE1);
  assert.ok(s.connected);
  // A JWT-less handshake is still refused as unauthenticated, not as over a cap.
  const err = await expectConnectError(NODE1, undefined);
  assert.equal(err.message, 'UNAUTHORIZED');
  // Another credential of the same user (an opaque session) counts against the same cap.
  const session = await createSession(u.id);
  const again = await expectConnectError(NODE2, session.token);
  assert.equal(again.message, 'RATE_LIMITED', `a session of the same user is over the cap too: ${again.message}`);
  await connect(NODE1, (await newUser('capother')).token);
});
