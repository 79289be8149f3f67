// server:join and channel:join (000): members join `server:<id>` (server:joined, and a
// presence:update snapshot to the whole server room) and `channel:<id>` (channel:joined);
// non-members get error:permission E_FORBIDDEN, a missing server E_FORBIDDEN too, a missing
// channel error:not_found E_CHANNEL_NOT_FOUND, and nothing is joined. Ids are numbers or numeric
// strings in, numbers out.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, PRESENCE_THROTTLE_MS, QUIET_MS, closeAll, expectNo, sleep, waitFor } from '../helpers.mjs';
import {
  DELIVERY_MS,
  PRESENCE_DEADLINE_MS,
  addServerMember,
  asc,
  assertGuildError,
  assertPresence,
  connectGuild,
  guildUser,
  joinChannel,
  joinServer,
  mark,
  newGuild,
  newId,
  nonce,
  postMessage,
  presenceWith,
  putChannel,
  putServer,
  roomEvent,
  waitAfter,
  waitCount,
} from './helpers.mjs';

afterEach(closeAll);

test('server:join by a member answers server:joined { serverId } with a number', async () => {
  const { serverId, users } = await newGuild({ members: 1 });
  const s = await connectGuild(users[0], NODE1);
  const joined = await joinServer(s, serverId);
  assert.equal(typeof joined.serverId, 'number');
});

test('server:join takes the id as a numeric string too and renders it as a number', async () => {
  const { serverId, users } = await newGuild({ members: 1 });
  const s = await connectGuild(users[0], NODE2);
  await joinServer(s, serverId, String(serverId));
  const p = await waitFor(s, 'presence:update', presenceWith(serverId, [users[0].id]), PRESENCE_DEADLINE_MS);
  assertPresence(p, serverId, [users[0].id]);
});

test('server:join sends presence:update { serverId, onlineUserIds } to the joiner and to the room on the other node', async () => {
  // A, B and C are members; C never connects. N is connected but not a member.
  const { serverId, users } = await newGuild({ members: 3 });
  const [A, B] = users;
  const N = await guildUser();
  const b = await connectGuild(B, NODE2);
  await joinServer(b, serverId);
  const a = await connectGuild(A, NODE1);
  await connectGuild(N, NODE1);

  // A's coming online reaches B first (a transition); let the throttle window pass so that any
  // later presence:update on B comes from A's server:join.
  await waitFor(b, 'presence:update', presenceWith(serverId, [A.id, B.id]), PRESENCE_DEADLINE_MS);
  await sleep(PRESENCE_THROTTLE_MS + 1000);
  const fromB = mark(b);

  await joinServer(a, serverId);
  const expected = asc([A.id, B.id]);
  const toJoiner = await waitFor(a, 'presence:update', presenceWith(serverId, [A.id, B.id]), PRESENCE_DEADLINE_MS);
  assertPresence(toJoiner, serverId, expected);
  const toRoom = await waitAfter(b, fromB, 'presence:update', presenceWith(serverId, [A.id, B.id]), DELIVERY_MS);
  assertPresence(toRoom, serverId, expected);
});

test('server:join of a server the user is not a member of is error:permission E_FORBIDDEN and joins nothing', async () => {
  const { serverId, users } = await newGuild({ members: 1 });
  const member = await connectGuild(users[0], NODE2);
  await joinServer(member, serverId);
  const outsider = await connectGuild(await guildUser(), NODE1);

  outsider.emit('server:join', { serverId });
  assertGuildError(await waitFor(outsider, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  await expectNo(outsider, 'server:joined', 0);

  // A publish to server:<id> reaches the member, not the outsider.
  const n = nonce();
  await roomEvent('server', serverId, 'guild:probe', { n });
  await waitFor(member, 'guild:probe', (d) => d.n === n, DELIVERY_MS);
  await expectNo(outsider, 'guild:probe', QUIET_MS);
  await expectNo(outsider, 'presence:update', 0, (p) => Number(p.serverId) === serverId);
  assert.ok(outsider.connected, 'the refused socket stays connected');
});

test('server:join of a server that does not exist is error:permission E_FORBIDDEN, and the room is not joined once it exists', async () => {
  const serverId = newId();
  const stranger = await connectGuild(await guildUser(), NODE1);
  stranger.emit('server:join', { serverId });
  assertGuildError(await waitFor(stranger, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  await expectNo(stranger, 'error:not_found', 0);
  await expectNo(stranger, 'server:joined', 0);

  await putServer(serverId);
  const M = await guildUser();
  await addServerMember(serverId, M.id);
  const member = await connectGuild(M, NODE2);
  await joinServer(member, serverId);
  const n = nonce();
  await roomEvent('server', serverId, 'guild:probe', { n });
  await waitFor(member, 'guild:probe', (d) => d.n === n, DELIVERY_MS);
  await expectNo(stranger, 'guild:probe', QUIET_MS);
});

test('channel:join by a member of the parent server answers channel:joined { channelId } with a number, for each channel', async () => {
  const { channelIds, users } = await newGuild({ members: 2, channels: 2 });
  const [A, B] = users;
  const a = await connectGuild(A, NODE1); // no server:join first: membership suffices
  await joinChannel(a, channelIds[0]);
  await joinChannel(a, channelIds[1], String(channelIds[1]));

  // a is in both channel rooms: messages posted by B on node 2 reach it.
  for (const channelId of channelIds) {
    const content = `to ${channelId} ${nonce()}`;
    await postMessage(channelId, B.id, content, NODE2);
    const m = await waitFor(a, 'message:new', (x) => x.content === content, DELIVERY_MS);
    assert.equal(m.channel_id, channelId);
  }
});

test('channel:join of a channel that does not exist is error:not_found E_CHANNEL_NOT_FOUND', async () => {
  const { users } = await newGuild({ members: 1 });
  const s = await connectGuild(users[0], NODE2);
  s.emit('channel:join', { channelId: newId() });
  assertGuildError(await waitFor(s, 'error:not_found', () => true, DELIVERY_MS), 'E_CHANNEL_NOT_FOUND');
  s.emit('channel:join', { channelId: String(newId()) });
  const [, second] = await waitCount(s, 'error:not_found', 2);
  assertGuildError(second, 'E_CHANNEL_NOT_FOUND');
  await expectNo(s, 'channel:joined', 0);
  await expectNo(s, 'error:permission', 0);
  assert.ok(s.connected);
});

test('channel:join by a non-member of the parent server is error:permission E_FORBIDDEN and joins nothing', async () => {
  const { channelId, users } = await newGuild({ members: 1 });
  const [M] = users;
  const member = await connectGuild(M, NODE2);
  await joinChannel(member, channelId);
  const outsider = await connectGuild(await guildUser(), NODE1);

  outsider.emit('channel:join', { channelId });
  assertGuildError(await waitFor(outsider, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  await expectNo(outsider, 'channel:joined', 0);

  const content = `members only ${nonce()}`;
  await postMessage(channelId, M.id, content);
  await waitFor(member, 'message:new', (x) => x.content === content, DELIVERY_MS);
  await expectNo(outsider, 'message:new', QUIET_MS);
});

test('a channel of another server is E_FORBIDDEN for a member of one server only', async () => {
  const mine = await newGuild({ members: 1 });
  const theirs = await newGuild({ members: 0 });
  const s = await connectGuild(mine.users[0], NODE1);
  s.emit('channel:join', { channelId: theirs.channelId });
  assertGuildError(await waitFor(s, 'error:permission', () => true, DELIVERY_MS), 'E_FORBIDDEN');
  await joinChannel(s, mine.channelId); // and its own channel still works
});

test('a channel created after the membership is granted by it at once', async () => {
  const { serverId, users } = await newGuild({ members: 1, channels: 0 });
  const s = await connectGuild(users[0], NODE2);
  const channelId = await putChannel(newId(), serverId);
  await joinChannel(s, channelId);
});
