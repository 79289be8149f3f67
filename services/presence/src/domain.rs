//! Domain types and their conversion from / to the generated gRPC types. Validation happens
//! here, in the `TryFrom` conversions, so nothing invalid reaches Redis.
//!
//! Rules:
//! - identifiers (namespace, user, socket, node, room kind, room id) are non-empty, at most
//!   [`MAX_ID_CHARS`] characters, and contain no control character (the unit separator
//!   `\x1f` joins them in sorted-set members);
//! - `user_agent` and `ip` are informational: empty means absent, longer values are cut to
//!   [`MAX_ID_CHARS`] characters rather than rejected, control characters are rejected;
//! - `GetPresence` asks for at most [`MAX_USERS_PER_QUERY`] users (an empty list is answered
//!   with an empty list), `Refresh` takes any number of sockets;
//! - a typing `ttl_ms` is 0 (the configured default) or between 1 and [`MAX_TYPING_TTL_MS`];
//! - a socket's presence `ttl_ms` is 0 (the configured default) or between
//!   [`MIN_PRESENCE_TTL_MS`] and [`MAX_PRESENCE_TTL_MS`].

use switchboard_common::{
    DomainError,
    room::{MAX_ID_CHARS, exceeds_chars},
};
use switchboard_proto::presence as pb;

/// Bounds of a socket's own presence TTL.
pub const MIN_PRESENCE_TTL_MS: i64 = 100;
pub const MAX_PRESENCE_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// The most users one `GetPresence` may ask for.
pub const MAX_USERS_PER_QUERY: usize = 1_000;
/// The longest typing TTL a request may ask for (10 minutes).
pub const MAX_TYPING_TTL_MS: i64 = 600_000;

/// One socket of one user in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketKey {
    pub namespace: String,
    pub user_id: String,
    pub socket_id: String,
}

/// A socket that just connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSocket {
    pub key: SocketKey,
    pub node_id: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// `None`: the configured default.
    pub ttl_ms: Option<u64>,
    /// The most live sockets the user may have in the namespace, this one included (`None`: no
    /// cap); beyond it the socket is not added and the call answers `RATE_LIMITED`.
    pub max_user_sockets: Option<u32>,
}

/// Sockets whose presence to extend, by `ttl_ms` (`None`: the configured default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub sockets: Vec<SocketKey>,
    pub ttl_ms: Option<u64>,
}

/// A presence TTL from a request: 0 is the default.
fn presence_ttl(ttl_ms: i64) -> Result<Option<u64>, DomainError> {
    match ttl_ms {
        0 => Ok(None),
        t if (MIN_PRESENCE_TTL_MS..=MAX_PRESENCE_TTL_MS).contains(&t) => Ok(Some(t as u64)),
        _ => Err(DomainError::validation(format!(
            "ttl_ms must be 0 (default) or between {MIN_PRESENCE_TTL_MS} and {MAX_PRESENCE_TTL_MS}"
        ))),
    }
}

impl TryFrom<pb::RefreshRequest> for Refresh {
    type Error = DomainError;
    fn try_from(r: pb::RefreshRequest) -> Result<Self, Self::Error> {
        Ok(Refresh {
            sockets: r
                .sockets
                .into_iter()
                .map(SocketKey::try_from)
                .collect::<Result<_, _>>()?,
            ttl_ms: presence_ttl(r.ttl_ms)?,
        })
    }
}

/// Which users' presence to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceQuery {
    pub namespace: String,
    pub user_ids: Vec<String>,
}

/// A live socket as `GetPresence` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketInfo {
    pub socket_id: String,
    pub connected_at_ms: i64,
    pub last_seen_ms: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// One user's presence in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub user_id: String,
    pub online: bool,
    pub last_seen_ms: Option<i64>,
    pub sockets: Vec<SocketInfo>,
}

/// A typing start or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingChange {
    pub namespace: String,
    pub room_kind: String,
    pub room_id: String,
    pub user_id: String,
    pub typing: bool,
    /// `None`: the configured default.
    pub ttl_ms: Option<u64>,
}

fn id(field: &str, value: String) -> Result<String, DomainError> {
    if value.is_empty() {
        return Err(DomainError::validation(format!(
            "{field} must not be empty"
        )));
    }
    if exceeds_chars(&value, MAX_ID_CHARS) {
        return Err(DomainError::validation(format!(
            "{field} must be at most {MAX_ID_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::validation(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(value)
}

fn info(field: &str, value: Option<String>) -> Result<Option<String>, DomainError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.chars().any(char::is_control) => Err(DomainError::validation(format!(
            "{field} must not contain control characters"
        ))),
        Some(v) => Ok(Some(v.chars().take(MAX_ID_CHARS).collect())),
    }
}

impl TryFrom<Option<pb::SocketRef>> for SocketKey {
    type Error = DomainError;
    fn try_from(s: Option<pb::SocketRef>) -> Result<Self, Self::Error> {
        let s = s.ok_or_else(|| DomainError::validation("socket is required"))?;
        s.try_into()
    }
}

impl TryFrom<pb::SocketRef> for SocketKey {
    type Error = DomainError;
    fn try_from(s: pb::SocketRef) -> Result<Self, Self::Error> {
        Ok(SocketKey {
            namespace: id("namespace", s.namespace)?,
            user_id: id("user_id", s.user_id)?,
            socket_id: id("socket_id", s.socket_id)?,
        })
    }
}

impl TryFrom<pb::AddSocketRequest> for NewSocket {
    type Error = DomainError;
    fn try_from(r: pb::AddSocketRequest) -> Result<Self, Self::Error> {
        Ok(NewSocket {
            key: r.socket.try_into()?,
            node_id: id("node_id", r.node_id)?,
            user_agent: info("user_agent", r.user_agent)?,
            ip: info("ip", r.ip)?,
            ttl_ms: presence_ttl(r.ttl_ms)?,
            max_user_sockets: (r.max_user_sockets > 0).then_some(r.max_user_sockets),
        })
    }
}

impl TryFrom<pb::GetPresenceRequest> for PresenceQuery {
    type Error = DomainError;
    fn try_from(r: pb::GetPresenceRequest) -> Result<Self, Self::Error> {
        if r.user_ids.len() > MAX_USERS_PER_QUERY {
            return Err(DomainError::validation(format!(
                "at most {MAX_USERS_PER_QUERY} user_ids per request"
            )));
        }
        Ok(PresenceQuery {
            namespace: id("namespace", r.namespace)?,
            user_ids: r
                .user_ids
                .into_iter()
                .map(|u| id("user_ids", u))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TypingChange {
    /// A start or stop, validated as the `Typing` call validates it (`ttl_ms` left to the
    /// writer).
    pub fn new(
        namespace: &str,
        room_kind: &str,
        room_id: &str,
        user_id: &str,
        typing: bool,
    ) -> Result<TypingChange, DomainError> {
        Ok(TypingChange {
            namespace: id("namespace", namespace.to_string())?,
            room_kind: id("room_kind", room_kind.to_string())?,
            room_id: id("room_id", room_id.to_string())?,
            user_id: id("user_id", user_id.to_string())?,
            typing,
            ttl_ms: None,
        })
    }
}

impl TryFrom<pb::TypingRequest> for TypingChange {
    type Error = DomainError;
    fn try_from(r: pb::TypingRequest) -> Result<Self, Self::Error> {
        let ttl_ms = match r.ttl_ms {
            0 => None,
            t if (1..=MAX_TYPING_TTL_MS).contains(&t) => Some(t as u64),
            _ => {
                return Err(DomainError::validation(format!(
                    "ttl_ms must be 0 (default) or between 1 and {MAX_TYPING_TTL_MS}"
                )));
            }
        };
        Ok(TypingChange {
            namespace: id("namespace", r.namespace)?,
            room_kind: id("room_kind", r.room_kind)?,
            room_id: id("room_id", r.room_id)?,
            user_id: id("user_id", r.user_id)?,
            typing: r.typing,
            ttl_ms,
        })
    }
}

impl From<SocketInfo> for pb::SocketInfo {
    fn from(s: SocketInfo) -> Self {
        pb::SocketInfo {
            socket_id: s.socket_id,
            connected_at_ms: s.connected_at_ms,
            last_seen_ms: s.last_seen_ms,
            user_agent: s.user_agent,
            ip: s.ip,
        }
    }
}

impl From<UserPresence> for pb::UserPresence {
    fn from(u: UserPresence) -> Self {
        pb::UserPresence {
            user_id: u.user_id,
            online: u.online,
            last_seen_ms: u.last_seen_ms,
            sockets: u.sockets.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_common::ErrorCode;

    fn sref(ns: &str, uid: &str, sid: &str) -> pb::SocketRef {
        pb::SocketRef {
            namespace: ns.into(),
            user_id: uid.into(),
            socket_id: sid.into(),
        }
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(SocketKey::try_from(sref("/", "u", "s")).is_ok());
        for bad in [
            sref("", "u", "s"),
            sref("/", "u\x1fx", "s"),
            sref("/", "u", &"s".repeat(257)),
        ] {
            assert_eq!(
                SocketKey::try_from(bad).unwrap_err().code,
                ErrorCode::Validation
            );
        }
        assert!(SocketKey::try_from(sref("/", "u", &"é".repeat(256))).is_ok());
        assert!(SocketKey::try_from(None).is_err());
    }

    #[test]
    fn info_is_cut_not_rejected() {
        let r = pb::AddSocketRequest {
            socket: Some(sref("/", "u", "s")),
            node_id: "n".into(),
            user_agent: Some("a".repeat(1000)),
            ip: Some(String::new()),
            ttl_ms: 0,
            max_user_sockets: 0,
        };
        let s = NewSocket::try_from(r).unwrap();
        assert_eq!(s.user_agent.unwrap().len(), MAX_ID_CHARS);
        assert_eq!(s.ip, None);
    }

    #[test]
    fn typing_ttl_bounds() {
        let req = |ttl_ms| pb::TypingRequest {
            namespace: "/".into(),
            room_kind: "channel".into(),
            room_id: "r".into(),
            user_id: "u".into(),
            typing: true,
            ttl_ms,
        };
        assert_eq!(TypingChange::try_from(req(0)).unwrap().ttl_ms, None);
        assert_eq!(TypingChange::try_from(req(5)).unwrap().ttl_ms, Some(5));
        assert!(TypingChange::try_from(req(-1)).is_err());
        assert!(TypingChange::try_from(req(MAX_TYPING_TTL_MS + 1)).is_err());
    }
}
