// Every stored message reaches the room live, even when the node that stored it died before
// broadcasting it. The test plays that node: it stores a message and its outbox entry in
// Postgres exactly as the messages service does, and never broadcasts. A sweeper on some gateway
// node must deliver it, confirm it (the outbox entry goes away), and the sender's retry with the
// same clientId must be an idempotent repeat that is not broadcast again.

import assert from 'node:assert/strict';
import { after, afterEach, test } from 'node:test';
import pg from 'pg';
import {
  DATABASE_URL,
  NODE1,
  NODE2,
  ack,
  assertChatMessage,
  closeAll,
  connectUser,
  count,
  join,
  newChat,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

afterEach(closeAll);

const db = new pg.Client({ connectionString: DATABASE_URL });
await db.connect();
after(() => db.end());

/** Stores a message and its outbox entry in one transaction, as the messages service does. */
async function storeWithoutBroadcast(chatId, senderId, body, clientId) {
  await db.query('BEGIN');
  try {
    const seq = await db.query(
      "UPDATE rooms SET last_seq = last_seq + 1 WHERE kind = 'chat' AND id = $1 RETURNING last_seq",
      [chatId],
    );
    const msg = await db.query(
      `INSERT INTO messages (room_kind, room_id, seq, sender_id, type, content, client_id)
       VALUES ('chat', $1, $2, $3, 'text', $4, $5) RETURNING id`,
      [chatId, seq.rows[0].last_seq, senderId, body, clientId],
    );
    const id = msg.rows[0].id;
    await db.query("INSERT INTO outbox (message_id, event) VALUES ($1, 'new')", [id]);
    await db.query('COMMIT');
    return String(id);
  } catch (e) {
    await db.query('ROLLBACK');
    throw e;
  }
}

test('a stored message whose node died before broadcasting reaches the room, once', async () => {
  const { chatId, users } = await newChat({ members: 2 });
  const [A, B] = users;
  const b = await connectUser(B, NODE2);
  await join(b, chatId);
  const clientId = uuid();
  const id = await storeWithoutBroadcast(chatId, A.id, 'stored, never broadcast', clientId);

  const m = await waitFor(b, 'message:new', (x) => x._id === id, 15000);
  assertChatMessage(m, { chatId, _id: id, senderId: A.id, body: 'stored, never broadcast' });

  // The redelivery was confirmed: the outbox entry is gone.
  let left = 1;
  for (let i = 0; i < 40 && left > 0; i++) {
    left = (await db.query('SELECT count(*)::int AS n FROM outbox WHERE message_id = $1', [id])).rows[0].n;
    if (left > 0) await sleep(250);
  }
  assert.equal(left, 0, 'the outbox entry is removed once delivered');

  // The sender's client never got its ack and retries: same serverId, no second broadcast.
  const a = await connectUser(A, NODE1);
  const retry = await ack(a, 'message:send', { chatId, body: 'stored, never broadcast', clientId });
  assert.equal(retry.ok, true);
  assert.equal(retry.data.serverId, id);
  await sleep(2500);
  assert.equal(count(b, 'message:new', (x) => x._id === id), 1, 'delivered exactly once');
});
