//! The one definition of a room key, of the room kinds and of the limits on application ids and
//! `clientId`s, shared by the gateway and the services. Lengths count Unicode code points
//! (the contracts' rule), never bytes.

use std::fmt;

use switchboard_proto::common::RoomRef;

use crate::DomainError;

/// The longest id an application may choose (users, rooms, `createdBy`), and the longest username.
pub const MAX_ID_CHARS: usize = 256;

/// The longest `clientId` (idempotency key) a client may send.
pub const MAX_CLIENT_ID_CHARS: usize = 128;

/// The room kinds Switchboard knows. A dialect's rooms are some of these.
pub const ROOM_KINDS: [&str; 7] = [
    "server",
    "channel",
    "conversation",
    "chat",
    "vault",
    "project",
    "study",
];

/// True when `s` has more than `max` code points (without counting past `max`).
pub fn exceeds_chars(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}

/// A non-empty id of at most [`MAX_ID_CHARS`] code points, without NUL (Postgres refuses NUL
/// in text; refusing it here keeps it a validation error instead of a database failure).
pub fn check_id(what: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() {
        return Err(DomainError::validation(format!("{what} is required")));
    }
    if exceeds_chars(id, MAX_ID_CHARS) {
        return Err(DomainError::validation(format!(
            "{what} is longer than {MAX_ID_CHARS} characters"
        )));
    }
    if id.contains('\0') {
        return Err(DomainError::validation(format!(
            "{what} must not contain NUL"
        )));
    }
    Ok(())
}

/// A `clientId`: 1 to [`MAX_CLIENT_ID_CHARS`] code points.
pub fn check_client_id(client_id: &str) -> Result<(), DomainError> {
    if client_id.is_empty() || exceeds_chars(client_id, MAX_CLIENT_ID_CHARS) {
        return Err(DomainError::validation(format!(
            "clientId must be 1-{MAX_CLIENT_ID_CHARS} characters"
        )));
    }
    Ok(())
}

/// A room: one of [`ROOM_KINDS`] and the application's id for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoomKey {
    pub kind: String,
    pub id: String,
}

impl RoomKey {
    /// A validated key; `field` names it in the error (`room`, `parent`).
    pub fn parse(
        field: &str,
        kind: impl Into<String>,
        id: impl Into<String>,
    ) -> Result<Self, DomainError> {
        let (kind, id) = (kind.into(), id.into());
        if !ROOM_KINDS.contains(&kind.as_str()) {
            return Err(DomainError::validation(format!(
                "{field}.kind must be one of {}",
                ROOM_KINDS.join(", ")
            )));
        }
        check_id(&format!("{field}.id"), &id)?;
        Ok(RoomKey { kind, id })
    }

    /// A key the caller already knows to be valid (a dialect's own kind, an id it checked).
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
        }
    }

    /// The Socket.IO room of this room, the same in every dialect: `<kind>:<id>`.
    pub fn socket_room(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }

    pub fn to_proto(&self) -> RoomRef {
        RoomRef {
            kind: self.kind.clone(),
            id: self.id.clone(),
        }
    }

    /// A required `RoomRef` from a request, validated.
    pub fn required(field: &str, r: Option<RoomRef>) -> Result<Self, DomainError> {
        match r {
            Some(r) => Self::parse(field, r.kind, r.id),
            None => Err(DomainError::validation(format!("{field} is required"))),
        }
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

impl TryFrom<RoomRef> for RoomKey {
    type Error = DomainError;
    fn try_from(r: RoomRef) -> Result<Self, DomainError> {
        Self::parse("room", r.kind, r.id)
    }
}

impl From<RoomKey> for RoomRef {
    fn from(k: RoomKey) -> Self {
        RoomRef {
            kind: k.kind,
            id: k.id,
        }
    }
}

/// The personal room of a user: every socket of the user joins it at the handshake.
pub fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_counted_in_code_points() {
        assert!(check_id("id", &"é".repeat(MAX_ID_CHARS)).is_ok());
        assert!(check_id("id", &"é".repeat(MAX_ID_CHARS + 1)).is_err());
        assert!(check_id("id", "").is_err());
        assert!(check_id("id", "a\0b").is_err());
    }

    #[test]
    fn client_ids_are_bounded() {
        assert!(check_client_id(&"x".repeat(MAX_CLIENT_ID_CHARS)).is_ok());
        assert!(check_client_id(&"x".repeat(MAX_CLIENT_ID_CHARS + 1)).is_err());
        assert!(check_client_id("").is_err());
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert!(RoomKey::parse("room", "chat", "a").is_ok());
        assert!(RoomKey::parse("room", "lobby", "a").is_err());
        assert!(RoomKey::parse("room", "chat", "").is_err());
    }
}
