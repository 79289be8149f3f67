//! Postgres access. Every write that must be broadcast (new, edited, deleted message) writes its
//! outbox entry in the same transaction as the change.

use sqlx::{PgPool, Postgres, Transaction};
use switchboard_common::{DomainError, ErrorCode, RoomKey};

/// An uploaded file's metadata, as the files API records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub uploader_id: String,
    pub file_name: String,
    pub file_size: i64,
    pub mime_type: String,
    pub storage_key: String,
}

/// A recorded file, with the rooms of the messages that refer to it.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: i64,
    pub file: NewFile,
    pub created_at: time::OffsetDateTime,
    pub rooms: Vec<RoomKey>,
}

use crate::model::{
    Claim, Cursor, FileFields, HistoryPage, HistoryQuery, MarkRead, MessageDelete, MessageEdit,
    MessageGet, NewMessage, OutboxEntry, ReceiptsQuery, Sent, StoredMessage,
};

/// The columns of [`StoredMessage`], unqualified.
const COLUMNS: &str = "id, room_kind, room_id, seq, sender_id, type, content, file_id, file_name, file_size, \
     mime_type, reply_to_id, client_id, created_at, edited_at, deleted_at";

/// The columns of [`StoredMessage`], qualified with the alias `m`.
const M_COLUMNS: &str = "m.id, m.room_kind, m.room_id, m.seq, m.sender_id, m.type, m.content, m.file_id, \
     m.file_name, m.file_size, m.mime_type, m.reply_to_id, m.client_id, m.created_at, m.edited_at, m.deleted_at";

pub use switchboard_common::db::db_error;

fn message_not_found() -> DomainError {
    DomainError::not_found("message not found")
}

fn room_not_found() -> DomainError {
    DomainError::not_found("room not found")
}

/// A message inserted by [`Store::send`] with its outbox entry.
#[derive(sqlx::FromRow)]
struct Inserted {
    #[sqlx(flatten)]
    message: StoredMessage,
    outbox_id: i64,
}

/// The messages store over a Postgres pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Stores a message, or answers the existing one for an idempotent repeat.
    ///
    /// A new message is one statement (so one round trip and one commit): the room's `last_seq`
    /// is incremented (locking the room row until the commit, so ids and seqs grow together
    /// within a room; no room → `NOT_FOUND`), the message is inserted and its outbox `new` entry
    /// written. A repeat of `(sender, room, client_id)`, or a concurrent duplicate that won the
    /// race, fails that statement on the idempotency index: it is rolled back whole (the seq is
    /// not consumed) and the existing message is answered (`created = false`, `outbox_id = 0`;
    /// the repeat's content is ignored). `reply_to_id` must name a message of the same room
    /// (deleted ones included); a `file_id` that names no file is `NOT_FOUND`.
    pub async fn send(&self, m: &NewMessage) -> Result<Sent, DomainError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        self.send_on(&mut conn, m).await
    }

    /// [`Store::send`] on a connection the caller holds.
    async fn send_on(
        &self,
        conn: &mut sqlx::PgConnection,
        m: &NewMessage,
    ) -> Result<Sent, DomainError> {
        if let Some(reply_to) = m.reply_to_id
            && !message_in_room(&mut *conn, &m.room, reply_to).await?
        {
            // A repeat of a message that replied is still answered as a repeat.
            if let Some(existing) = self.existing(&mut *conn, m).await? {
                return Ok(existing);
            }
            return Err(DomainError::not_found("reply_to message not found"));
        }

        let insert = format!(
            "WITH seq AS ( \
                 UPDATE rooms SET last_seq = last_seq + 1 WHERE kind = $1 AND id = $2 RETURNING last_seq \
             ), inserted AS ( \
                 INSERT INTO messages (room_kind, room_id, seq, sender_id, type, content, file_id, \
                     file_name, file_size, mime_type, reply_to_id, client_id) \
                 SELECT $1, $2, seq.last_seq, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM seq \
                 RETURNING {COLUMNS} \
             ), outboxed AS ( \
                 INSERT INTO outbox (message_id, event) SELECT id, 'new' FROM inserted RETURNING id \
             ) \
             SELECT inserted.*, outboxed.id AS outbox_id FROM inserted, outboxed"
        );
        let stored: Result<Option<Inserted>, sqlx::Error> = sqlx::query_as(&insert)
            .bind(&m.room.kind)
            .bind(&m.room.id)
            .bind(&m.sender_id)
            .bind(m.kind.as_str())
            .bind(&m.content)
            .bind(m.file.file_id)
            .bind(&m.file.file_name)
            .bind(m.file.file_size)
            .bind(&m.file.mime_type)
            .bind(m.reply_to_id)
            .bind(&m.client_id)
            .fetch_optional(&mut *conn)
            .await;
        match stored {
            Ok(Some(i)) => Ok(Sent {
                message: i.message,
                created: true,
                outbox_id: i.outbox_id,
            }),
            Ok(None) => Err(room_not_found()),
            Err(sqlx::Error::Database(d)) if d.constraint() == Some("messages_idempotency") => {
                self.existing(&mut *conn, m).await?.ok_or_else(|| {
                    DomainError::internal("idempotency conflict without an existing message")
                })
            }
            Err(sqlx::Error::Database(d)) if d.constraint() == Some("messages_file_id_fkey") => {
                Err(DomainError::not_found("file not found"))
            }
            Err(e) => Err(db_error(e)),
        }
    }

    /// Stores several plain messages (no reply, no file: see [`batchable`]) as one statement,
    /// so one round trip and one commit, answering each as [`Store::send`] would, in order.
    ///
    /// This is the group commit behind [`crate::batch::SendBatcher`] (Postgres spent ~560 µs of
    /// CPU per message committed one by one). A batch of one is a plain [`Store::send`]. Within
    /// a room, seqs follow the batch order and ids grow with seqs. Concurrent batches of one
    /// process never share a room (the batcher routes by room), so they cannot deadlock on room
    /// rows; another replica's batch can, and Postgres then aborts one of the two. When the batch
    /// cannot be stored whole (a repeat, a duplicate in flight, a lock cycle), every message is
    /// sent again on its own, so a repeat is answered with the stored message and one message's
    /// conflict never fails another.
    pub async fn send_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        batch: &[NewMessage],
    ) -> Vec<Result<Sent, DomainError>> {
        debug_assert!(batch.iter().all(batchable));
        if let [one] = batch {
            // One statement, committed by itself: half the round trips of a transaction.
            return vec![self.send_on(conn, one).await];
        }
        match self.try_send_batch(&mut *conn, batch).await {
            Ok(answers) => answers,
            Err(BatchFailure::Whole(e)) => batch.iter().map(|_| Err(e.clone())).collect(),
            Err(BatchFailure::OneByOne) => {
                let mut answers = Vec::with_capacity(batch.len());
                for m in batch {
                    answers.push(self.send_on(&mut *conn, m).await);
                }
                answers
            }
        }
    }

    async fn try_send_batch(
        &self,
        conn: &mut sqlx::PgConnection,
        batch: &[NewMessage],
    ) -> Result<Vec<Result<Sent, DomainError>>, BatchFailure> {
        #[derive(sqlx::FromRow)]
        struct Row {
            ord: i64,
            outbox_id: i64,
            #[sqlx(flatten)]
            message: StoredMessage,
        }
        let mut kinds = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        let mut senders = Vec::with_capacity(batch.len());
        let mut types = Vec::with_capacity(batch.len());
        let mut contents = Vec::with_capacity(batch.len());
        let mut client_ids = Vec::with_capacity(batch.len());
        for m in batch {
            kinds.push(m.room.kind.as_str());
            ids.push(m.room.id.as_str());
            senders.push(m.sender_id.as_str());
            types.push(m.kind.as_str());
            contents.push(m.content.as_str());
            client_ids.push(m.client_id.as_deref());
        }
        // `fresh.n` numbers a room's messages in batch order; the room's seq moves by their count
        // once, and each message takes `base + n`. Repeats are not looked for: they are rare
        // (a client's retry) and make the insert fail on the idempotency index, and the batch is
        // then sent one by one, where each repeat is answered as such. Looking them up here
        // cost more than the insert whenever the planner's statistics lagged the table.
        let q = format!(
            "WITH fresh AS ( \
                 SELECT i.*, row_number() OVER (PARTITION BY i.room_kind, i.room_id ORDER BY i.ord) AS n \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
                     WITH ORDINALITY AS i(room_kind, room_id, sender_id, type, content, client_id, ord) \
             ), counts AS ( \
                 SELECT room_kind, room_id, count(*) AS n FROM fresh GROUP BY room_kind, room_id \
             ), seqs AS ( \
                 UPDATE rooms r SET last_seq = r.last_seq + c.n FROM counts c \
                 WHERE r.kind = c.room_kind AND r.id = c.room_id \
                 RETURNING r.kind, r.id, r.last_seq - c.n AS base \
             ), inserted AS ( \
                 INSERT INTO messages (room_kind, room_id, seq, sender_id, type, content, client_id) \
                 SELECT f.room_kind, f.room_id, s.base + f.n, f.sender_id, f.type, f.content, f.client_id \
                 FROM fresh f JOIN seqs s ON s.kind = f.room_kind AND s.id = f.room_id \
                 ORDER BY f.ord \
                 RETURNING {COLUMNS} \
             ), outboxed AS ( \
                 INSERT INTO outbox (message_id, event) SELECT id, 'new' FROM inserted ORDER BY id \
                 RETURNING id, message_id \
             ) \
             SELECT f.ord, o.id AS outbox_id, {M_COLUMNS} \
             FROM inserted m JOIN outboxed o ON o.message_id = m.id \
                 JOIN seqs s ON s.kind = m.room_kind AND s.id = m.room_id \
                 JOIN fresh f ON f.room_kind = m.room_kind AND f.room_id = m.room_id AND s.base + f.n = m.seq"
        );
        let rows: Vec<Row> = sqlx::query_as(&q)
            .bind(&kinds)
            .bind(&ids)
            .bind(&senders)
            .bind(&types)
            .bind(&contents)
            .bind(&client_ids)
            .fetch_all(conn)
            .await
            .map_err(BatchFailure::from_db)?;

        // A message with no row named a room that does not exist.
        let mut answers: Vec<Result<Sent, DomainError>> =
            batch.iter().map(|_| Err(room_not_found())).collect();
        for r in rows {
            let Some(slot) = usize::try_from(r.ord - 1)
                .ok()
                .and_then(|i| answers.get_mut(i))
            else {
                return Err(BatchFailure::Whole(DomainError::internal(
                    "batch answered an unknown position",
                )));
            };
            *slot = Ok(Sent {
                message: r.message,
                created: true,
                outbox_id: r.outbox_id,
            });
        }
        Ok(answers)
    }

    /// The stored message of an idempotent repeat, answered as such.
    async fn existing(
        &self,
        conn: &mut sqlx::PgConnection,
        m: &NewMessage,
    ) -> Result<Option<Sent>, DomainError> {
        let Some(client_id) = &m.client_id else {
            return Ok(None);
        };
        Ok(find_by_client_id(conn, m, client_id)
            .await?
            .map(|message| Sent {
                message,
                created: false,
                outbox_id: 0,
            }))
    }

    /// Replaces a message's content and sets `edited_at`; writes an outbox `edited` entry.
    /// See [`check_change`] for the rules.
    pub async fn edit(&self, e: &MessageEdit) -> Result<(StoredMessage, i64), DomainError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        check_change(&mut tx, &e.room, e.message_id, &e.actor).await?;
        let q = format!(
            "UPDATE messages SET content = $2, edited_at = now() WHERE id = $1 RETURNING {COLUMNS}"
        );
        let message: StoredMessage = sqlx::query_as(&q)
            .bind(e.message_id)
            .bind(&e.content)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let outbox_id = insert_outbox(&mut tx, message.id, "edited").await?;
        tx.commit().await.map_err(db_error)?;
        Ok((message, outbox_id))
    }

    /// Soft-deletes a message (sets `deleted_at`; the row and its content stay); writes an
    /// outbox `deleted` entry. See [`check_change`] for the rules; deleting twice is `NOT_FOUND`.
    pub async fn delete(&self, d: &MessageDelete) -> Result<(StoredMessage, i64), DomainError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        check_change(&mut tx, &d.room, d.message_id, &d.actor).await?;
        let q = format!("UPDATE messages SET deleted_at = now() WHERE id = $1 RETURNING {COLUMNS}");
        let message: StoredMessage = sqlx::query_as(&q)
            .bind(d.message_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let outbox_id = insert_outbox(&mut tx, message.id, "deleted").await?;
        tx.commit().await.map_err(db_error)?;
        Ok((message, outbox_id))
    }

    /// A message of the room (deleted ones too, served as tombstones); otherwise `NOT_FOUND`.
    pub async fn get(&self, g: &MessageGet) -> Result<StoredMessage, DomainError> {
        let q = format!(
            "SELECT {COLUMNS} FROM messages WHERE id = $1 AND room_kind = $2 AND room_id = $3"
        );
        sqlx::query_as(&q)
            .bind(g.message_id)
            .bind(&g.room.kind)
            .bind(&g.room.id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(message_not_found)
    }

    /// Records an uploaded file whose object is stored.
    pub async fn create_file(&self, f: &NewFile) -> Result<StoredFile, DomainError> {
        let (id, created_at): (i64, time::OffsetDateTime) = sqlx::query_as(
            "INSERT INTO files (uploader_id, file_name, file_size, mime_type, storage_key) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at",
        )
        .bind(&f.uploader_id)
        .bind(&f.file_name)
        .bind(f.file_size)
        .bind(&f.mime_type)
        .bind(&f.storage_key)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(StoredFile {
            id,
            file: f.clone(),
            created_at,
            rooms: vec![],
        })
    }

    /// An uploaded file and the rooms of the messages that refer to it.
    pub async fn get_file(&self, id: i64) -> Result<StoredFile, DomainError> {
        let row: Option<(
            String,
            String,
            i64,
            String,
            Option<String>,
            time::OffsetDateTime,
        )> = sqlx::query_as(
            "SELECT uploader_id, file_name, file_size, mime_type, storage_key, created_at \
                 FROM files WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let (uploader_id, file_name, file_size, mime_type, storage_key, created_at) =
            row.ok_or_else(|| DomainError::not_found("File not found"))?;
        let rooms: Vec<(String, String)> =
            sqlx::query_as("SELECT DISTINCT room_kind, room_id FROM messages WHERE file_id = $1")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(StoredFile {
            id,
            file: NewFile {
                uploader_id,
                file_name,
                file_size,
                mime_type,
                storage_key: storage_key.unwrap_or_default(),
            },
            created_at,
            rooms: rooms
                .into_iter()
                .map(|(kind, id)| RoomKey::new(kind, id))
                .collect(),
        })
    }

    /// The room of a message (deleted ones included).
    pub async fn locate(&self, message_id: i64) -> Result<RoomKey, DomainError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT room_kind, room_id FROM messages WHERE id = $1")
                .bind(message_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        let (kind, id) = row.ok_or_else(message_not_found)?;
        Ok(RoomKey::new(kind, id))
    }

    /// Moves the `(room, user)` cursor forward to `message_id` (which must be a message of the
    /// room, deleted ones included; otherwise `NOT_FOUND`). Never moves it back. Answers whether
    /// it moved and the cursor after the call.
    pub async fn mark_read(&self, r: &MarkRead) -> Result<(bool, Cursor), DomainError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        if !message_in_room(&mut conn, &r.room, r.message_id).await? {
            return Err(message_not_found());
        }
        let moved: Option<(i64, time::OffsetDateTime)> = sqlx::query_as(
            "INSERT INTO read_cursors (room_kind, room_id, user_id, message_id, read_at) \
             VALUES ($1, $2, $3, $4, now()) \
             ON CONFLICT (room_kind, room_id, user_id) DO UPDATE \
                 SET message_id = excluded.message_id, read_at = excluded.read_at \
                 WHERE excluded.message_id > read_cursors.message_id \
             RETURNING message_id, read_at",
        )
        .bind(&r.room.kind)
        .bind(&r.room.id)
        .bind(&r.user_id)
        .bind(r.message_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        if let Some((message_id, read_at)) = moved {
            return Ok((
                true,
                Cursor {
                    user_id: r.user_id.clone(),
                    message_id,
                    read_at,
                },
            ));
        }
        // Not moved: the cursor exists and is at or past message_id (cursors are never deleted).
        let (message_id, read_at): (i64, time::OffsetDateTime) = sqlx::query_as(
            "SELECT message_id, read_at FROM read_cursors WHERE room_kind = $1 AND room_id = $2 AND user_id = $3",
        )
        .bind(&r.room.kind)
        .bind(&r.room.id)
        .bind(&r.user_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok((
            false,
            Cursor {
                user_id: r.user_id.clone(),
                message_id,
                read_at,
            },
        ))
    }

    /// One page of a room's history (deleted messages included, as tombstones) and whether
    /// another page exists in the same direction. An unknown room is `NOT_FOUND`.
    pub async fn history(
        &self,
        h: &HistoryQuery,
    ) -> Result<(Vec<StoredMessage>, bool), DomainError> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        let room: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM rooms WHERE kind = $1 AND id = $2")
                .bind(&h.room.kind)
                .bind(&h.room.id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        if room.is_none() {
            return Err(room_not_found());
        }
        let (filter, order, bound) = match h.page {
            HistoryPage::Latest => ("", "DESC", None),
            HistoryPage::Before(b) => ("AND id < $4", "DESC", Some(b)),
            HistoryPage::After(a) => ("AND id > $4", "ASC", Some(a)),
        };
        let q = format!(
            "SELECT {COLUMNS} FROM messages WHERE room_kind = $1 AND room_id = $2 {filter} \
             ORDER BY id {order} LIMIT $3"
        );
        let fetch = i64::from(h.limit) + 1;
        let mut query = sqlx::query_as::<_, StoredMessage>(&q)
            .bind(&h.room.kind)
            .bind(&h.room.id)
            .bind(fetch);
        if let Some(bound) = bound {
            query = query.bind(bound);
        }
        let mut rows = query.fetch_all(&mut *conn).await.map_err(db_error)?;
        let has_more = rows.len() > h.limit as usize;
        rows.truncate(h.limit as usize);
        Ok((rows, has_more))
    }

    /// The room's read cursors (only `user_ids`' when given), sorted by user id. An unknown room
    /// has none.
    pub async fn receipts(&self, r: &ReceiptsQuery) -> Result<Vec<Cursor>, DomainError> {
        let rows: Vec<(String, i64, time::OffsetDateTime)> = sqlx::query_as(
            "SELECT user_id, message_id, read_at FROM read_cursors \
             WHERE room_kind = $1 AND room_id = $2 AND (cardinality($3::text[]) = 0 OR user_id = ANY($3)) \
             ORDER BY user_id",
        )
        .bind(&r.room.kind)
        .bind(&r.room.id)
        .bind(&r.user_ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(user_id, message_id, read_at)| Cursor {
                user_id,
                message_id,
                read_at,
            })
            .collect())
    }

    /// Atomically claims up to `limit` outbox entries created at least `older_than_ms` ago and
    /// not under an unexpired lease, leasing them for `lease_ms`; answers them with their
    /// messages, oldest (smallest id) first. The outbox holds only unconfirmed entries, so it is
    /// small and walked by its primary key. `FOR UPDATE SKIP LOCKED` keeps concurrent claimers
    /// disjoint.
    pub async fn claim_undelivered(&self, c: &Claim) -> Result<Vec<OutboxEntry>, DomainError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            outbox_id: i64,
            event: String,
            #[sqlx(flatten)]
            message: StoredMessage,
        }
        let q = format!(
            "WITH due AS ( \
                 SELECT id FROM outbox \
                 WHERE created_at <= now() - $1::bigint * interval '1 millisecond' \
                   AND (claimed_until IS NULL OR claimed_until <= now()) \
                 ORDER BY id \
                 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED \
             ), claimed AS ( \
                 UPDATE outbox o SET claimed_until = now() + $3::bigint * interval '1 millisecond' \
                 FROM due WHERE o.id = due.id \
                 RETURNING o.id, o.message_id, o.event \
             ) \
             SELECT c.id AS outbox_id, c.event, {M_COLUMNS} \
             FROM claimed c JOIN messages m ON m.id = c.message_id \
             ORDER BY c.id"
        );
        let rows: Vec<Row> = sqlx::query_as(&q)
            .bind(c.older_than_ms)
            .bind(i64::from(c.limit))
            .bind(c.lease_ms)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| OutboxEntry {
                outbox_id: r.outbox_id,
                event: r.event,
                message: r.message,
            })
            .collect())
    }

    /// Removes delivered outbox entries (unknown ids are ignored).
    pub async fn mark_delivered(&self, ids: &[i64]) -> Result<(), DomainError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

async fn find_by_client_id(
    conn: &mut sqlx::PgConnection,
    m: &NewMessage,
    client_id: &str,
) -> Result<Option<StoredMessage>, DomainError> {
    let q = format!(
        "SELECT {COLUMNS} FROM messages \
         WHERE sender_id = $1 AND room_kind = $2 AND room_id = $3 AND client_id = $4"
    );
    sqlx::query_as(&q)
        .bind(&m.sender_id)
        .bind(&m.room.kind)
        .bind(&m.room.id)
        .bind(client_id)
        .fetch_optional(conn)
        .await
        .map_err(db_error)
}

async fn message_in_room(
    conn: &mut sqlx::PgConnection,
    room: &RoomKey,
    id: i64,
) -> Result<bool, DomainError> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM messages WHERE id = $1 AND room_kind = $2 AND room_id = $3",
    )
    .bind(id)
    .bind(&room.kind)
    .bind(&room.id)
    .fetch_optional(conn)
    .await
    .map_err(db_error)?;
    Ok(found.is_some())
}

async fn insert_outbox(
    tx: &mut Transaction<'_, Postgres>,
    message_id: i64,
    event: &str,
) -> Result<i64, DomainError> {
    sqlx::query_scalar("INSERT INTO outbox (message_id, event) VALUES ($1, $2) RETURNING id")
        .bind(message_id)
        .bind(event)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)
}

/// The rules of Edit and Delete, checked under a row lock in the caller's transaction, in this
/// order: the message must be in the room and not deleted (`NOT_FOUND`); the actor must be its
/// sender or may moderate (`FORBIDDEN`); with a non-zero window, nobody (moderators included)
/// may change it once `now() - created_at` exceeds the window (`EDIT_WINDOW_EXPIRED`). Times
/// are the database's clock.
async fn check_change(
    tx: &mut Transaction<'_, Postgres>,
    room: &RoomKey,
    message_id: i64,
    actor: &crate::model::Actor,
) -> Result<(), DomainError> {
    let row: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT sender_id, deleted_at IS NOT NULL, \
                $4::bigint > 0 AND now() - created_at > $4::bigint * interval '1 millisecond' \
         FROM messages WHERE id = $1 AND room_kind = $2 AND room_id = $3 FOR UPDATE",
    )
    .bind(message_id)
    .bind(&room.kind)
    .bind(&room.id)
    .bind(actor.edit_window_ms)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let Some((sender_id, deleted, expired)) = row else {
        return Err(message_not_found());
    };
    if deleted {
        return Err(message_not_found());
    }
    if sender_id != actor.actor_id && !actor.may_moderate {
        return Err(DomainError::forbidden());
    }
    if expired {
        return Err(DomainError::of(ErrorCode::EditWindowExpired));
    }
    Ok(())
}

/// Whether [`Store::send_batch`] may store the message: no reply to check and no file row to
/// reference (those take [`Store::send`], whose errors name the missing row).
pub fn batchable(m: &NewMessage) -> bool {
    m.reply_to_id.is_none() && m.file == FileFields::default()
}

/// Why a batch was not stored.
enum BatchFailure {
    /// Nothing of the batch was stored, and sending its messages one by one would fail too
    /// (Postgres away).
    Whole(DomainError),
    /// One message conflicted with another (a duplicate in flight, a lock cycle): nothing was
    /// stored, and each message is to be sent on its own.
    OneByOne,
}

impl BatchFailure {
    fn from_db(e: sqlx::Error) -> Self {
        match &e {
            // unique_violation, deadlock_detected, serialization_failure
            sqlx::Error::Database(d)
                if matches!(d.code().as_deref(), Some("23505" | "40P01" | "40001")) =>
            {
                BatchFailure::OneByOne
            }
            _ => BatchFailure::Whole(db_error(e)),
        }
    }
}
