// Source events (003): source:created / source:updated / source:deleted emitted by a direct owner
// or contributor (no vault:join needed) reach every socket that joined vault:<id>, on both nodes,
// the emitter's own socket included when it joined, with the actor and timestamp set by the
// server (mimeType 'application/pdf' and createdAt/updatedAt the server's time by default). A
// viewer (or any other role) gets error 'Insufficient permissions', a non-member 'Access denied
// to vault', and nothing is broadcast. Events are isolated per vault. The integration API's room
// events reach the room unchanged.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, sleep } from '../helpers.mjs';
import {
  ACCESS_DENIED,
  DELIVERY_MS,
  INSUFFICIENT,
  REFUSED_ROLES,
  SOURCE_EVENTS,
  actorOf,
  addVaultMember,
  assertDeletedEvent,
  assertSourceEvent,
  connectVault,
  eventsAfter,
  expectError,
  expectNoAfter,
  fullSourceOf,
  joinVault,
  mark,
  newVault,
  newVaultId,
  nonce,
  publish,
  sourceIdOf,
  sourceOf,
  vaultUser,
  waitAfter,
  waitUnlessError,
} from './helpers.mjs';

afterEach(closeAll);

/**
 * A vault V with owner A, contributor B and viewer C, and another vault W with member D.
 * Sockets: a1 (A, node 1, joined V), aOut (A, node 2, not joined), b2 (B, node 2 over polling,
 * joined V), c1 and c2 (C on both nodes, joined V), d2 (D, node 2, joined W).
 */
async function scene() {
  const { vaultId, users } = await newVault({ roles: ['owner', 'contributor', 'viewer'] });
  const [A, B, C] = users;
  const other = await newVault({ roles: ['owner'] });
  const D = other.users[0];
  const a1 = await connectVault(A, NODE1, { name: 'A@1' });
  const aOut = await connectVault(A, NODE2, { name: 'A@2 (not joined)', via: 'cookie' });
  const b2 = await connectVault(B, NODE2, { name: 'B@2', transports: ['polling'] });
  const c1 = await connectVault(C, NODE1, { name: 'C@1', via: 'session' });
  const c2 = await connectVault(C, NODE2, { name: 'C@2', via: 'cookie' });
  const d2 = await connectVault(D, NODE2, { name: 'D@2 (other vault)' });
  await joinVault(a1, vaultId, 'owner');
  await joinVault(b2, vaultId, 'contributor');
  await joinVault(c1, vaultId, 'viewer');
  await joinVault(c2, vaultId, 'viewer', { as: 'object' });
  await joinVault(d2, other.vaultId, 'owner');
  return { vaultId, A, B, C, D, a1, aOut, b2, c1, c2, d2, joined: [a1, b2, c1, c2], notJoined: [aOut, d2] };
}

/**
 * Emits `event` with `payload` from `emitter`, and expects every socket of `receivers` to get
 * it exactly once (matching the source id `id`) and none of `silent` to get it, and no `error`
 * on the emitter. Answers the payloads received, in the order of `receivers`.
 */
async function deliver(emitter, event, payload, id, receivers, silent = []) {
  const marks = new Map([emitter, ...receivers, ...silent].map((s) => [s, mark(s)]));
  emitter.emit(event, payload);
  const got = [];
  for (const s of receivers) {
    try {
      got.push(await waitUnlessError(s, marks.get(s), event, (d) => sourceIdOf(d) === id, DELIVERY_MS));
    } catch (err) {
      const refused = eventsAfter(emitter, marks.get(emitter), 'error');
      if (refused.length) assert.fail(`${emitter.__name}'s ${event} was refused: ${JSON.stringify(refused[0])}`);
      throw err;
    }
  }
  await sleep(QUIET_MS);
  for (const s of receivers) {
    assert.equal(eventsAfter(s, marks.get(s), event, (d) => sourceIdOf(d) === id).length, 1, `${s.__name} got ${event} exactly once`);
  }
  for (const s of silent) {
    assert.equal(eventsAfter(s, marks.get(s), event).length, 0, `${s.__name} got no ${event}`);
  }
  assert.equal(eventsAfter(emitter, marks.get(emitter), 'error').length, 0, 'no error to the emitter');
  return got;
}

test('source:created from an owner reaches every joined socket on both nodes, the emitter\'s own included, exactly once', async () => {
  const t = await scene();
  const src = fullSourceOf(t.vaultId, { createdAt: '2026-02-15T10:20:30.000Z' });
  const got = await deliver(t.a1, 'source:created', { source: src }, src.id, t.joined, t.notJoined);
  for (const payload of got) {
    assertSourceEvent(payload, { kind: 'created', sent: src, vaultId: t.vaultId, actor: actorOf(t.A, 'owner') });
  }
  // Every socket got the same event.
  for (const payload of got.slice(1)) assert.deepEqual(payload, got[0], 'the same payload everywhere');
});

test('source:updated from a contributor reaches every joined socket on both nodes, the emitter\'s own included', async () => {
  const t = await scene();
  const src = fullSourceOf(t.vaultId, { updatedAt: '2026-02-16T08:00:00.000Z', title: `Renamed ${nonce()}.pdf` });
  const got = await deliver(t.b2, 'source:updated', { source: src }, src.id, t.joined, t.notJoined);
  for (const payload of got) {
    assertSourceEvent(payload, { kind: 'updated', sent: src, vaultId: t.vaultId, actor: actorOf(t.B, 'contributor') });
  }
});

test('source:deleted { sourceId, vaultId } from a contributor reaches the room as { sourceId, vaultId, actor, timestamp }', async () => {
  const t = await scene();
  const sourceId = `src${nonce()}`;
  const got = await deliver(t.b2, 'source:deleted', { sourceId, vaultId: t.vaultId }, sourceId, t.joined, t.notJoined);
  for (const payload of got) {
    assertDeletedEvent(payload, { sourceId, vaultId: t.vaultId, actor: actorOf(t.B, 'contributor') });
  }
});

test('source:created from an owner with only the required fields: mimeType application/pdf, createdAt the server\'s time, no fileKey or fileSize', async () => {
  const t = await scene();
  const src = sourceOf(t.vaultId);
  const [atB, atA] = await deliver(t.a1, 'source:created', { source: src }, src.id, [t.b2, t.a1]);
  for (const payload of [atB, atA]) {
    assertSourceEvent(payload, { kind: 'created', sent: src, vaultId: t.vaultId, actor: actorOf(t.A, 'owner') });
    assert.equal(payload.source.mimeType, 'application/pdf');
    assert.equal('fileKey' in payload.source, false, 'no fileKey when the client gave none');
    assert.equal('fileSize' in payload.source, false, 'no fileSize when the client gave none');
  }
});

test('source:updated with only the required fields: mimeType application/pdf, updatedAt the server\'s time', async () => {
  const t = await scene();
  const src = sourceOf(t.vaultId);
  const [payload] = await deliver(t.a1, 'source:updated', { source: src }, src.id, [t.c2]);
  assertSourceEvent(payload, { kind: 'updated', sent: src, vaultId: t.vaultId, actor: actorOf(t.A, 'owner') });
  assert.equal(payload.source.mimeType, 'application/pdf');
  assert.equal('createdAt' in payload.source, false, 'source:updated carries updatedAt, not createdAt');
});

test('vaultId may be given at the top level ({ vaultId, source }): it becomes source.vaultId', async () => {
  const t = await scene();
  for (const [event, kind] of [['source:created', 'created'], ['source:updated', 'updated']]) {
    const src = sourceOf(undefined);
    assert.equal('vaultId' in src, false);
    const [payload] = await deliver(t.b2, event, { vaultId: t.vaultId, source: src }, src.id, [t.c1], [t.d2]);
    assertSourceEvent(payload, { kind, sent: src, vaultId: t.vaultId, actor: actorOf(t.B, 'contributor') });
  }
});

test('the emitter needs no vault:join: an owner\'s socket that joined nothing emits; the room receives, that socket does not', async () => {
  const t = await scene();
  const src = sourceOf(t.vaultId);
  const got = await deliver(t.aOut, 'source:created', { source: src }, src.id, [t.b2, t.c1, t.a1], [t.aOut]);
  for (const payload of got) {
    assertSourceEvent(payload, { kind: 'created', sent: src, vaultId: t.vaultId, actor: actorOf(t.A, 'owner') });
  }
  // A contributor with no socket in the room at all: the same.
  const E = await vaultUser();
  await addVaultMember(t.vaultId, E.id, 'contributor');
  const e1 = await connectVault(E, NODE1);
  const sourceId = `src${nonce()}`;
  const [deleted] = await deliver(e1, 'source:deleted', { sourceId, vaultId: t.vaultId }, sourceId, [t.c2], [e1]);
  assertDeletedEvent(deleted, { sourceId, vaultId: t.vaultId, actor: { userId: E.id, userName: E.username, role: 'contributor' } });
});

test('a forged actor, timestamp or userId in the payload is ignored: the actor is the socket\'s user, the timestamp fresh', async () => {
  const t = await scene();
  const forged = {
    actor: { userId: 'someone-else', userName: 'Mallory', role: 'owner' },
    timestamp: '2000-01-01T00:00:00.000Z',
    userId: 'x',
  };
  const expectedActor = actorOf(t.B, 'contributor');

  const created = sourceOf(t.vaultId);
  const [c] = await deliver(t.b2, 'source:created', { ...forged, source: created }, created.id, [t.a1, t.c2]);
  assertSourceEvent(c, { kind: 'created', sent: created, vaultId: t.vaultId, actor: expectedActor });

  const updated = sourceOf(t.vaultId);
  const [u] = await deliver(t.b2, 'source:updated', { source: updated, ...forged }, updated.id, [t.c1]);
  assertSourceEvent(u, { kind: 'updated', sent: updated, vaultId: t.vaultId, actor: expectedActor });

  const sourceId = `src${nonce()}`;
  const [d] = await deliver(t.b2, 'source:deleted', { sourceId, vaultId: t.vaultId, ...forged }, sourceId, [t.a1]);
  assertDeletedEvent(d, { sourceId, vaultId: t.vaultId, actor: expectedActor });

  for (const payload of [c, u, d]) {
    assert.ok(!payload.timestamp.startsWith('2000-'), `timestamp is not the client's: ${payload.timestamp}`);
    assert.notEqual(payload.actor.userName, 'Mallory');
  }
});

test('actor.userName is "firstName lastName" when the user has both, else the username', async () => {
  const both = await vaultUser({ firstName: 'Ada', lastName: 'Lovelace' });
  const firstOnly = await vaultUser({ firstName: 'Grace' });
  const neither = await vaultUser();
  const { vaultId } = await newVault({ roles: ['owner', 'contributor', 'contributor'], users: [both, firstOnly, neither] });
  const watcher = await vaultUser();
  await addVaultMember(vaultId, watcher.id, 'viewer');
  const w = await connectVault(watcher, NODE2);
  await joinVault(w, vaultId, 'viewer');

  const cases = [
    [both, 'owner', 'Ada Lovelace'],
    [firstOnly, 'contributor', firstOnly.username],
    [neither, 'contributor', neither.username],
  ];
  for (const [user, role, userName] of cases) {
    const s = await connectVault(user, NODE1);
    const src = sourceOf(vaultId);
    const [payload] = await deliver(s, 'source:created', { source: src }, src.id, [w]);
    assertSourceEvent(payload, { kind: 'created', sent: src, vaultId, actor: { userId: user.id, userName, role } });
  }
});

test('source events are isolated per vault: a socket joined to another vault gets nothing, even a member of both', async () => {
  const t = await scene();
  // X is a viewer of V and a member of W, joined only to W.
  const X = await vaultUser();
  await addVaultMember(t.vaultId, X.id, 'viewer');
  const { vaultId: W } = await newVault({ roles: ['contributor'], users: [X] });
  const x1 = await connectVault(X, NODE1);
  await joinVault(x1, W, 'contributor');

  const src = sourceOf(t.vaultId);
  await deliver(t.a1, 'source:created', { source: src }, src.id, [t.b2], [x1, t.d2]);
  const sourceId = `src${nonce()}`;
  await deliver(t.b2, 'source:deleted', { sourceId, vaultId: t.vaultId }, sourceId, [t.c1], [x1, t.d2]);

  // And the other way round: X's event in W does not reach V's room.
  const inW = sourceOf(W);
  await deliver(x1, 'source:updated', { source: inW }, inW.id, [x1], [t.a1, t.b2, t.c1, t.c2]);
});

/** A valid payload of each source event for `vaultId`. */
const validPayload = (event, vaultId) =>
  event === 'source:deleted' ? { sourceId: `src${nonce()}`, vaultId } : { source: sourceOf(vaultId) };

for (const role of REFUSED_ROLES) {
  test(`a ${role} (not a direct owner or contributor) gets error Insufficient permissions (FORBIDDEN) for every source event; nothing is broadcast`, async () => {
    const t = await scene();
    const U = await vaultUser();
    await addVaultMember(t.vaultId, U.id, role);
    const u2 = await connectVault(U, NODE2);
    if (role === 'viewer') await joinVault(u2, t.vaultId, 'viewer');
    const marks = new Map(t.joined.map((s) => [s, mark(s)]));
    for (const event of SOURCE_EVENTS) {
      await expectError(u2, event, [validPayload(event, t.vaultId)], INSUFFICIENT);
    }
    await sleep(QUIET_MS);
    for (const s of [...t.joined, u2]) {
      for (const event of SOURCE_EVENTS) {
        assert.equal(eventsAfter(s, marks.get(s) ?? 0, event).length, 0, `${s.__name} got no ${event}`);
      }
    }
    assert.ok(u2.connected, 'the refused socket stays connected');
  });
}

test('a viewer whose socket joined the room is refused too; nobody, that socket included, gets the event', async () => {
  const t = await scene();
  for (const event of SOURCE_EVENTS) {
    await expectError(t.c1, event, [validPayload(event, t.vaultId)], INSUFFICIENT);
  }
  await sleep(QUIET_MS);
  for (const s of [...t.joined, ...t.notJoined]) {
    for (const event of SOURCE_EVENTS) await expectNoAfter(s, 0, event, 0);
  }
  assert.ok(t.c1.connected, 'the refused socket stays connected');
});

test('a non-member gets error Access denied to vault (FORBIDDEN) for every source event; nothing is broadcast', async () => {
  const t = await scene();
  const outsider = await connectVault(await vaultUser(), NODE1, { via: 'cookie' });
  const marks = new Map(t.joined.map((s) => [s, mark(s)]));
  for (const event of SOURCE_EVENTS) {
    await expectError(outsider, event, [validPayload(event, t.vaultId)], ACCESS_DENIED);
  }
  // The owner of another vault is a non-member of this one.
  for (const event of SOURCE_EVENTS) {
    await expectError(t.d2, event, [validPayload(event, t.vaultId)], ACCESS_DENIED);
  }
  await sleep(QUIET_MS);
  for (const s of t.joined) {
    for (const event of SOURCE_EVENTS) {
      assert.equal(eventsAfter(s, marks.get(s), event).length, 0, `${s.__name} got no ${event}`);
    }
  }
});

test('source events to a valid id of a vault that does not exist are Access denied to vault (FORBIDDEN)', async () => {
  const U = await vaultUser();
  await newVault({ roles: ['owner'], users: [U] });
  const s = await connectVault(U, NODE2);
  const missing = newVaultId();
  for (const event of SOURCE_EVENTS) {
    await expectError(s, event, [validPayload(event, missing)], ACCESS_DENIED);
  }
  await expectNoAfter(s, 0, 'source:created', 0);
});

test('permissions follow the current role: a contributor demoted to viewer is refused, a viewer promoted to contributor may emit', async () => {
  const t = await scene();
  await addVaultMember(t.vaultId, t.B.id, 'viewer');
  await expectError(t.b2, 'source:created', [{ source: sourceOf(t.vaultId) }], INSUFFICIENT);

  await addVaultMember(t.vaultId, t.C.id, 'contributor');
  const src = sourceOf(t.vaultId);
  const [payload] = await deliver(t.c2, 'source:created', { source: src }, src.id, [t.a1, t.c2]);
  assertSourceEvent(payload, { kind: 'created', sent: src, vaultId: t.vaultId, actor: actorOf(t.C, 'contributor') });
});

test('the integration API\'s room events reach every joined socket on both nodes unchanged, and nobody else', async () => {
  const t = await scene();
  const events = [
    ['source:created', {
      source: { ...fullSourceOf(t.vaultId), createdAt: '2026-02-15T10:00:00.000Z' },
      actor: { userId: t.A.id, userName: 'Server Side', role: 'owner' },
      timestamp: '2026-02-15T10:00:01.000Z',
    }],
    ['source:updated', {
      source: { ...sourceOf(t.vaultId), mimeType: 'application/pdf', updatedAt: '2026-02-15T11:00:00.000Z' },
      actor: { userId: t.B.id, userName: 'Server Side', role: 'contributor' },
      timestamp: '2026-02-15T11:00:01.000Z',
      extra: { anything: [1, 'two', null] },
    }],
    ['source:deleted', {
      sourceId: `src${nonce()}`,
      vaultId: t.vaultId,
      actor: { userId: t.A.id, userName: 'Server Side', role: 'owner' },
      timestamp: '2026-02-15T12:00:01.000Z',
    }],
  ];
  let node = NODE1;
  for (const [event, data] of events) {
    const marks = new Map([...t.joined, ...t.notJoined].map((s) => [s, mark(s)]));
    await publish(t.vaultId, event, data, node);
    for (const s of t.joined) {
      const got = await waitAfter(s, marks.get(s), event, (d) => sourceIdOf(d) === sourceIdOf(data), DELIVERY_MS);
      assert.deepEqual(got, data, `${event} reaches ${s.__name} unchanged`);
    }
    await sleep(QUIET_MS);
    for (const s of t.joined) assert.equal(eventsAfter(s, marks.get(s), event).length, 1, `${s.__name} got ${event} once`);
    for (const s of t.notJoined) assert.equal(eventsAfter(s, marks.get(s), event).length, 0, `${s.__name} got no ${event}`);
    node = node === NODE1 ? NODE2 : NODE1;
  }
});
