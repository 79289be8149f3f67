//! Postgres access: every query of the service, with runtime-checked SQL (`sqlx::query*`, no
//! compile-time macros: there is no database at build time).
//!
//! Hierarchy walks are recursive CTEs over `rooms (parent_kind, parent_id)`. The service never
//! lets a cycle in (see [`Store::upsert_room`]); as a guard against rows written by other means,
//! every walk also stops at [`MAX_DEPTH`] levels.

use sqlx::{PgPool, Postgres, Transaction, postgres::PgDatabaseError};
use switchboard_common::DomainError;
use time::OffsetDateTime;

use switchboard_common::RoomKey;

use crate::domain::{Grant, Member, Revoke, Revoked, Room, RoomUpsert, Standing, User};

/// How deep a hierarchy walk goes before giving up (a guard, not a product limit).
pub const MAX_DEPTH: i32 = 1000;

/// Postgres SQLSTATE for a foreign-key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

pub use switchboard_common::db::db_error;

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<PgDatabaseError>()
            .is_some_and(|pg| pg.code() == FOREIGN_KEY_VIOLATION),
        _ => false,
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    username: String,
    first_name: Option<String>,
    last_name: Option<String>,
    role: Option<String>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            username: r.username,
            first_name: r.first_name,
            last_name: r.last_name,
            role: r.role,
        }
    }
}

#[derive(sqlx::FromRow)]
struct RoomRow {
    kind: String,
    id: String,
    parent_kind: Option<String>,
    parent_id: Option<String>,
    title: Option<String>,
    #[sqlx(rename = "type")]
    room_type: Option<String>,
    created_by: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl From<RoomRow> for Room {
    fn from(r: RoomRow) -> Self {
        let parent = match (r.parent_kind, r.parent_id) {
            (Some(kind), Some(id)) => Some(RoomKey { kind, id }),
            _ => None,
        };
        Room {
            room: RoomKey {
                kind: r.kind,
                id: r.id,
            },
            parent,
            title: r.title,
            room_type: r.room_type,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: String,
    role: String,
    granted_at: OffsetDateTime,
}

impl From<MemberRow> for Member {
    fn from(r: MemberRow) -> Self {
        Member {
            user_id: r.user_id,
            role: r.role,
            granted_at: r.granted_at,
        }
    }
}

const ROOM_COLUMNS: &str =
    "kind, id, parent_kind, parent_id, title, type, created_by, created_at, updated_at";

/// A lock key (arbitrary, constant) serialising every change of a room's parent, so that two
/// concurrent re-parentings cannot together build a cycle that neither sees alone.
const HIERARCHY_LOCK: i64 = 0x5357_4d45_4d42_0001;

/// The database behind the service.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Store { pool }
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, DomainError> {
        self.pool.begin().await.map_err(db_error)
    }

    /// Inserts or updates a user: `username` always overwrites, optional fields only when
    /// present; `updated_at` is bumped on every call.
    pub async fn upsert_user(&self, u: &User) -> Result<User, DomainError> {
        let row: UserRow = sqlx::query_as(
            "INSERT INTO users (id, username, first_name, last_name, role)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET
                 username = EXCLUDED.username,
                 first_name = COALESCE(EXCLUDED.first_name, users.first_name),
                 last_name = COALESCE(EXCLUDED.last_name, users.last_name),
                 role = COALESCE(EXCLUDED.role, users.role),
                 updated_at = now()
             RETURNING id, username, first_name, last_name, role",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(&u.role)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.into())
    }

    pub async fn get_user(&self, id: &str) -> Result<User, DomainError> {
        sqlx::query_as::<_, UserRow>(
            "SELECT id, username, first_name, last_name, role FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .map(Into::into)
        .ok_or_else(|| DomainError::not_found("user not found"))
    }

    /// Inserts or updates a room. Optional fields (parent included) overwrite when present and
    /// are kept when absent; `updated_at` moves only when a stored field actually changes.
    ///
    /// With a parent, in one transaction holding [`HIERARCHY_LOCK`]: the parent must exist
    /// (`NotFound`), and must be neither the room itself nor one of its descendants
    /// (`Validation`). A parent deleted between the check and the write (foreign-key violation)
    /// is also `NotFound`.
    pub async fn upsert_room(&self, r: &RoomUpsert) -> Result<Room, DomainError> {
        let mut tx = self.begin().await?;
        if let Some(parent) = &r.parent {
            if *parent == r.room {
                return Err(DomainError::validation("a room cannot be its own parent"));
            }
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(HIERARCHY_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            // The parent's ancestor chain, the parent included: empty when the parent does not
            // exist; contains the room when the room is an ancestor of the parent (a cycle).
            let chain: Vec<(String, String)> = sqlx::query_as(
                "WITH RECURSIVE chain(kind, id, parent_kind, parent_id, depth) AS (
                     SELECT kind, id, parent_kind, parent_id, 0 FROM rooms WHERE kind = $1 AND id = $2
                     UNION ALL
                     SELECT r.kind, r.id, r.parent_kind, r.parent_id, c.depth + 1
                     FROM rooms r JOIN chain c ON r.kind = c.parent_kind AND r.id = c.parent_id
                     WHERE c.depth < $3
                 )
                 SELECT kind, id FROM chain",
            )
            .bind(&parent.kind)
            .bind(&parent.id)
            .bind(MAX_DEPTH)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            if chain.is_empty() {
                return Err(DomainError::not_found("parent room not found"));
            }
            if chain
                .iter()
                .any(|(k, i)| *k == r.room.kind && *i == r.room.id)
            {
                return Err(DomainError::validation(
                    "the parent is a descendant of the room (rooms cannot form a cycle)",
                ));
            }
        }
        let sql = format!(
            "INSERT INTO rooms AS r (kind, id, parent_kind, parent_id, title, type, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (kind, id) DO UPDATE SET
                 parent_kind = COALESCE(EXCLUDED.parent_kind, r.parent_kind),
                 parent_id = COALESCE(EXCLUDED.parent_id, r.parent_id),
                 title = COALESCE(EXCLUDED.title, r.title),
                 type = COALESCE(EXCLUDED.type, r.type),
                 created_by = COALESCE(EXCLUDED.created_by, r.created_by),
                 updated_at = CASE
                     WHEN (r.parent_kind, r.parent_id, r.title, r.type, r.created_by)
                          IS DISTINCT FROM
                          (COALESCE(EXCLUDED.parent_kind, r.parent_kind),
                           COALESCE(EXCLUDED.parent_id, r.parent_id),
                           COALESCE(EXCLUDED.title, r.title),
                           COALESCE(EXCLUDED.type, r.type),
                           COALESCE(EXCLUDED.created_by, r.created_by))
                     THEN now() ELSE r.updated_at END
             RETURNING {ROOM_COLUMNS}"
        );
        let row: RoomRow = sqlx::query_as(&sql)
            .bind(&r.room.kind)
            .bind(&r.room.id)
            .bind(r.parent.as_ref().map(|p| &p.kind))
            .bind(r.parent.as_ref().map(|p| &p.id))
            .bind(&r.title)
            .bind(&r.room_type)
            .bind(&r.created_by)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    DomainError::not_found("parent room not found")
                } else {
                    db_error(e)
                }
            })?;
        tx.commit().await.map_err(db_error)?;
        Ok(row.into())
    }

    /// The room and its direct members, oldest grant first (ties by user id, byte order).
    pub async fn get_room(&self, room: &RoomKey) -> Result<(Room, Vec<Member>), DomainError> {
        let room_row: RoomRow = sqlx::query_as(&format!(
            "SELECT {ROOM_COLUMNS} FROM rooms WHERE kind = $1 AND id = $2"
        ))
        .bind(&room.kind)
        .bind(&room.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .ok_or_else(|| DomainError::not_found("room not found"))?;
        let members: Vec<MemberRow> = sqlx::query_as(
            "SELECT user_id, role, granted_at FROM memberships
             WHERE room_kind = $1 AND room_id = $2
             ORDER BY granted_at, user_id COLLATE \"C\"",
        )
        .bind(&room.kind)
        .bind(&room.id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok((
            room_row.into(),
            members.into_iter().map(Into::into).collect(),
        ))
    }

    /// Inserts a membership or changes its role (keeping `granted_at`). The room's
    /// `updated_at` moves when the membership is new or its role changed. A missing room
    /// (including one deleted concurrently: foreign-key violation) is `NotFound`.
    pub async fn grant(&self, g: &Grant) -> Result<Member, DomainError> {
        let mut tx = self.begin().await?;
        let changed: Option<MemberRow> = sqlx::query_as(
            "INSERT INTO memberships AS m (room_kind, room_id, user_id, role)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_kind, room_id, user_id) DO UPDATE SET role = EXCLUDED.role
                 WHERE m.role IS DISTINCT FROM EXCLUDED.role
             RETURNING user_id, role, granted_at",
        )
        .bind(&g.room.kind)
        .bind(&g.room.id)
        .bind(&g.user_id)
        .bind(&g.role)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                DomainError::not_found("room not found")
            } else {
                db_error(e)
            }
        })?;
        let member = match changed {
            Some(m) => {
                touch_room(&mut tx, &g.room).await?;
                m
            }
            // Same role already held: the conflicting row is locked by the ON CONFLICT, and this
            // statement's snapshot sees it.
            None => sqlx::query_as(
                "SELECT user_id, role, granted_at FROM memberships
                 WHERE room_kind = $1 AND room_id = $2 AND user_id = $3",
            )
            .bind(&g.room.kind)
            .bind(&g.room.id)
            .bind(&g.user_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?,
        };
        tx.commit().await.map_err(db_error)?;
        Ok(member.into())
    }

    /// Deletes a direct membership and answers what the user lost: the room and each
    /// descendant that the user can no longer reach (no membership on it nor on any ancestor).
    /// Nothing is lost when the user still holds a membership on an ancestor of the room.
    pub async fn revoke(&self, r: &Revoke) -> Result<Revoked, DomainError> {
        let mut tx = self.begin().await?;
        let removed = sqlx::query(
            "DELETE FROM memberships WHERE room_kind = $1 AND room_id = $2 AND user_id = $3",
        )
        .bind(&r.room.kind)
        .bind(&r.room.id)
        .bind(&r.user_id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            > 0;
        if !removed {
            return Ok(Revoked::default());
        }
        touch_room(&mut tx, &r.room).await?;
        // Walk down from the room, stopping at rooms the user holds directly (they and their
        // subtrees stay reachable); the walk does not start at all when an ancestor is held.
        let lost: Vec<(String, String)> = sqlx::query_as(
            "WITH RECURSIVE ancestors(kind, id, depth) AS (
                 SELECT parent_kind, parent_id, 1 FROM rooms
                 WHERE kind = $1 AND id = $2 AND parent_kind IS NOT NULL
                 UNION ALL
                 SELECT r.parent_kind, r.parent_id, a.depth + 1
                 FROM rooms r JOIN ancestors a ON r.kind = a.kind AND r.id = a.id
                 WHERE r.parent_kind IS NOT NULL AND a.depth < $4
             ),
             lost(kind, id, depth) AS (
                 SELECT kind, id, 0 FROM rooms
                 WHERE kind = $1 AND id = $2
                   AND NOT EXISTS (
                       SELECT 1 FROM ancestors a JOIN memberships m
                           ON m.room_kind = a.kind AND m.room_id = a.id AND m.user_id = $3)
                 UNION ALL
                 SELECT r.kind, r.id, l.depth + 1
                 FROM rooms r JOIN lost l ON r.parent_kind = l.kind AND r.parent_id = l.id
                 WHERE l.depth < $4
                   AND NOT EXISTS (
                       SELECT 1 FROM memberships m
                       WHERE m.room_kind = r.kind AND m.room_id = r.id AND m.user_id = $3)
             )
             SELECT kind, id FROM lost ORDER BY depth, kind COLLATE \"C\", id COLLATE \"C\"",
        )
        .bind(&r.room.kind)
        .bind(&r.room.id)
        .bind(&r.user_id)
        .bind(MAX_DEPTH)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Revoked {
            removed,
            lost_rooms: lost
                .into_iter()
                .map(|(kind, id)| RoomKey { kind, id })
                .collect(),
        })
    }

    /// Everything an RBAC decision needs, in one round trip: whether the room exists, the
    /// user's roles on the room and its ancestors (nearest first), and whether one is on the
    /// room itself.
    pub async fn standing(&self, user_id: &str, room: &RoomKey) -> Result<Standing, DomainError> {
        let (room_exists, roles, direct): (bool, Vec<String>, bool) = sqlx::query_as(
            "WITH RECURSIVE chain(kind, id, parent_kind, parent_id, depth) AS (
                 SELECT kind, id, parent_kind, parent_id, 0 FROM rooms WHERE kind = $1 AND id = $2
                 UNION ALL
                 SELECT r.kind, r.id, r.parent_kind, r.parent_id, c.depth + 1
                 FROM rooms r JOIN chain c ON r.kind = c.parent_kind AND r.id = c.parent_id
                 WHERE c.depth < $4
             ),
             held AS (
                 SELECT c.depth, m.role FROM chain c JOIN memberships m
                     ON m.room_kind = c.kind AND m.room_id = c.id AND m.user_id = $3
             )
             SELECT EXISTS (SELECT 1 FROM chain),
                    ARRAY(SELECT role FROM held ORDER BY depth),
                    EXISTS (SELECT 1 FROM held WHERE depth = 0)",
        )
        .bind(&room.kind)
        .bind(&room.id)
        .bind(user_id)
        .bind(MAX_DEPTH)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(Standing {
            room_exists,
            roles,
            direct,
        })
    }

    /// Users sharing at least one room (direct memberships) with `user_id`, the user excluded,
    /// sorted by byte order.
    pub async fn contacts(&self, user_id: &str) -> Result<Vec<String>, DomainError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT other.user_id COLLATE \"C\" AS user_id
             FROM memberships mine
             JOIN memberships other ON other.room_kind = mine.room_kind AND other.room_id = mine.room_id
             WHERE mine.user_id = $1 AND other.user_id <> $1
             ORDER BY 1",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    /// The rooms of `kind` where `user_id` has a direct membership, by id.
    pub async fn user_rooms(&self, user_id: &str, kind: &str) -> Result<Vec<RoomKey>, DomainError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT room_id FROM memberships WHERE user_id = $1 AND room_kind = $2
             ORDER BY room_id COLLATE \"C\"",
        )
        .bind(user_id)
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(id,)| RoomKey::new(kind, id))
            .collect())
    }
}

/// Marks a room as changed (its membership set or a role moved).
async fn touch_room(
    tx: &mut Transaction<'static, Postgres>,
    room: &RoomKey,
) -> Result<(), DomainError> {
    sqlx::query("UPDATE rooms SET updated_at = now() WHERE kind = $1 AND id = $2")
        .bind(&room.kind)
        .bind(&room.id)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}
