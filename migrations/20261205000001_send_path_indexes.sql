-- Every stored message pays for each index and foreign key on `messages` and `outbox` in the
-- send statement. These three are written on every send and never read (measured with pgbench on
-- the batched send statement, load-tests/pgbench/send-batch.sh and docs/benchmarks/README.md
-- §10: 124-127 µs of CPU per message before, 108-117 µs after):
--
-- * UNIQUE (room_kind, room_id, seq) backed no query (history pages by `messages_room_id`).
--   Seqs have one writer: the send statements take the next seq from `rooms.last_seq` under
--   that row's lock, in the statement that inserts the message, so a room's seqs are 1..n
--   without duplicates by construction (tests/messages.rs checks it under concurrent sends).
-- * outbox.message_id's foreign key: the entry is inserted in the same statement as its message
--   (or in the edit/delete transaction that has just locked it), and messages are never removed.
-- * outbox (created_at): the sweeper walks the outbox by id (ids grow with time), and the
--   outbox holds only entries not yet confirmed, so it stays small.
ALTER TABLE messages DROP CONSTRAINT messages_room_kind_room_id_seq_key;
ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_fkey;
DROP INDEX outbox_created;
