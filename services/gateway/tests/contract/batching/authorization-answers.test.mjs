// One membership answer covers a member's first events in a room (issue #17): the membership
// service answers an authorization with every permission the user's roles grant there, and the
// gateway remembers them all. So a join's check also covers the member's first send, typing
// and read receipt, and none of them waits for a membership round trip (before, each one's
// first use did: a benchmark's first sends, all at once, waited 200-370 ms at p99).
//
// Run by the `send_pacing` test function, with the rest of this folder. Calls are counted on
// node 1's /metrics.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import {
  NODE1,
  NODE2,
  ack,
  addMember,
  assertErrorAck,
  assertOk,
  closeAll,
  connectUser,
  join,
  newChat,
  newUser,
  sample,
  scrape,
  send,
  waitFor,
} from '../helpers.mjs';

after(closeAll);

/** Authorization calls node 1 has made to the membership service. */
async function authorizeCalls() {
  const calls = { service: 'membership', method: 'Authorize' };
  return sample(await scrape(NODE1), 'switchboard_grpc_client_duration_seconds_count', calls);
}

test("a join's answer covers the member's first send, typing and read receipt there", async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const member = await connectUser(users[0], NODE1);
  const other = await connectUser(users[1], NODE2);
  await join(other, chatId);

  const before = await authorizeCalls();
  await join(member, chatId);
  const sent = await send(member, chatId, 'first words');
  member.emit('typing:start', { chatId });
  await waitFor(other, 'typing:update', (u) => u.chatId === chatId && u.userId === users[0].id, 5000);
  assertOk(await ack(member, 'receipt:read', { chatId, messageId: sent.serverId }), 'receipt:read');
  assert.equal(await authorizeCalls(), before + 1, 'one membership call: the join\'s');
});

test('a refusal is not remembered: a viewer\'s every send is asked about, and refused', async () => {
  const { chatId } = await newChat({ members: 1 });
  const viewer = await newUser('viewer');
  await addMember(chatId, viewer.id, 'viewer');
  const socket = await connectUser(viewer, NODE1);
  await join(socket, chatId);

  const before = await authorizeCalls();
  for (let i = 0; i < 2; i++) {
    assertErrorAck(await ack(socket, 'message:send', { chatId, body: 'no', clientId: `${chatId}-${i}` }), 'FORBIDDEN');
  }
  assert.equal(await authorizeCalls(), before + 2, 'each refused send asked the membership service');
});
