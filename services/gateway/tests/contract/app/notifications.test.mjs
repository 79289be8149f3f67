// The personal room (001): notifications:ready right after connecting, and notifications:new
// published by the application through POST /v1/users/{id}/events, delivered unchanged to every
// socket of that user on every node, once, and to nobody else.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { NODE1, NODE2, QUIET_MS, closeAll, count, expectNo, sleep, uuid, waitFor } from '../helpers.mjs';
import { DELIVERY_MS, appUser, connectApp, publishToUser, waitReady } from './helpers.mjs';

afterEach(closeAll);

/** A notification document as the application's REST API would return it. */
function notification() {
  const id = uuid();
  return {
    eventKey: 'task.assigned',
    notification: {
      id,
      type: 'task.assigned',
      title: 'You were assigned a task',
      body: 'Review the “Q3 roadmap” — due Friday',
      read: false,
      createdAt: new Date().toISOString(),
      actor: { id: 'u-42', name: 'Ada' },
      meta: { taskId: 1234, tags: ['urgent', 'q3'], nested: { n: null, ok: true, ratio: 0.5 } },
    },
  };
}

test('notifications:ready { message, userId } arrives right after connecting, once, on both nodes', async () => {
  const user = await appUser();
  for (const node of [NODE1, NODE2]) {
    const s = await connectApp(user, node);
    await waitReady(s, user.id);
    await sleep(QUIET_MS);
    assert.equal(count(s, 'notifications:ready'), 1, 'exactly one notifications:ready');
  }
});

test('notifications:ready arrives over long-polling too', async () => {
  const user = await appUser();
  const s = await connectApp(user, NODE2, { transports: ['polling'] });
  await waitReady(s, user.id);
});

test("notifications:new reaches every socket of the user on both nodes once, data unchanged; another user's socket gets nothing", async () => {
  const A = await appUser();
  const B = await appUser();
  const a1 = await connectApp(A, NODE1);
  const a2 = await connectApp(A, NODE2);
  const a3 = await connectApp(A, NODE2, { transports: ['polling'] });
  const b = await connectApp(B, NODE1);
  for (const s of [a1, a2, a3]) await waitReady(s, A.id);
  await waitReady(b, B.id);

  const data = notification();
  await publishToUser(A.id, 'notifications:new', data, { node: NODE2 });
  const id = data.notification.id;
  for (const s of [a1, a2, a3]) {
    const got = await waitFor(s, 'notifications:new', (d) => d.notification.id === id, DELIVERY_MS);
    assert.deepEqual(got, data, 'the payload is delivered unchanged');
  }
  await expectNo(b, 'notifications:new', QUIET_MS);
  for (const s of [a1, a2, a3]) {
    assert.equal(count(s, 'notifications:new', (d) => d.notification.id === id), 1, `once on ${s.__name}`);
  }
});

test('notifications:new with namespace /ws/app reaches the app sockets of the user', async () => {
  const A = await appUser();
  const B = await appUser();
  const a1 = await connectApp(A, NODE2);
  const a2 = await connectApp(A, NODE1);
  const b = await connectApp(B, NODE2);
  for (const s of [a1, a2]) await waitReady(s, A.id);

  const data = notification();
  await publishToUser(A.id, 'notifications:new', data, { namespace: '/ws/app', node: NODE1 });
  for (const s of [a1, a2]) {
    assert.deepEqual(
      await waitFor(s, 'notifications:new', (d) => d.notification.id === data.notification.id, DELIVERY_MS),
      data,
    );
  }
  await expectNo(b, 'notifications:new', QUIET_MS);
  for (const s of [a1, a2]) assert.equal(count(s, 'notifications:new'), 1, `once on ${s.__name}`);
});
