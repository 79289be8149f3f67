// presence:ping and presence:update (002): online/offline to contacts (users sharing a chat) on
// their user rooms, across nodes, multi-device, throttled (2 s) but never dropped.
// A node dying is covered by fault-node-kill.test.mjs.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  NODE1,
  NODE2,
  PRESENCE_THROTTLE_MS,
  PRESENCE_TTL_MS,
  ack,
  addMember,
  assertIso,
  closeAll,
  connectUser,
  expectNo,
  newChat,
  newUser,
  putChat,
  removeMember,
  rid,
  sleep,
  eventsOf,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

const PRESENCE_DEADLINE_MS = PRESENCE_THROTTLE_MS + PRESENCE_TTL_MS + 4000; // 8 s

const statusOf = (userId, status) => (u) => u.userId === userId && u.status === status;

test('presence:ping answers { ok: true, data: { serverTime } }', async () => {
  const user = await newUser();
  for (const node of [NODE1, NODE2]) {
    const s = await connectUser(user, node);
    const res = await ack(s, 'presence:ping', {});
    assert.equal(res.ok, true, JSON.stringify(res));
    assert.deepEqual(Object.keys(res).sort(), ['data', 'ok']);
    assert.deepEqual(Object.keys(res.data), ['serverTime']);
    assertIso(res.data.serverTime, 'serverTime');
    const skew = Math.abs(Date.parse(res.data.serverTime) - Date.now());
    assert.ok(skew < 60_000, `serverTime is the server's clock (skew ${skew} ms)`);
  }
});

test('a contact on the other node sees online when a user connects, offline when they leave', async () => {
  const { users } = await newChat({ members: 2 });
  const [A, B] = users;
  const b = await connectUser(B, NODE2); // B never joins the chat room: presence is on user rooms
  const a = await connectUser(A, NODE1);

  const online = await waitFor(b, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);
  assert.deepEqual(Object.keys(online).sort(), ['status', 'timestamp', 'userId']);
  assertIso(online.timestamp, 'timestamp');

  a.close();
  const offline = await waitFor(b, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
  assertIso(offline.timestamp, 'timestamp');
  assert.ok(Date.parse(offline.timestamp) >= Date.parse(online.timestamp), 'offline comes after online');
});

test('two devices on two nodes: closing one keeps the user online, closing both sends offline', async () => {
  const { users } = await newChat({ members: 2 });
  const [A, B] = users;
  const b = await connectUser(B, NODE2);
  const a1 = await connectUser(A, NODE1);
  const a2 = await connectUser(A, NODE2);
  await waitFor(b, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);

  a1.close();
  // Long enough for a throttled broadcast and for a socket's presence entry to expire.
  await expectNo(b, 'presence:update', PRESENCE_DEADLINE_MS - 2000, statusOf(A.id, 'offline'));
  assert.ok(a2.connected);

  a2.close();
  await waitFor(b, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
});

test('the last broadcast matches the state after a quick reconnect cycle (throttle delays, never drops)', async () => {
  const { users } = await newChat({ members: 2 });
  const [A, B] = users;
  const b = await connectUser(B, NODE1);
  let a = await connectUser(A, NODE2);
  await waitFor(b, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);
  a.close();
  a = await connectUser(A, NODE1);
  a.close();
  // A ends offline: whatever was coalesced, an offline must arrive, and it must be the last word.
  await waitFor(b, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
  await sleep(PRESENCE_THROTTLE_MS + 1000);
  const updates = eventsOf(b).filter((e) => e.event === 'presence:update' && e.data?.userId === A.id);
  assert.equal(updates.at(-1).data.status, 'offline', 'the last broadcast matches the state');
});

test('a non-contact receives no presence of a user', async () => {
  const { users } = await newChat({ members: 2 });
  const [A, B] = users;
  const stranger = await newUser();
  const b = await connectUser(B, NODE2);
  const s = await connectUser(stranger, NODE2);
  const s1 = await connectUser(stranger, NODE1);
  const a = await connectUser(A, NODE1);
  await waitFor(b, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);
  a.close();
  await waitFor(b, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
  await expectNo(s, 'presence:update', 500, (u) => u.userId === A.id);
  await expectNo(s1, 'presence:update', 0, (u) => u.userId === A.id);
});

test('a user sharing a chat only through a second chat is a contact too', async () => {
  // C shares chat 2 with A, not chat 1: still a contact.
  const { users } = await newChat({ members: 2 });
  const [A] = users;
  const C = await newUser();
  const chat2 = rid('c');
  await putChat(chat2, { type: 'dm', title: null, createdBy: A.id });
  await addMember(chat2, A.id);
  await addMember(chat2, C.id);
  const c = await connectUser(C, NODE1);
  await connectUser(A, NODE2);
  await waitFor(c, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);
});

test('contacts follow membership changes made after they were last used', async () => {
  // A's contacts are looked up (and remembered on both nodes) when A comes online. C joins the
  // chat afterwards through the integration API, D leaves it: A going offline reaches C, not D.
  const { chatId, users } = await newChat({ members: 3 });
  const [A, B, D] = users;
  const C = await newUser();
  const b = await connectUser(B, NODE2);
  const d = await connectUser(D, NODE2);
  const a = await connectUser(A, NODE1);
  await waitFor(b, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);
  await waitFor(d, 'presence:update', statusOf(A.id, 'online'), PRESENCE_DEADLINE_MS);
  await addMember(chatId, C.id);
  await removeMember(chatId, D.id);
  const c = await connectUser(C, NODE2);
  const c1 = await connectUser(C, NODE1);
  a.close();
  await waitFor(b, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
  await waitFor(c, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
  await waitFor(c1, 'presence:update', statusOf(A.id, 'offline'), PRESENCE_DEADLINE_MS);
  await expectNo(d, 'presence:update', 500, statusOf(A.id, 'offline'));
});
