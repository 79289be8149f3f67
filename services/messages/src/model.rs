//! Domain types and their conversions from and to the generated gRPC types. Validation of
//! request shapes happens here (`TryFrom`); the content-length limit, which is configuration,
//! is applied with [`check_content`].

use switchboard_common::{
    DomainError, RoomKey,
    room::{check_client_id, check_id},
    time_fmt::to_ms,
};
use switchboard_proto::{common::RoomRef, messages as pb};
use time::OffsetDateTime;

/// Longest file name or MIME type, in Unicode code points.
pub const MAX_FILE_TEXT_CHARS: usize = 1024;
/// Default and largest `History` page.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
pub const HISTORY_MAX_LIMIT: u32 = 100;
/// Default and largest `ClaimUndelivered` batch.
pub const CLAIM_DEFAULT_LIMIT: u32 = 100;
pub const CLAIM_MAX_LIMIT: u32 = 1000;
/// Default `ClaimUndelivered` lease.
pub const CLAIM_DEFAULT_LEASE_MS: i64 = 10_000;
/// Most ids in one `ListReceipts` filter or one `MarkDelivered` call.
pub const MAX_IDS_PER_CALL: usize = 1000;

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn check_message_id(what: &str, id: i64) -> Result<(), DomainError> {
    if id <= 0 {
        return Err(DomainError::validation(format!(
            "{what} must be a positive id"
        )));
    }
    Ok(())
}

/// Content of a `text` message or of an edit: non-empty, at most `max_chars` code points.
pub fn check_text_content(content: &str, max_chars: usize) -> Result<(), DomainError> {
    if content.is_empty() {
        return Err(DomainError::validation("content is required"));
    }
    check_content(content, max_chars)
}

/// Any content: at most `max_chars` Unicode code points, without NUL (Postgres refuses NUL
/// in text: refused here it is a validation error, not a failed write).
pub fn check_content(content: &str, max_chars: usize) -> Result<(), DomainError> {
    if chars(content) > max_chars {
        return Err(DomainError::validation(format!(
            "content is longer than {max_chars} characters"
        )));
    }
    if content.contains('\0') {
        return Err(DomainError::validation("content must not contain NUL"));
    }
    Ok(())
}

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Text,
    Image,
    File,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Text => "text",
            MessageType::Image => "image",
            MessageType::File => "file",
        }
    }
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        match s {
            "text" => Ok(MessageType::Text),
            "image" => Ok(MessageType::Image),
            "file" => Ok(MessageType::File),
            _ => Err(DomainError::validation(
                "type must be one of text, image, file",
            )),
        }
    }
}

/// The file an `image` or `file` message carries. Every field is optional: the service stores
/// what the gateway resolved. `file_id`, when given, must name a row of `files`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileFields {
    pub file_id: Option<i64>,
    pub file_name: Option<String>,
    pub file_size: Option<i64>,
    pub mime_type: Option<String>,
}

impl FileFields {
    fn is_empty(&self) -> bool {
        self.file_id.is_none()
            && self.file_name.is_none()
            && self.file_size.is_none()
            && self.mime_type.is_none()
    }
}

/// A validated `Send`.
///
/// Rules: room as [`RoomKey`] and sender as an id (non-empty, ≤ 256 code points); type `text`, `image`
/// or `file`; a `text` message needs non-empty content; `client_id`, when present, is 1–128
/// code points; `reply_to_id`, when present, is positive; file fields are refused on `text`
/// messages (`file_id` positive, `file_size` not negative, name and MIME type ≤ 1024 code
/// points). The content-length limit is configuration and is checked by [`NewMessage::check`].
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room: RoomKey,
    pub sender_id: String,
    pub kind: MessageType,
    pub content: String,
    pub client_id: Option<String>,
    pub reply_to_id: Option<i64>,
    pub file: FileFields,
}

impl TryFrom<pb::SendRequest> for NewMessage {
    type Error = DomainError;
    fn try_from(r: pb::SendRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        check_id("sender_id", &r.sender_id)?;
        let kind = MessageType::parse(&r.r#type)?;
        if kind == MessageType::Text && r.content.is_empty() {
            return Err(DomainError::validation("content is required"));
        }
        if let Some(c) = &r.client_id {
            check_client_id(c)?;
        }
        if let Some(id) = r.reply_to_id {
            check_message_id("reply_to_id", id)?;
        }
        let file = FileFields {
            file_id: r.file_id,
            file_name: r.file_name,
            file_size: r.file_size,
            mime_type: r.mime_type,
        };
        if kind == MessageType::Text && !file.is_empty() {
            return Err(DomainError::validation(
                "file fields are only allowed on image and file messages",
            ));
        }
        if let Some(id) = file.file_id {
            check_message_id("file_id", id)?;
        }
        if file.file_size.is_some_and(|s| s < 0) {
            return Err(DomainError::validation("file_size must not be negative"));
        }
        for (what, v) in [
            ("file_name", &file.file_name),
            ("mime_type", &file.mime_type),
        ] {
            if v.as_deref().is_some_and(|v| chars(v) > MAX_FILE_TEXT_CHARS) {
                return Err(DomainError::validation(format!(
                    "{what} is longer than {MAX_FILE_TEXT_CHARS} characters"
                )));
            }
        }
        Ok(NewMessage {
            room,
            sender_id: r.sender_id,
            kind,
            content: r.content,
            client_id: r.client_id,
            reply_to_id: r.reply_to_id,
            file,
        })
    }
}

impl NewMessage {
    /// The configured content limit.
    pub fn check(&self, max_content_chars: usize) -> Result<(), DomainError> {
        check_content(&self.content, max_content_chars)
    }
}

/// Who changes a message, and under which rules: the data the gateway decided (RBAC) and the
/// dialect's edit window (0: none).
#[derive(Debug, Clone)]
pub struct Actor {
    pub actor_id: String,
    pub may_moderate: bool,
    pub edit_window_ms: i64,
}

impl Actor {
    fn new(actor_id: String, may_moderate: bool, edit_window_ms: i64) -> Result<Self, DomainError> {
        check_id("actor_id", &actor_id)?;
        if edit_window_ms < 0 {
            return Err(DomainError::validation(
                "edit_window_ms must not be negative",
            ));
        }
        Ok(Actor {
            actor_id,
            may_moderate,
            edit_window_ms,
        })
    }
}

/// A validated `Edit` (content is checked against the limit by [`MessageEdit::check`]).
#[derive(Debug, Clone)]
pub struct MessageEdit {
    pub room: RoomKey,
    pub message_id: i64,
    pub content: String,
    pub actor: Actor,
}

impl TryFrom<pb::EditRequest> for MessageEdit {
    type Error = DomainError;
    fn try_from(r: pb::EditRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        check_message_id("message_id", r.message_id)?;
        if r.content.is_empty() {
            return Err(DomainError::validation("content is required"));
        }
        let actor = Actor::new(r.actor_id, r.actor_may_moderate, r.edit_window_ms)?;
        Ok(MessageEdit {
            room,
            message_id: r.message_id,
            content: r.content,
            actor,
        })
    }
}

impl MessageEdit {
    /// Edited content follows the rules of `text` content.
    pub fn check(&self, max_content_chars: usize) -> Result<(), DomainError> {
        check_text_content(&self.content, max_content_chars)
    }
}

/// A validated `Delete`.
#[derive(Debug, Clone)]
pub struct MessageDelete {
    pub room: RoomKey,
    pub message_id: i64,
    pub actor: Actor,
}

impl TryFrom<pb::DeleteRequest> for MessageDelete {
    type Error = DomainError;
    fn try_from(r: pb::DeleteRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        check_message_id("message_id", r.message_id)?;
        let actor = Actor::new(r.actor_id, r.actor_may_moderate, r.edit_window_ms)?;
        Ok(MessageDelete {
            room,
            message_id: r.message_id,
            actor,
        })
    }
}

/// A validated `Get`.
#[derive(Debug, Clone)]
pub struct MessageGet {
    pub room: RoomKey,
    pub message_id: i64,
}

impl TryFrom<pb::GetMessageRequest> for MessageGet {
    type Error = DomainError;
    fn try_from(r: pb::GetMessageRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        check_message_id("message_id", r.message_id)?;
        Ok(MessageGet {
            room,
            message_id: r.message_id,
        })
    }
}

/// A validated `MarkRead`.
#[derive(Debug, Clone)]
pub struct MarkRead {
    pub room: RoomKey,
    pub user_id: String,
    pub message_id: i64,
}

impl TryFrom<pb::MarkReadRequest> for MarkRead {
    type Error = DomainError;
    fn try_from(r: pb::MarkReadRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        check_id("user_id", &r.user_id)?;
        check_message_id("message_id", r.message_id)?;
        Ok(MarkRead {
            room,
            user_id: r.user_id,
            message_id: r.message_id,
        })
    }
}

/// A read cursor after `MarkRead`, or one row of `ListReceipts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub user_id: String,
    pub message_id: i64,
    pub read_at: OffsetDateTime,
}

/// Which page of a room's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPage {
    /// The newest messages, newest first.
    Latest,
    /// Messages with `id < before`, newest first.
    Before(i64),
    /// Messages with `id > after`, oldest first.
    After(i64),
}

/// A validated `History`: `limit` 0 means 50, otherwise 1..=100; `before` and `after` exclude
/// each other.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub room: RoomKey,
    pub page: HistoryPage,
    pub limit: u32,
}

impl TryFrom<pb::HistoryRequest> for HistoryQuery {
    type Error = DomainError;
    fn try_from(r: pb::HistoryRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        let limit = match r.limit {
            0 => HISTORY_DEFAULT_LIMIT,
            n if n <= HISTORY_MAX_LIMIT => n,
            _ => {
                return Err(DomainError::validation(format!(
                    "limit must be between 1 and {HISTORY_MAX_LIMIT}"
                )));
            }
        };
        let page = match (r.before, r.after) {
            (Some(_), Some(_)) => {
                return Err(DomainError::validation(
                    "before and after exclude each other",
                ));
            }
            (Some(b), None) => HistoryPage::Before(b),
            (None, Some(a)) => HistoryPage::After(a),
            (None, None) => HistoryPage::Latest,
        };
        Ok(HistoryQuery { room, page, limit })
    }
}

/// A validated `ListReceipts`: an empty `user_ids` means every user of the room.
#[derive(Debug, Clone)]
pub struct ReceiptsQuery {
    pub room: RoomKey,
    pub user_ids: Vec<String>,
}

impl TryFrom<pb::ListReceiptsRequest> for ReceiptsQuery {
    type Error = DomainError;
    fn try_from(r: pb::ListReceiptsRequest) -> Result<Self, DomainError> {
        let room = RoomKey::required("room", r.room)?;
        if r.user_ids.len() > MAX_IDS_PER_CALL {
            return Err(DomainError::validation(format!(
                "at most {MAX_IDS_PER_CALL} user_ids"
            )));
        }
        for u in &r.user_ids {
            check_id("user_id", u)?;
        }
        Ok(ReceiptsQuery {
            room,
            user_ids: r.user_ids,
        })
    }
}

/// A validated `ClaimUndelivered`: `limit` 0 means 100, at most 1000; `lease_ms` 0 means
/// 10 000; neither time may be negative.
#[derive(Debug, Clone)]
pub struct Claim {
    pub older_than_ms: i64,
    pub limit: u32,
    pub lease_ms: i64,
}

impl TryFrom<pb::ClaimUndeliveredRequest> for Claim {
    type Error = DomainError;
    fn try_from(r: pb::ClaimUndeliveredRequest) -> Result<Self, DomainError> {
        if r.older_than_ms < 0 {
            return Err(DomainError::validation(
                "older_than_ms must not be negative",
            ));
        }
        let limit = match r.limit {
            0 => CLAIM_DEFAULT_LIMIT,
            n if n <= CLAIM_MAX_LIMIT => n,
            _ => {
                return Err(DomainError::validation(format!(
                    "limit must be at most {CLAIM_MAX_LIMIT}"
                )));
            }
        };
        let lease_ms = match r.lease_ms {
            0 => CLAIM_DEFAULT_LEASE_MS,
            n if n > 0 => n,
            _ => return Err(DomainError::validation("lease_ms must not be negative")),
        };
        Ok(Claim {
            older_than_ms: r.older_than_ms,
            limit,
            lease_ms,
        })
    }
}

/// A validated `MarkDelivered`.
pub fn delivered_ids(r: pb::MarkDeliveredRequest) -> Result<Vec<i64>, DomainError> {
    if r.outbox_ids.len() > MAX_IDS_PER_CALL {
        return Err(DomainError::validation(format!(
            "at most {MAX_IDS_PER_CALL} outbox_ids"
        )));
    }
    Ok(r.outbox_ids)
}

/// A stored message, as read from `messages`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredMessage {
    pub id: i64,
    pub room_kind: String,
    pub room_id: String,
    pub seq: i64,
    pub sender_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub content: String,
    pub file_id: Option<i64>,
    pub file_name: Option<String>,
    pub file_size: Option<i64>,
    pub mime_type: Option<String>,
    pub reply_to_id: Option<i64>,
    pub client_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub edited_at: Option<OffsetDateTime>,
    pub deleted_at: Option<OffsetDateTime>,
}

impl StoredMessage {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// On the wire a deleted message is a tombstone: empty content and no file fields. Deleted
/// content stays in the table but is never served.
impl From<StoredMessage> for pb::Message {
    fn from(m: StoredMessage) -> Self {
        let deleted = m.is_deleted();
        let keep = |v| if deleted { None } else { v };
        pb::Message {
            id: m.id,
            room: Some(RoomRef {
                kind: m.room_kind,
                id: m.room_id,
            }),
            seq: m.seq,
            sender_id: m.sender_id,
            r#type: m.kind,
            content: if deleted { String::new() } else { m.content },
            file_id: keep(m.file_id),
            file_name: if deleted { None } else { m.file_name },
            file_size: keep(m.file_size),
            mime_type: if deleted { None } else { m.mime_type },
            reply_to_id: m.reply_to_id,
            client_id: m.client_id,
            created_at_ms: to_ms(m.created_at),
            edited_at_ms: m.edited_at.map(to_ms),
            deleted_at_ms: m.deleted_at.map(to_ms),
        }
    }
}

/// The outcome of `Send`.
#[derive(Debug, Clone)]
pub struct Sent {
    pub message: StoredMessage,
    /// False for an idempotent repeat.
    pub created: bool,
    /// The outbox entry to confirm after broadcasting; 0 when not created.
    pub outbox_id: i64,
}

/// One claimed outbox entry.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub outbox_id: i64,
    pub event: String,
    pub message: StoredMessage,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(kind: &str, content: &str) -> pb::SendRequest {
        pb::SendRequest {
            room: Some(RoomRef {
                kind: "chat".into(),
                id: "r".into(),
            }),
            sender_id: "u".into(),
            r#type: kind.into(),
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn content_is_counted_in_code_points() {
        assert!(check_content("ééé", 3).is_ok());
        assert!(check_content("éééé", 3).is_err());
        assert!(check_content("a\0b", 10).is_err(), "NUL is refused");
    }

    #[test]
    fn file_fields_only_on_files() {
        let mut r = send("text", "hi");
        r.file_name = Some("a.png".into());
        assert!(NewMessage::try_from(r.clone()).is_err());
        r.r#type = "image".into();
        assert!(NewMessage::try_from(r).is_ok());
        assert!(NewMessage::try_from(send("file", "")).is_ok());
    }

    #[test]
    fn missing_room_is_refused() {
        let mut r = send("text", "hi");
        r.room = None;
        assert!(NewMessage::try_from(r).is_err());
    }
}
