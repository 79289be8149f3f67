// vault:join and vault:leave (003). vault:join takes a bare string or { vaultId } and answers
// vault:joined { vaultId, role } with the member's role; an invalid id is
// error { message: 'Invalid vault ID', code: 'INVALID_VAULT_ID', details: { correlationId } };
// a non-member, or a vault that does not exist, error { message: 'Access denied to vault',
// code: 'FORBIDDEN', details } and nothing is joined. Revoking a member takes its sockets out of
// the room at once. vault:leave never answers (no event, no ack), whatever its payload, and room
// events stop reaching the socket that left.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, sleep } from '../helpers.mjs';
import {
  ACCESS_DENIED,
  INVALID_VAULT_ID,
  addVaultMember,
  assertNotAcked,
  assertRoom,
  connectVault,
  emitWithSpy,
  expectError,
  expectNoAfter,
  expectSilenceAfter,
  joinVault,
  mark,
  newVault,
  newVaultId,
  putVault,
  removeVaultMember,
  sourceOf,
  vaultUser,
  waitAfter,
} from './helpers.mjs';

afterEach(closeAll);

test('vault:join with a bare string answers vault:joined { vaultId, role } with each member\'s role, on both nodes', async () => {
  const { vaultId, users } = await newVault({ roles: ['owner', 'contributor', 'viewer'] });
  const nodes = [NODE1, NODE2, NODE1];
  for (let i = 0; i < users.length; i++) {
    const s = await connectVault(users[i], nodes[i]);
    const joined = await joinVault(s, vaultId, users[i].role, { as: 'string' });
    assert.deepEqual(Object.keys(joined).sort(), ['role', 'vaultId']);
  }
});

test('vault:join with { vaultId } answers vault:joined { vaultId, role } likewise', async () => {
  const { vaultId, users } = await newVault({ roles: ['viewer', 'owner', 'contributor'] });
  const nodes = [NODE2, NODE1, NODE2];
  for (let i = 0; i < users.length; i++) {
    const s = await connectVault(users[i], nodes[i], { via: i === 0 ? 'cookie' : 'session' });
    await joinVault(s, vaultId, users[i].role, { as: 'object' });
  }
});

test('vault ids of exactly 8 and of exactly 32 characters are valid', async () => {
  const user = await vaultUser();
  const short = newVaultId(8);
  const long = newVaultId(32);
  assert.equal(short.length, 8);
  assert.equal(long.length, 32);
  await newVault({ vaultId: short, roles: ['contributor'], users: [user] });
  await newVault({ vaultId: long, roles: ['viewer'], users: [user] });
  const s = await connectVault(user, NODE2);
  await joinVault(s, short, 'contributor');
  await joinVault(s, long, 'viewer', { as: 'object' });
  await assertRoom(short, { inside: [s] }, NODE1);
  await assertRoom(long, { inside: [s] }, NODE1);
});

test('joined sockets on both nodes receive the room events of vault:<id>; sockets that did not join do not', async () => {
  const { vaultId, users } = await newVault({ roles: ['owner', 'viewer'] });
  const [A, B] = users;
  const a1 = await connectVault(A, NODE1);
  const b2 = await connectVault(B, NODE2, { transports: ['polling'] });
  const aNotJoined = await connectVault(A, NODE2, { name: 'A not joined' });
  await joinVault(a1, vaultId, 'owner');
  await joinVault(b2, vaultId, 'viewer');
  await assertRoom(vaultId, { inside: [a1, b2], outside: [aNotJoined] }, NODE1);
  await assertRoom(vaultId, { inside: [a1, b2], outside: [aNotJoined] }, NODE2);
});

test('vault:join of a vault the user is not a member of is error Access denied to vault (FORBIDDEN) and joins nothing', async () => {
  const { vaultId, users } = await newVault({ roles: ['owner'] });
  const member = await connectVault(users[0], NODE2);
  await joinVault(member, vaultId, 'owner');
  const outsider = await connectVault(await vaultUser(), NODE1);

  for (const payload of [vaultId, { vaultId }]) {
    await expectError(outsider, 'vault:join', [payload], ACCESS_DENIED);
  }
  await expectNoAfter(outsider, 0, 'vault:joined', 0);
  await assertRoom(vaultId, { inside: [member], outside: [outsider] }, NODE2);
  assert.ok(outsider.connected, 'the refused socket stays connected');
});

test('vault:join of a valid id of a vault that does not exist is Access denied to vault, and the room is not joined once it exists', async () => {
  const vaultId = newVaultId();
  const U = await vaultUser();
  const s = await connectVault(U, NODE1);
  await expectError(s, 'vault:join', [vaultId], ACCESS_DENIED);
  await expectError(s, 'vault:join', [{ vaultId }], ACCESS_DENIED);
  await expectNoAfter(s, 0, 'vault:joined', 0);

  // The vault appears, with U as a member: U's socket was still never put in the room.
  await putVault(vaultId);
  await addVaultMember(vaultId, U.id, 'owner');
  const M = await vaultUser();
  await addVaultMember(vaultId, M.id, 'viewer');
  const m = await connectVault(M, NODE2);
  await joinVault(m, vaultId, 'viewer');
  await assertRoom(vaultId, { inside: [m], outside: [s] }, NODE1);
  // … and it can join now.
  await joinVault(s, vaultId, 'owner');
});

/** Invalid vault:join payloads, each made from the id `V` of a vault the user owns. */
const invalidIds = [
  ['uppercase letters', () => ['ABCdefgh1']],
  ["the user's own vault id in uppercase", (V) => [V.toUpperCase()]],
  ['an id starting with a digit', () => ['1abcdefgh']],
  ['an id of 7 characters', () => ['abcdefg']],
  ['an id of 33 characters', () => ['a'.repeat(33)]],
  ['an id containing a hyphen', () => ['abc-defgh']],
  ["the user's own vault id with a leading space", (V) => [` ${V}`]],
  ['an empty string', () => ['']],
  ['a number', () => [12345678]],
  ['null', () => [null]],
  ['no payload at all', () => []],
  ['an object without vaultId', () => [{}]],
  ['{ vaultId: 5 }', () => [{ vaultId: 5 }]],
  ['{ vaultId } with uppercase letters', () => [{ vaultId: 'ABCdefgh1' }]],
  ["an array holding the user's own vault id", (V) => [[V]]],
];

for (const [what, make] of invalidIds) {
  test(`vault:join with ${what} is error Invalid vault ID (INVALID_VAULT_ID), joins nothing, and the socket stays`, async () => {
    const { vaultId, users } = await newVault({ roles: ['owner', 'viewer'] });
    const [A, B] = users;
    const b = await connectVault(B, NODE2);
    await joinVault(b, vaultId, 'viewer');
    const a = await connectVault(A, NODE1);

    const from = mark(a);
    await expectError(a, 'vault:join', make(vaultId), INVALID_VAULT_ID);
    await expectNoAfter(a, from, 'vault:joined', 0);
    await assertRoom(vaultId, { inside: [b], outside: [a] }, NODE2);
    assert.ok(a.connected, 'the socket stays connected');
    // It keeps working: a valid join afterwards succeeds.
    await joinVault(a, vaultId, 'owner');
  });
}

test('revoking a member (DELETE member) takes its joined sockets out of the vault room at once, on both nodes', async () => {
  const { vaultId, users } = await newVault({ roles: ['owner', 'contributor'] });
  const [A, B] = users;
  const a = await connectVault(A, NODE1);
  const b1 = await connectVault(B, NODE1, { name: 'B@1' });
  const b2 = await connectVault(B, NODE2, { name: 'B@2', transports: ['polling'] });
  await joinVault(a, vaultId, 'owner');
  await joinVault(b1, vaultId, 'contributor');
  await joinVault(b2, vaultId, 'contributor');
  await assertRoom(vaultId, { inside: [a, b1, b2] });

  await removeVaultMember(vaultId, B.id);
  await assertRoom(vaultId, { inside: [a], outside: [b1, b2] }, NODE2);
  assert.ok(b1.connected && b2.connected, 'revoking a membership does not disconnect');

  // B can neither join again nor emit to the vault.
  await expectError(b2, 'vault:join', [vaultId], ACCESS_DENIED);
  await expectError(b1, 'source:created', [{ source: sourceOf(vaultId) }], ACCESS_DENIED);
  await expectNoAfter(a, 0, 'source:created', QUIET_MS, (d) => d.source !== undefined);
});

test("a role change (PUT member) shows in the next vault:join's role", async () => {
  const { vaultId, users } = await newVault({ roles: ['viewer'] });
  const [U] = users;
  const first = await connectVault(U, NODE1);
  await joinVault(first, vaultId, 'viewer');
  await addVaultMember(vaultId, U.id, 'contributor');
  const second = await connectVault(U, NODE2);
  await joinVault(second, vaultId, 'contributor');
});

// ---------------------------------------------------------------------------------------------
// vault:leave

for (const as of ['string', 'object']) {
  test(`vault:leave as a ${as === 'string' ? 'bare string' : '{ vaultId }'} never answers, and room events stop reaching the socket`, async () => {
    const { vaultId, users } = await newVault({ roles: ['owner', 'viewer'] });
    const [A, B] = users;
    const a = await connectVault(A, NODE1);
    const b = await connectVault(B, NODE2);
    await joinVault(a, vaultId, 'owner');
    await joinVault(b, vaultId, 'viewer');
    await assertRoom(vaultId, { inside: [a, b] });

    const from = mark(b);
    const spy = emitWithSpy(b, 'vault:leave', as === 'string' ? vaultId : { vaultId });
    await expectSilenceAfter(b, from, QUIET_MS);
    assertNotAcked(spy, 'vault:leave');
    assert.ok(b.connected);
    await assertRoom(vaultId, { inside: [a], outside: [b] }, NODE1);
    await assertRoom(vaultId, { inside: [a], outside: [b] }, NODE2);

    // A source event from the owner no longer reaches b either.
    const src = sourceOf(vaultId);
    const fromA = mark(a);
    const fromB = mark(b);
    a.emit('source:created', { source: src });
    await waitAfter(a, fromA, 'source:created', (d) => d.source?.id === src.id);
    await expectNoAfter(b, fromB, 'source:created', QUIET_MS);

    // It can join again.
    await joinVault(b, vaultId, 'viewer');
    await assertRoom(vaultId, { inside: [a, b] }, NODE2);
  });
}

test('vault:leave leaves only that vault, and only on that socket', async () => {
  const U = await vaultUser();
  const one = await newVault({ roles: ['owner'], users: [U] });
  const two = await newVault({ roles: ['viewer'], users: [U] });
  const s1 = await connectVault(U, NODE1, { name: 'U@1' });
  const s2 = await connectVault(U, NODE2, { name: 'U@2' });
  for (const s of [s1, s2]) {
    await joinVault(s, one.vaultId, 'owner');
    await joinVault(s, two.vaultId, 'viewer');
  }
  s1.emit('vault:leave', one.vaultId);
  await sleep(QUIET_MS);
  await assertRoom(one.vaultId, { inside: [s2], outside: [s1] }, NODE2);
  await assertRoom(two.vaultId, { inside: [s1, s2] }, NODE1);
});

/** vault:leave payloads that must get no answer at all. */
const leavePayloads = [
  ['null', [null]],
  ['a number', [5]],
  ['an empty object', [{}]],
  ["'BAD'", ['BAD']],
  ['{ vaultId: 5 }', [{ vaultId: 5 }]],
  ['an array', [['abcdefgh']]],
  ['no payload at all', []],
  ['a valid id of a vault the socket never joined', [newVaultId()]],
];

for (const [what, args] of leavePayloads) {
  test(`vault:leave with ${what} never answers (no event, no ack), and the socket stays in its rooms`, async () => {
    const { vaultId, users } = await newVault({ roles: ['contributor'] });
    const s = await connectVault(users[0], NODE1);
    await joinVault(s, vaultId, 'contributor');

    const from = mark(s);
    s.emit('vault:leave', ...args);
    const spy = emitWithSpy(s, 'vault:leave', ...args);
    await expectSilenceAfter(s, from, QUIET_MS);
    assertNotAcked(spy, `vault:leave with ${what}`);
    assert.ok(s.connected, 'the socket stays connected');
    await assertRoom(vaultId, { inside: [s] }, NODE2);
  });
}
