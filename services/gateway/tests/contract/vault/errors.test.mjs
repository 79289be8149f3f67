// Errors and validation (003): every malformed source event (not an object, no source, a source
// that is not an object, a missing/empty/non-string source.id, a non-string title, no fileUrl, a
// negative or non-numeric fileSize, a missing or invalid vaultId, source:deleted without
// sourceId) gets error { message: 'Invalid payload', code: 'VALIDATION_ERROR', details } on the
// emitting socket only; nothing is broadcast, the socket stays connected and keeps working, and no
// other socket is disturbed. Unknown events get no answer at all.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, sleep } from '../helpers.mjs';
import {
  DELIVERY_MS,
  INVALID_PAYLOAD,
  SOURCE_EVENTS,
  actorOf,
  assertNotAcked,
  assertRoom,
  assertSourceEvent,
  connectVault,
  emitWithSpy,
  eventsAfter,
  expectError,
  expectSilenceAfter,
  joinVault,
  mark,
  newVault,
  nonce,
  sourceIdOf,
  sourceOf,
  waitAfter,
} from './helpers.mjs';

afterEach(closeAll);

/**
 * A vault with owner A (a1 on node 1 and a2 on node 2, both joined) and viewer B (b1 on node 1,
 * b2 on node 2 over polling, both joined). a1 is the emitter.
 */
async function scene() {
  const { vaultId, users } = await newVault({ roles: ['owner', 'viewer'] });
  const [A, B] = users;
  const a1 = await connectVault(A, NODE1, { name: 'A@1 (emitter)' });
  const a2 = await connectVault(A, NODE2, { name: 'A@2', via: 'cookie' });
  const b1 = await connectVault(B, NODE1, { name: 'B@1', via: 'session' });
  const b2 = await connectVault(B, NODE2, { name: 'B@2', transports: ['polling'] });
  await joinVault(a1, vaultId, 'owner');
  await joinVault(a2, vaultId, 'owner', { as: 'object' });
  await joinVault(b1, vaultId, 'viewer');
  await joinVault(b2, vaultId, 'viewer');
  return { vaultId, A, B, a1, a2, b1, b2, all: [a1, a2, b1, b2], others: [a2, b1, b2] };
}

/** Everything still works: a valid source:created from `emitter` reaches every socket of `room`. */
async function stillWorks(emitter, room, vaultId, A) {
  for (const s of [emitter, ...room]) assert.ok(s.connected, `${s.__name} stays connected`);
  const src = sourceOf(vaultId);
  const marks = new Map(room.map((s) => [s, mark(s)]));
  emitter.emit('source:created', { source: src });
  for (const s of room) {
    const got = await waitAfter(s, marks.get(s), 'source:created', (d) => sourceIdOf(d) === src.id, DELIVERY_MS);
    assertSourceEvent(got, { kind: 'created', sent: src, vaultId, actor: actorOf(A, 'owner') });
  }
}

/** `source` without `field`. */
const without = (source, field) => {
  const copy = { ...source };
  delete copy[field];
  return copy;
};

/** Malformed payloads of source:created and source:updated, each made from the vault id `V`. */
const malformedSource = [
  ['no payload at all', () => []],
  ['a string', () => ['not an object']],
  ['a number', () => [5]],
  ['null', () => [null]],
  ['true', () => [true]],
  ['an array holding a valid payload', (V) => [[{ source: sourceOf(V) }]]],
  ['no source', (V) => [{ vaultId: V }]],
  ['source is a string', (V) => [{ vaultId: V, source: 'a source' }]],
  ['source is null', (V) => [{ vaultId: V, source: null }]],
  ['source is an array', (V) => [{ vaultId: V, source: [sourceOf(V)] }]],
  ['no source.id', (V) => [{ source: without(sourceOf(V), 'id') }]],
  ['an empty source.id', (V) => [{ source: sourceOf(V, { id: '' }) }]],
  ['a numeric source.id', (V) => [{ source: sourceOf(V, { id: 42 }) }]],
  ['a null source.id', (V) => [{ source: sourceOf(V, { id: null }) }]],
  ['a numeric title', (V) => [{ source: sourceOf(V, { title: 42 }) }]],
  ['an object as title', (V) => [{ source: sourceOf(V, { title: { text: 'Notes' } }) }]],
  ['no fileUrl', (V) => [{ source: without(sourceOf(V), 'fileUrl') }]],
  ['a negative fileSize', (V) => [{ source: sourceOf(V, { fileSize: -1 }) }]],
  ['a fileSize that is not a number', (V) => [{ source: sourceOf(V, { fileSize: 'big' }) }]],
  ['no vaultId anywhere', () => [{ source: sourceOf(undefined) }]],
  ["source.vaultId: the vault's id in uppercase", (V) => [{ source: sourceOf(V.toUpperCase()) }]],
  ['source.vaultId: a number', () => [{ source: sourceOf(12345678) }]],
  ['source.vaultId: 7 characters', () => [{ source: sourceOf('abcdefg') }]],
  ['a top-level vaultId starting with a digit', () => [{ vaultId: '1abcdefgh', source: sourceOf(undefined) }]],
];

/** Malformed payloads of source:deleted. */
const malformedDeleted = [
  ['no payload at all', () => []],
  ['a bare string', () => ['src123']],
  ['null', () => [null]],
  ['a number', () => [5]],
  ['an array holding a valid payload', (V) => [[{ sourceId: 'src123', vaultId: V }]]],
  ['no sourceId', (V) => [{ vaultId: V }]],
  ['an empty sourceId', (V) => [{ sourceId: '', vaultId: V }]],
  ['a numeric sourceId', (V) => [{ sourceId: 42, vaultId: V }]],
  ['no vaultId', () => [{ sourceId: 'src123' }]],
  ["the vault's id in uppercase", (V) => [{ sourceId: 'src123', vaultId: V.toUpperCase() }]],
  ['a numeric vaultId', () => [{ sourceId: 'src123', vaultId: 12345678 }]],
];

const cases = [
  ...malformedSource.map(([what, make]) => ['source:created', what, make]),
  ...malformedSource.map(([what, make]) => ['source:updated', what, make]),
  ...malformedDeleted.map(([what, make]) => ['source:deleted', what, make]),
];

for (const [event, what, make] of cases) {
  test(`${event} with ${what} is error Invalid payload (VALIDATION_ERROR) to the emitter only; nothing is broadcast; all keep working`, async () => {
    const t = await scene();
    const marks = new Map(t.all.map((s) => [s, mark(s)]));
    await expectError(t.a1, event, make(t.vaultId), INVALID_PAYLOAD, { exactDetails: false });
    await sleep(QUIET_MS);
    for (const s of t.all) {
      for (const e of SOURCE_EVENTS) assert.equal(eventsAfter(s, marks.get(s), e).length, 0, `${s.__name} got no ${e}`);
    }
    assert.equal(eventsAfter(t.a1, marks.get(t.a1), 'error').length, 1, 'one error to the emitter');
    for (const s of t.others) {
      assert.equal(eventsAfter(s, marks.get(s), 'error').length, 0, `${s.__name} (not the emitter) got no error`);
    }
    await stillWorks(t.a1, t.all, t.vaultId, t.A);
  });
}

test('a malformed payload over long-polling on node 2 gets the same error shape', async () => {
  const t = await scene();
  const pollingOwner = await connectVault(t.A, NODE2, { transports: ['polling'], name: 'A@2 polling' });
  await expectError(pollingOwner, 'source:created', [{ vaultId: t.vaultId }], INVALID_PAYLOAD, { exactDetails: false });
  await expectError(pollingOwner, 'source:deleted', [{ vaultId: t.vaultId }], INVALID_PAYLOAD, { exactDetails: false });
  await stillWorks(pollingOwner, t.all, t.vaultId, t.A);
});

test('a burst of malformed payloads of every event never disconnects the socket nor disturbs the others', async () => {
  const t = await scene();
  const V = t.vaultId;
  const garbage = [
    ['vault:join', [{ vaultId: { nested: true } }]],
    ['vault:join', [[1, 2, 3]]],
    ['vault:leave', [{ vaultId: null }]],
    ['source:created', [{ source: { id: {}, title: [], fileUrl: 7, vaultId: V } }]],
    ['source:created', ['x'.repeat(4096)]],
    ['source:updated', [{ vaultId: V, source: { id: 'a', title: 'b' } }]],
    ['source:deleted', [{ sourceId: ['a'], vaultId: V }]],
    ['source:deleted', [{ sourceId: 'a', vaultId: { $ne: null } }]],
    ['vault:explode', [{ vaultId: V }]],
  ];
  const marks = new Map(t.all.map((s) => [s, mark(s)]));
  for (let round = 0; round < 3; round++) {
    for (const [event, args] of garbage) t.a1.emit(event, ...args);
  }
  await sleep(QUIET_MS * 2);
  for (const s of t.all) {
    assert.ok(s.connected, `${s.__name} stays connected`);
    for (const e of SOURCE_EVENTS) assert.equal(eventsAfter(s, marks.get(s), e).length, 0, `${s.__name} got no ${e}`);
  }
  for (const s of t.others) assert.equal(eventsAfter(s, marks.get(s), 'error').length, 0, `${s.__name} got no error`);
  // The emitter's errors all have the contract's shape and codes.
  for (const e of eventsAfter(t.a1, marks.get(t.a1), 'error')) {
    assert.deepEqual(Object.keys(e).sort(), ['code', 'details', 'message'], JSON.stringify(e));
    assert.ok(['INVALID_VAULT_ID', 'VALIDATION_ERROR'].includes(e.code), `code: ${JSON.stringify(e)}`);
  }
  await assertRoom(V, { inside: t.all }, NODE2);
  await stillWorks(t.a1, t.all, V, t.A);
});

/** Client events that are not in the contract (some are other dialects' or the server's own). */
const unknownEvents = [
  ['vault:unknown', [{ vaultId: 'abcdefgh' }]],
  ['source:moved', [{ sourceId: 'src1', vaultId: 'abcdefgh' }]],
  ['vault:joined', [{ vaultId: 'abcdefgh', role: 'owner' }]],
  ['message:send', [{ chatId: 'c1', body: 'hi', clientId: 'x' }]],
  ['server:join', [{ serverId: 1 }]],
  ['error', [{ message: 'client error' }]],
  ['ping', []],
];

test('unknown events get no answer: no event and no ack', async () => {
  const t = await scene();
  const from = mark(t.a1);
  const spies = [];
  for (const [event, args] of unknownEvents) {
    t.a1.emit(event, ...args);
    spies.push([event, emitWithSpy(t.a1, event, ...args)]);
  }
  await expectSilenceAfter(t.a1, from, QUIET_MS);
  for (const [event, spy] of spies) assertNotAcked(spy, event);
  assert.ok(t.a1.connected, 'the socket stays connected');
  await stillWorks(t.a1, t.all, t.vaultId, t.A);
});

test("an error goes to the emitting socket only: the user's other sockets and the room hear nothing", async () => {
  const t = await scene();
  let marks = new Map(t.others.map((s) => [s, mark(s)]));
  await expectError(t.a1, 'source:created', [{ source: sourceOf(t.vaultId, { id: '' }) }], INVALID_PAYLOAD, { exactDetails: false });
  for (const s of t.others) await expectSilenceAfter(s, marks.get(s), s === t.others[0] ? QUIET_MS : 0);

  // A refusal of B (a viewer) on node 1: B's socket on node 2 and A's sockets hear nothing.
  const quiet = [t.a1, t.a2, t.b2];
  marks = new Map(quiet.map((s) => [s, mark(s)]));
  const sourceId = `src${nonce()}`;
  await expectError(t.b1, 'source:deleted', [{ sourceId, vaultId: t.vaultId }], ['Insufficient permissions', 'FORBIDDEN']);
  for (const s of quiet) await expectSilenceAfter(s, marks.get(s), s === quiet[0] ? QUIET_MS : 0);
});
