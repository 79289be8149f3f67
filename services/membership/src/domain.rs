//! Domain types and the validation done when converting from the generated gRPC types.
//!
//! Rules (all failures are `ErrorCode::Validation`):
//! - ids (users, rooms, `created_by`) and usernames: non-empty, at most 256 characters
//!   (Unicode scalar values, not bytes); no trimming, they are opaque;
//! - room kinds: one of `server channel conversation chat vault project study`;
//! - membership roles: non-empty, at most 64 characters;
//! - actions: a known permission name (see [`crate::roles::Permission`]);
//! - a missing `RoomRef` where one is required is a validation error;
//! - free-text fields are stored as given, within bounds (code points, no NUL): first and last
//!   name [`MAX_NAME_CHARS`], the user's application role and the room type [`MAX_ROLE_LEN`],
//!   the room title [`MAX_TITLE_CHARS`]; they are broadcast to clients, so they are bounded.

use switchboard_common::{
    DomainError, RoomKey,
    room::{check_id, exceeds_chars},
    time_fmt,
};
use switchboard_proto::membership as pb;
use time::OffsetDateTime;

use crate::roles::{MAX_ROLE_LEN, Permission, Permissions};

fn bounded(field: &str, value: String, max: usize) -> Result<String, DomainError> {
    if value.is_empty() {
        return Err(DomainError::validation(format!("{field} is required")));
    }
    if exceeds_chars(&value, max) {
        return Err(DomainError::validation(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(value)
}

/// The longest first or last name.
pub const MAX_NAME_CHARS: usize = 256;
/// The longest room title.
pub const MAX_TITLE_CHARS: usize = 1_024;

/// An optional free-text field: at most `max` code points, without NUL.
fn text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, DomainError> {
    match value {
        Some(v) if exceeds_chars(&v, max) => Err(DomainError::validation(format!(
            "{field} is longer than {max} characters"
        ))),
        Some(v) if v.contains('\0') => Err(DomainError::validation(format!(
            "{field} must not contain NUL"
        ))),
        other => Ok(other),
    }
}

/// Validates an id (or username): see [`switchboard_common::room::check_id`].
pub fn id(field: &str, value: String) -> Result<String, DomainError> {
    check_id(field, &value)?;
    Ok(value)
}

/// Validates a membership role.
pub fn role(field: &str, value: String) -> Result<String, DomainError> {
    bounded(field, value, MAX_ROLE_LEN)
}

/// Validates an action name.
pub fn action(value: &str) -> Result<Permission, DomainError> {
    value
        .parse()
        .map_err(|_| DomainError::validation(format!("unknown action {value:?}")))
}

/// A user as the application describes it. `None` fields are kept on update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The application's own role for the user (not a membership role).
    pub role: Option<String>,
}

impl TryFrom<pb::User> for User {
    type Error = DomainError;
    fn try_from(u: pb::User) -> Result<Self, DomainError> {
        Ok(User {
            id: id("id", u.id)?,
            username: id("username", u.username)?,
            first_name: text("first_name", u.first_name, MAX_NAME_CHARS)?,
            last_name: text("last_name", u.last_name, MAX_NAME_CHARS)?,
            role: text("role", u.role, MAX_ROLE_LEN)?,
        })
    }
}

impl From<User> for pb::User {
    fn from(u: User) -> Self {
        pb::User {
            id: u.id,
            username: u.username,
            first_name: u.first_name,
            last_name: u.last_name,
            role: u.role,
        }
    }
}

/// An UpsertRoom request. `None` fields are kept on update (a room cannot be un-parented).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomUpsert {
    pub room: RoomKey,
    pub parent: Option<RoomKey>,
    pub title: Option<String>,
    pub room_type: Option<String>,
    /// Validated as an id when present.
    pub created_by: Option<String>,
}

impl TryFrom<pb::UpsertRoomRequest> for RoomUpsert {
    type Error = DomainError;
    fn try_from(r: pb::UpsertRoomRequest) -> Result<Self, DomainError> {
        Ok(RoomUpsert {
            room: RoomKey::required("room", r.room)?,
            parent: r
                .parent
                .map(|p| RoomKey::parse("parent", p.kind, p.id))
                .transpose()?,
            title: text("title", r.title, MAX_TITLE_CHARS)?,
            room_type: text("type", r.r#type, MAX_ROLE_LEN)?,
            created_by: r.created_by.map(|c| id("created_by", c)).transpose()?,
        })
    }
}

/// A stored room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub room: RoomKey,
    pub parent: Option<RoomKey>,
    pub title: Option<String>,
    pub room_type: Option<String>,
    pub created_by: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl From<Room> for pb::Room {
    fn from(r: Room) -> Self {
        pb::Room {
            room: Some(r.room.into()),
            parent: r.parent.map(Into::into),
            title: r.title,
            r#type: r.room_type,
            created_by: r.created_by,
            created_at_ms: time_fmt::to_ms(r.created_at),
            updated_at_ms: time_fmt::to_ms(r.updated_at),
        }
    }
}

/// A direct membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user_id: String,
    pub role: String,
    pub granted_at: OffsetDateTime,
}

impl From<Member> for pb::Member {
    fn from(m: Member) -> Self {
        pb::Member {
            user_id: m.user_id,
            role: m.role,
            granted_at_ms: time_fmt::to_ms(m.granted_at),
        }
    }
}

/// A GrantMember request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub room: RoomKey,
    pub user_id: String,
    pub role: String,
}

impl TryFrom<pb::GrantMemberRequest> for Grant {
    type Error = DomainError;
    fn try_from(r: pb::GrantMemberRequest) -> Result<Self, DomainError> {
        Ok(Grant {
            room: RoomKey::required("room", r.room)?,
            user_id: id("user_id", r.user_id)?,
            role: role("role", r.role)?,
        })
    }
}

/// A RevokeMember request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoke {
    pub room: RoomKey,
    pub user_id: String,
}

impl TryFrom<pb::RevokeMemberRequest> for Revoke {
    type Error = DomainError;
    fn try_from(r: pb::RevokeMemberRequest) -> Result<Self, DomainError> {
        Ok(Revoke {
            room: RoomKey::required("room", r.room)?,
            user_id: id("user_id", r.user_id)?,
        })
    }
}

/// The outcome of a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Revoked {
    pub removed: bool,
    /// The room itself first, then descendants by depth (then kind, id).
    pub lost_rooms: Vec<RoomKey>,
}

impl From<Revoked> for pb::RevokeMemberResponse {
    fn from(r: Revoked) -> Self {
        pb::RevokeMemberResponse {
            removed: r.removed,
            lost_rooms: r.lost_rooms.into_iter().map(Into::into).collect(),
        }
    }
}

/// An Authorize request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeQuery {
    pub user_id: String,
    pub room: RoomKey,
    pub action: Permission,
}

impl TryFrom<pb::AuthorizeRequest> for AuthorizeQuery {
    type Error = DomainError;
    fn try_from(r: pb::AuthorizeRequest) -> Result<Self, DomainError> {
        Ok(AuthorizeQuery {
            user_id: id("user_id", r.user_id)?,
            room: RoomKey::required("room", r.room)?,
            action: action(&r.action)?,
        })
    }
}

/// The memberships that matter for a decision, as read from the database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Standing {
    pub room_exists: bool,
    /// The user's roles on the room and its ancestors, nearest first.
    pub roles: Vec<String>,
    /// The user has a membership on the room itself.
    pub direct: bool,
}

/// An RBAC decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    pub room_exists: bool,
    pub allowed: bool,
    /// The nearest role; empty when the user holds none on the room or its ancestors.
    pub role: String,
    pub direct: bool,
    /// Everything the held roles grant in the room.
    pub granted: Permissions,
}

impl From<Decision> for pb::AuthorizeResponse {
    fn from(d: Decision) -> Self {
        pb::AuthorizeResponse {
            room_exists: d.room_exists,
            allowed: d.allowed,
            role: d.role,
            direct: d.direct,
            granted: d.granted.iter().map(|p| p.as_str().to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_common::ErrorCode;
    use switchboard_proto::common;

    fn rr(kind: &str, id: &str) -> common::RoomRef {
        common::RoomRef {
            kind: kind.into(),
            id: id.into(),
        }
    }

    #[test]
    fn free_text_is_bounded() {
        let user = |first: &str| pb::User {
            id: "u".into(),
            username: "u".into(),
            first_name: Some(first.into()),
            last_name: None,
            role: None,
        };
        assert!(User::try_from(user(&"é".repeat(MAX_NAME_CHARS))).is_ok());
        assert!(User::try_from(user(&"é".repeat(MAX_NAME_CHARS + 1))).is_err());
        assert!(User::try_from(user("a\0b")).is_err());
        let room = |title: String| pb::UpsertRoomRequest {
            room: Some(rr("chat", "c")),
            parent: None,
            title: Some(title),
            r#type: None,
            created_by: None,
        };
        assert!(RoomUpsert::try_from(room("t".repeat(MAX_TITLE_CHARS))).is_ok());
        assert!(RoomUpsert::try_from(room("t".repeat(1_900_000))).is_err());
    }

    #[test]
    fn room_refs_are_validated() {
        assert!(RoomKey::try_from(rr("study", "s1")).is_ok());
        for bad in [
            rr("team", "x"),
            rr("", "x"),
            rr("chat", ""),
            rr("chat", &"x".repeat(257)),
        ] {
            assert_eq!(
                RoomKey::try_from(bad).unwrap_err().code,
                ErrorCode::Validation
            );
        }
        assert!(
            RoomKey::try_from(rr("chat", &"é".repeat(256))).is_ok(),
            "characters, not bytes"
        );
    }

    #[test]
    fn grant_requires_room_and_role() {
        let ok = pb::GrantMemberRequest {
            room: Some(rr("chat", "c")),
            user_id: "u".into(),
            role: "member".into(),
        };
        assert!(Grant::try_from(ok.clone()).is_ok());
        for bad in [
            pb::GrantMemberRequest {
                room: None,
                ..ok.clone()
            },
            pb::GrantMemberRequest {
                role: String::new(),
                ..ok.clone()
            },
            pb::GrantMemberRequest {
                role: "r".repeat(65),
                ..ok.clone()
            },
            pb::GrantMemberRequest {
                user_id: String::new(),
                ..ok.clone()
            },
        ] {
            assert_eq!(
                Grant::try_from(bad).unwrap_err().code,
                ErrorCode::Validation
            );
        }
    }

    #[test]
    fn unknown_action_is_refused() {
        let req = pb::AuthorizeRequest {
            user_id: "u".into(),
            room: Some(rr("chat", "c")),
            action: "fly".into(),
        };
        assert_eq!(
            AuthorizeQuery::try_from(req).unwrap_err().code,
            ErrorCode::Validation
        );
    }
}
