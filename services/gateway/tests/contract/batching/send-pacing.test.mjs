// Send pacing (issue #17): a gateway sends at most one batch to the messages service (on its
// `SendStream`) per `SWITCHBOARD_SEND_LINGER_MS` while sends keep coming, so sends made meanwhile leave, and are
// committed, together; a send after a quiet spell leaves at once.
//
// Run by the `send_pacing` test function, whose cluster paces at 1,000 ms: after one send, four
// sockets on node 1 send at once (a socket's own events are handled one after another, so four
// senders), and their four sends must travel in one batch; without pacing, a batch would leave
// for the first of them at once, and more batches after it. Batches are counted on node 1's
// /metrics. Each message still gets its own ack and reaches the room on node 2 once, in the
// order it was stored (a batch's sends once reached the log in the order their tasks happened
// to resume: seen as 1, 2, 5, 3, 4).
//
// A batch's sends have their rate windows checked together, in one Redis script call: the
// cluster's chat limit is 2 sends per window, so one user's sends that leave in the same batch
// must still count one after another.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  assertErrorAck,
  closeAll,
  connectUser,
  eventsOf,
  join,
  newChat,
  sample,
  scrape,
  send,
  until,
} from '../helpers.mjs';

after(closeAll);

/** Sends node 1 has timed in `stage` of `switchboard_send_stage_seconds`. */
async function stageCount(stage) {
  return sample(await scrape(NODE1), 'switchboard_send_stage_seconds_count', { stage });
}

/** Batches of sends node 1 has sent to the messages service, answered or not. */
async function sendBatches() {
  const batches = { service: 'messages', method: 'SendStream' };
  return sample(await scrape(NODE1), 'switchboard_grpc_client_duration_seconds_count', batches);
}

test('sends made right after a batch leave together, in the next batch', async () => {
  const { chatId, users } = await newChat({ members: 6 });
  const senders = [];
  for (const u of users.slice(0, 5)) {
    const socket = await connectUser(u, NODE1);
    await join(socket, chatId);
    senders.push(socket);
  }
  const receiver = await connectUser(users[5], NODE2);
  await join(receiver, chatId);

  const before = await sendBatches();
  const stages = ['queued', 'rate_check', 'store', 'log'];
  const timedBefore = await Promise.all(stages.map(stageCount));
  const first = await send(senders[0], chatId, 'first');
  const rest = await Promise.all(senders.slice(1).map((s, i) => send(s, chatId, `after ${i}`)));
  assert.equal(await sendBatches(), before + 2, 'the first send alone, the four after it in one batch');
  const timed = await Promise.all(stages.map(stageCount));
  assert.deepEqual(
    timed.map((n, i) => n - timedBefore[i]),
    [5, 5, 5, 5],
    'each stored send timed once in each stage (operators read where a send waits)',
  );

  const stored = [first, ...rest].sort((x, y) => Number(x.serverId) - Number(y.serverId));
  assert.equal(new Set(stored.map((r) => r.serverId)).size, 5, 'five messages stored');
  await until('node 2 receives the five messages', () => messagesOf(receiver, chatId).length >= 5);
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual(
    messagesOf(receiver, chatId).map((m) => m._id),
    stored.map((r) => r.serverId),
    'each message once, in the order it was stored',
  );
});

test('one user\'s sends in the same batch count against their window one after another', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const devices = [];
  for (let i = 0; i < 3; i++) {
    const socket = await connectUser(users[0], NODE1);
    await join(socket, chatId);
    devices.push(socket);
  }
  const receiver = await connectUser(users[1], NODE2);
  await join(receiver, chatId);

  const before = await sendBatches();
  await send(devices[0], chatId, 'first');
  // Two devices at once: both wait for the next batch, which counts the first as the second of
  // the window (limit 2) and refuses the other.
  const answers = await Promise.all(
    devices.slice(1).map((d, i) => ack(d, 'message:send', { chatId, body: `at once ${i}`, clientId: randomUUID() })),
  );
  assert.equal(await sendBatches(), before + 2, 'the first send alone, the two after it in one batch');
  const refused = answers.filter((a) => a.ok === false);
  assert.equal(refused.length, 1, `exactly one of the two is over the limit: ${JSON.stringify(answers)}`);
  assertErrorAck(refused[0], 'RATE_LIMITED');

  await until('node 2 receives the two stored messages', () => messagesOf(receiver, chatId).length >= 2);
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(messagesOf(receiver, chatId).length, 2, 'the refused send is not broadcast');
});

function messagesOf(socket, chatId) {
  return eventsOf(socket)
    .filter((e) => e.event === 'message:new' && e.data?.chatId === chatId)
    .map((e) => e.data);
}
