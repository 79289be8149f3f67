// Fault injection: Redis (the cluster's fan-out bus) is restarted under both gateway nodes.
// While it is down a send answers (ack or error) instead of hanging; once it is back, delivery
// between the nodes resumes in both directions (no node stays an island), and no socket gets a
// message twice.
//
// Run by the `fault_redis_restart` test function, on a cluster of its own (its own redis-server).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, test } from 'node:test';
import {
  NODE1,
  NODE2,
  REDIS_PORT,
  REDIS_SERVER,
  ack,
  closeAll,
  connectUser,
  eventsOf,
  join,
  newChat,
  redisCommand,
  send,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

after(closeAll);

const RECOVERY_DEADLINE_MS = 20000;
const RETRY_EVERY_MS = 500;

async function waitForRedis(up, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const reply = await redisCommand('PING', REDIS_PORT, 500);
    const isUp = typeof reply === 'string' && reply.startsWith('+PONG');
    if (isUp === up) return;
    await sleep(100);
  }
  assert.fail(`Redis on port ${REDIS_PORT} did not go ${up ? 'up' : 'down'} within ${timeoutMs} ms`);
}

function startRedis() {
  const dir = process.env.SB_TEMP_DIR || process.cwd();
  const res = spawnSync(
    REDIS_SERVER,
    [
      '--port', String(REDIS_PORT),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--daemonize', 'yes',
      '--dir', dir,
      '--pidfile', path.join(dir, 'redis-restarted.pid'),
      '--logfile', path.join(dir, 'redis-restarted.log'),
    ],
    { encoding: 'utf8', timeout: 10000 },
  );
  assert.equal(res.status, 0, `starting ${REDIS_SERVER}: ${res.error ?? ''} ${res.stderr ?? ''} ${res.stdout ?? ''}`);
}

/**
 * A user's socket that reconnects by itself (same node) and re-joins the chat each time, in case
 * a node drops its clients while Redis is away.
 */
async function resilient(user, node, chatId) {
  const socket = await connectUser(user, node, { reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 1000 });
  await join(socket, chatId);
  socket.on('connect', () => {
    ack(socket, 'room:join', { chatId }, 5000).catch(() => {});
  });
  return socket;
}

/**
 * Sends from `from` every 500 ms (a fresh clientId each time; refusals such as RATE_LIMITED and
 * missing acks are just retried) until `to` receives one of these messages; fails after 20 s.
 */
async function untilDelivered(from, to, chatId, label) {
  const deadline = Date.now() + RECOVERY_DEADLINE_MS;
  const tried = new Set();
  const delivered = () => eventsOf(to).some((e) => e.event === 'message:new' && tried.has(e.data?.clientId));
  let answers = [];
  while (Date.now() < deadline) {
    if (from.connected) {
      const clientId = uuid();
      tried.add(clientId);
      ack(from, 'message:send', { chatId, body: `${label} ${clientId}`, clientId }, 5000)
        .then((res) => answers.push(res?.ok ? 'ok' : res?.error))
        .catch(() => answers.push('no ack'));
    }
    await sleep(RETRY_EVERY_MS);
    if (delivered()) return;
  }
  answers = answers.slice(-10);
  assert.fail(`${label}: nothing delivered within ${RECOVERY_DEADLINE_MS} ms after Redis came back (last answers: ${answers.join(', ')})`);
}

test('Redis restarts under both nodes: sends never hang, delivery resumes both ways', { timeout: 120_000 }, async () => {
  const chat = await newChat({ members: 2 });
  const [A, B] = chat.users;
  const { chatId } = chat;
  const a = await resilient(A, NODE1, chatId);
  const b = await resilient(B, NODE2, chatId);

  // Delivery works before the fault.
  const before = await send(a, chatId, 'before the restart');
  await waitFor(b, 'message:new', (m) => m.clientId === before.clientId, 5000);
  const back = await send(b, chatId, 'and back');
  await waitFor(a, 'message:new', (m) => m.clientId === back.clientId, 5000);

  // Redis goes away.
  await redisCommand('SHUTDOWN NOSAVE');
  await waitForRedis(false, 10000);

  // A send while Redis is down answers within 10 s, and is stored: Postgres is up, and Redis
  // holds only what may be lost (the rate window fails open, the broadcast is left to the outbox).
  const during = uuid();
  let res;
  try {
    res = await ack(a, 'message:send', { chatId, body: 'while Redis is down', clientId: during }, 10000);
  } catch (e) {
    assert.fail(`a send while Redis is down got no answer within 10 s (${e.message})`);
  }
  assert.equal(res.ok, true, `a send while Redis is down is stored and acknowledged: ${JSON.stringify(res)}`);
  assert.match(res.data.serverId, /^[0-9]+$/);

  // Redis comes back on the same port, empty.
  startRedis();
  await waitForRedis(true, 10000);

  // The message stored during the outage reaches the other node once Redis is back (redelivered
  // from the outbox by a sweeper), without anyone resending it.
  await waitFor(b, 'message:new', (m) => m._id === res.data.serverId, 20000);

  // Node 1 → node 2, and node 2 → node 1.
  await untilDelivered(a, b, chatId, 'A on node 1 → B on node 2');
  await untilDelivered(b, a, chatId, 'B on node 2 → A on node 1');

  // Both nodes are ready again.
  for (const node of [NODE1, NODE2]) {
    const deadline = Date.now() + 10000;
    let status = 0;
    while (Date.now() < deadline) {
      status = (await fetch(new URL('/readyz', node)).catch(() => ({ status: 0 }))).status;
      if (status === 200) break;
      await sleep(250);
    }
    assert.equal(status, 200, `${node}/readyz after the restart`);
  }

  // Nothing twice. After the reconnect the nodes withheld confirmations (the restart may have
  // lost log entries), so the sweeper logs those messages again; the nodes that had them skip
  // them. Wait out SWITCHBOARD_REDIS_RECOVERY_MS (5 s), a redelivery delay (1.5 s) and a sweep.
  await sleep(8000);
  for (const s of [a, b]) {
    const ids = eventsOf(s).filter((e) => e.event === 'message:new').map((e) => e.data._id);
    assert.equal(new Set(ids).size, ids.length, `${s.__name} received no message twice: ${ids.join(',')}`);
  }
});
