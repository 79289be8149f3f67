//! The `tasks` dialect (contract 004, `/tasks`): JWT handshakes answered with `auth:success` or
//! `auth:failed` (then a disconnect), `project:<id>` and `study:<id>` rooms (a project's
//! membership grants its studies), `room:join` answered with `room:joined` (distinct users in
//! the room across the cluster) and the latest history, messages that need a prior join, edits
//! and soft deletes within 24 hours, forward-only read cursors, typing with names, and errors
//! as `error { message, code }` / `room:error`. Numeric ids are accepted as numbers or numeric
//! strings and rendered as numbers.

use std::{sync::Arc, time::Duration};

use serde_json::{Map, Value, json};
use switchboard_common::{DomainError, ErrorCode, RoomKey, time_fmt};

use super::{
    BoxFuture, Dialect, Emit, HandlerFuture, Reply, numeric_id, numeric_json, object, positive_id,
    string_field,
};
use crate::{
    auth::{AuthFailure, Credentials},
    core::{Core, CoreEvent, FileRef, Message, MessageEvent, RateRule, SendCommand, user_room},
    events::EventCx,
    fanout::Emission,
};

const PROJECT: &str = "project";
const STUDY: &str = "study";
const MAX_CONTENT_CHARS: usize = 10_000;
/// Messages in `message:history` after a join.
const HISTORY_ON_JOIN: u32 = 50;
/// How long after sending a message may be edited or deleted.
const EDIT_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// A typing start lasts this long without another.
const TYPING_TTL: Duration = Duration::from_secs(3);

pub(super) fn build() -> anyhow::Result<Arc<dyn Dialect>> {
    let rate = RateRule::from_env("tasks", 10, 60_000)?;
    Ok(Arc::new(Tasks(Arc::new(rate))))
}

struct Tasks(Arc<RateRule>);

/// This contract's `error` code for a domain error.
fn code(e: ErrorCode) -> &'static str {
    match e {
        ErrorCode::Validation | ErrorCode::Conflict | ErrorCode::PayloadTooLarge => {
            "VALIDATION_ERROR"
        }
        ErrorCode::NotJoined => "NOT_JOINED",
        ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::Forbidden => "FORBIDDEN",
        ErrorCode::NotFound => "NOT_FOUND",
        ErrorCode::RateLimited => "RATE_LIMITED",
        ErrorCode::EditWindowExpired => "EDIT_WINDOW_EXPIRED",
        ErrorCode::Unavailable | ErrorCode::Internal => "INTERNAL_ERROR",
    }
}

impl Dialect for Tasks {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn default_namespace(&self) -> &'static str {
        "/tasks"
    }

    fn room_kinds(&self) -> &'static [&'static str] {
        &[PROJECT, STUDY]
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            tokens: true,
            session_tokens: false,
            cookie: false,
            token_cookies: &[],
        }
    }

    fn refusal(&self, why: AuthFailure) -> &'static str {
        match why {
            AuthFailure::TooManyConnections => "RATE_LIMITED",
            _ => "UNAUTHORIZED",
        }
    }

    fn refusal_after_connect(&self, why: AuthFailure) -> Option<Emit> {
        let message = match why {
            AuthFailure::Missing => "Authentication token required",
            AuthFailure::Expired => "Token expired",
            AuthFailure::Unavailable => "Authentication unavailable, try again",
            AuthFailure::Invalid | AuthFailure::OriginNotAllowed => "Invalid token",
            AuthFailure::TooManyConnections => "Too many connections",
        };
        Some(Emit {
            event: "auth:failed",
            data: json!({ "message": message }),
        })
    }

    fn handle(&self, cx: EventCx, event: &str, data: Value) -> Option<HandlerFuture> {
        let handler: HandlerFuture = match event {
            "room:join" => Box::pin(room_join(cx, data)),
            "room:leave" => Box::pin(room_leave(cx, data)),
            "message:send" => Box::pin(message_send(cx, data, self.0.clone())),
            "message:edit" => Box::pin(message_change(cx, data, true)),
            "message:delete" => Box::pin(message_change(cx, data, false)),
            "message:read" => Box::pin(message_read(cx, data)),
            "typing:start" => Box::pin(typing(cx, data, true)),
            "typing:stop" => Box::pin(typing(cx, data, false)),
            _ => return None,
        };
        Some(handler)
    }

    fn error(&self, event: &str, e: &DomainError, correlation_id: &str) -> Reply {
        if event == "room:join" {
            // The room as far as it could be read travels ahead of the message (`room_error`).
            let (room_type, room_id, message) = match e.message.split_once('\u{1f}') {
                Some((room, message)) => {
                    let (t, id) = room.split_once('\u{1e}').unwrap_or((room, ""));
                    let or_null = |s: &str, f: fn(&str) -> Value| {
                        if s.is_empty() { Value::Null } else { f(s) }
                    };
                    (
                        or_null(t, |t| json!(t)),
                        or_null(id, numeric_json),
                        message.to_string(),
                    )
                }
                None => (Value::Null, Value::Null, e.message.clone()),
            };
            return Reply::emit(
                "room:error",
                json!({ "message": message, "roomType": room_type, "roomId": room_id }),
            );
        }
        Reply::emit(
            "error",
            json!({ "message": e.message, "code": code(e.code), "correlationId": correlation_id }),
        )
        .with_ack(json!({ "ok": false, "message": e.message, "code": code(e.code) }))
    }

    fn render<'a>(
        &'a self,
        core: &'a Core,
        namespace: &'a str,
        event: &'a CoreEvent<'a>,
    ) -> BoxFuture<'a, Vec<Emission>> {
        Box::pin(async move { render(core, namespace, event).await })
    }

    /// `auth:success { userId, userRole }`: the user's global role.
    fn connected<'a>(&'a self, core: &'a Core, user_id: &'a str) -> BoxFuture<'a, Vec<Emit>> {
        Box::pin(async move {
            let role = core.user(user_id).await.ok().and_then(|u| u.role);
            vec![Emit {
                event: "auth:success",
                data: json!({ "userId": numeric_json(user_id), "userRole": role }),
            }]
        })
    }
}

/// A user as the contract shows them.
async fn user_json(core: &Core, user_id: &str) -> Value {
    match core.user(user_id).await {
        Ok(u) => json!({
            "id": numeric_json(user_id),
            "username": u.username,
            "firstName": u.first_name,
            "lastName": u.last_name,
        }),
        Err(_) => {
            json!({ "id": numeric_json(user_id), "username": user_id, "firstName": null, "lastName": null })
        }
    }
}

/// Message, without relations.
fn message_fields(m: &Message) -> Map<String, Value> {
    let iso = |t: Option<i64>| t.map(time_fmt::iso_ms);
    let updated = [Some(m.created_at_ms), m.edited_at_ms, m.deleted_at_ms]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(m.created_at_ms);
    let v = json!({
        "id": m.id,
        "roomType": m.room.kind,
        "roomId": numeric_json(&m.room.id),
        "senderId": numeric_json(&m.sender_id),
        "type": m.kind,
        "content": m.content,
        "fileId": m.file_id,
        "fileName": m.file_name,
        "fileSize": m.file_size,
        "mimeType": m.mime_type,
        "replyToId": m.reply_to_id,
        "editedAt": iso(m.edited_at_ms),
        "deletedAt": iso(m.deleted_at_ms),
        "createdAt": time_fmt::iso_ms(m.created_at_ms),
        "updatedAt": time_fmt::iso_ms(updated),
    });
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// Message with its relations: `sender`, and `replyTo` when it replies to one.
async fn message_json(core: &Core, m: &Message) -> Value {
    let mut o = message_fields(m);
    o.insert("sender".into(), user_json(core, &m.sender_id).await);
    if let Some(parent) = m.reply_to_id
        && let Ok(p) = core.message(&m.room, parent).await
    {
        o.insert("replyTo".into(), Value::Object(message_fields(&p)));
    }
    Value::Object(o)
}

async fn render(core: &Core, ns: &str, event: &CoreEvent<'_>) -> Vec<Emission> {
    match *event {
        CoreEvent::Message { event, message, .. } => {
            let room = vec![message.room.socket_room()];
            let e = match event {
                MessageEvent::New => Emission::new(
                    ns,
                    room,
                    "message:new",
                    json!({ "message": message_json(core, message).await }),
                ),
                MessageEvent::Edited => Emission::new(
                    ns,
                    room,
                    "message:edited",
                    json!({ "message": message_json(core, message).await }),
                ),
                MessageEvent::Deleted => Emission::new(
                    ns,
                    room,
                    "message:deleted",
                    json!({
                        "messageId": message.id,
                        "roomType": message.room.kind,
                        "roomId": numeric_json(&message.room.id),
                    }),
                ),
            };
            vec![e]
        }
        CoreEvent::Receipt {
            room,
            user_id,
            message_id,
            read_at_ms,
        } if is_tasks_room(room) => vec![Emission::new(
            ns,
            vec![room.socket_room()],
            "message:read",
            json!({
                "messageId": message_id,
                "readBy": { "userId": numeric_json(user_id), "readAt": time_fmt::iso_ms(read_at_ms) },
            }),
        )],
        // To the room, the typing user's own sockets excluded.
        CoreEvent::Typing {
            room,
            user_id,
            typing,
            local,
        } if is_tasks_room(room) => {
            let data = if typing {
                let user = user_json(core, user_id).await;
                json!({
                    "roomType": room.kind,
                    "roomId": numeric_json(&room.id),
                    "user": { "id": user["id"], "firstName": user["firstName"], "lastName": user["lastName"] },
                })
            } else {
                json!({ "roomType": room.kind, "roomId": numeric_json(&room.id), "userId": numeric_json(user_id) })
            };
            let event = if typing {
                "typing:started"
            } else {
                "typing:stopped"
            };
            let mut e = Emission::new(ns, vec![room.socket_room()], event, data);
            e.except = vec![user_room(user_id)];
            e.local = local;
            vec![e]
        }
        _ => vec![],
    }
}

fn is_tasks_room(room: &RoomKey) -> bool {
    room.kind == PROJECT || room.kind == STUDY
}

fn message_id(o: &Map<String, Value>) -> Result<i64, DomainError> {
    positive_id(o.get("messageId"), "messageId")
}

/// A room named by `typeField`/`idField` (`type`/`id` in room events, `roomType`/`roomId` in
/// messages and typing).
fn room_of(
    o: &Map<String, Value>,
    type_field: &str,
    id_field: &str,
) -> Result<RoomKey, DomainError> {
    let kind = match o.get(type_field) {
        Some(Value::String(t)) if t == PROJECT || t == STUDY => t.clone(),
        _ => {
            return Err(DomainError::validation(format!(
                "{type_field} must be 'project' or 'study'"
            )));
        }
    };
    Ok(RoomKey::new(kind, numeric_id(o.get(id_field), id_field)?))
}

/// A `room:join` refusal carries the room's type and id as far as they could be read
/// (rendered by [`Tasks::error`] into `room:error`).
fn room_error(room_type: Option<&str>, room_id: Option<&str>, e: DomainError) -> DomainError {
    let message = match e.code {
        ErrorCode::Forbidden | ErrorCode::NotFound => "Access denied to this room".to_string(),
        _ => e.message,
    };
    let (t, id) = (room_type.unwrap_or(""), room_id.unwrap_or(""));
    DomainError::new(e.code, format!("{t}\u{1e}{id}\u{1f}{message}"))
}

async fn room_join(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let o = object(&v).map_err(|e| room_error(None, None, e))?;
    // Echo what can be read of the request, even when the rest is malformed.
    let room = room_of(o, "type", "id").map_err(|e| {
        let id = numeric_id(o.get("id"), "id").ok();
        room_error(o.get("type").and_then(Value::as_str), id.as_deref(), e)
    })?;
    cx.join(&room)
        .await
        .map_err(|e| room_error(Some(&room.kind), Some(&room.id), e))?;
    let core = cx.core();
    let member_count = core.users_in_room(&cx.namespace, &room).await.unwrap_or(1);
    let room_id = numeric_json(&room.id);
    let _ = cx.socket.emit(
        "room:joined",
        &json!({ "roomType": room.kind, "roomId": room_id, "memberCount": member_count }),
    );
    let page = core
        .history(Some(&cx.user), &room, None, None, HISTORY_ON_JOIN)
        .await?;
    // The page is newest first; the contract shows the oldest first.
    let next_cursor = page
        .has_more
        .then(|| page.messages.last().map(|m| m.id))
        .flatten();
    let mut messages = Vec::with_capacity(page.messages.len());
    for m in page.messages.iter().rev() {
        messages.push(message_json(core, m).await);
    }
    let mut history = json!({
        "messages": messages,
        "roomType": room.kind,
        "roomId": room_id,
        "hasMore": page.has_more,
    });
    if let Some(cursor) = next_cursor {
        history["nextCursor"] = json!(cursor);
    }
    Ok(Reply::emit("message:history", history).with_ack(json!({ "ok": true })))
}

async fn room_leave(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let room = room_of(object(&v)?, "type", "id")?;
    cx.leave(&room).await;
    Ok(Reply::emit(
        "room:left",
        json!({ "roomType": room.kind, "roomId": numeric_json(&room.id) }),
    ))
}

async fn message_send(cx: EventCx, v: Value, rate: Arc<RateRule>) -> Result<Reply, DomainError> {
    let o = object(&v)?;
    let room = room_of(o, "roomType", "roomId")?;
    let kind = match o.get("type") {
        None | Some(Value::Null) => "text",
        Some(Value::String(t)) if t == "text" || t == "image" || t == "file" => t.as_str(),
        _ => {
            return Err(DomainError::validation(
                "type must be 'text', 'image' or 'file'",
            ));
        }
    };
    // Image and file messages may have empty content (a caption is optional).
    let content = match o.get("content") {
        None | Some(Value::Null) if kind != "text" => String::new(),
        Some(Value::String(s)) if s.is_empty() && kind != "text" => String::new(),
        _ => string_field(o, "content", MAX_CONTENT_CHARS)?.to_string(),
    };
    let file_id = match (kind, o.get("fileId")) {
        ("text", _) => None,
        (_, None | Some(Value::Null)) => {
            return Err(DomainError::validation(
                "image and file messages need the fileId of an uploaded file",
            ));
        }
        (_, v) => Some(positive_id(v, "fileId")?),
    };
    let reply_to_id = match o.get("replyToId") {
        None | Some(Value::Null) => None,
        v => Some(positive_id(v, "replyToId")?),
    };
    cx.core().require_joined(&cx.socket, &room)?;
    // The file's name, size and type come from the stored file, which must be the sender's.
    let file = match file_id {
        Some(id) => {
            let f = cx.core().file(id).await.map_err(|e| match e.code {
                ErrorCode::NotFound => DomainError::not_found("File not found"),
                _ => e,
            })?;
            if f.uploader_id != *cx.user {
                return Err(DomainError::not_found("File not found"));
            }
            if kind == "image" && !crate::files::is_image(&f.mime_type, &f.file_name) {
                return Err(DomainError::validation(
                    "an image message needs an image file (jpg, png, gif, webp)",
                ));
            }
            Some(FileRef {
                id: f.id,
                name: f.file_name,
                size: f.file_size,
                mime_type: f.mime_type,
            })
        }
        None => None,
    };
    if let Some(parent) = reply_to_id {
        // A reply names a message of the same room.
        cx.core()
            .message(&room, parent)
            .await
            .map_err(|_| DomainError::not_found("The replied message is not in this room"))?;
    }
    let cmd = SendCommand {
        room,
        sender_id: cx.user.to_string(),
        kind: kind.to_string(),
        content,
        client_id: None,
        reply_to_id,
        origin: Some(cx.origin()),
        file,
    };
    let sent = cx.core().send(cmd, Some(&rate)).await?;
    Ok(Reply::ack(
        json!({ "ok": true, "message": message_json(cx.core(), &sent.message).await }),
    ))
}

/// The room of the message an event names, which the socket must have joined. A message the
/// user may not see is NOT_FOUND, whether it exists or not.
async fn joined_room_of(cx: &EventCx, message_id: i64) -> Result<RoomKey, DomainError> {
    let room = cx.core().locate(message_id).await?;
    if !is_tasks_room(&room) {
        return Err(DomainError::not_found("Message not found"));
    }
    if cx.core().require_joined(&cx.socket, &room).is_err() {
        return match cx
            .core()
            .require(&cx.user, &room, switchboard_common::Permission::Read)
            .await
        {
            Ok(()) => Err(DomainError::of(ErrorCode::NotJoined)),
            Err(_) => Err(DomainError::not_found("Message not found")),
        };
    }
    Ok(room)
}

async fn message_change(cx: EventCx, v: Value, edit: bool) -> Result<Reply, DomainError> {
    let o = object(&v)?;
    let id = message_id(o)?;
    let content = if edit {
        Some(string_field(o, "content", MAX_CONTENT_CHARS)?.to_string())
    } else {
        None
    };
    let room = joined_room_of(&cx, id).await?;
    cx.core()
        .edit(&room, id, &cx.user, content, EDIT_WINDOW.as_millis() as i64)
        .await?;
    Ok(Reply::ack(json!({ "ok": true })))
}

async fn message_read(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let id = message_id(object(&v)?)?;
    let room = joined_room_of(&cx, id).await?;
    let read = cx
        .core()
        .mark_read(&cx.namespace, &cx.user, &room, Some(id))
        .await?;
    Ok(Reply::ack(
        json!({ "ok": true, "readAt": time_fmt::iso_ms(read.read_at_ms) }),
    ))
}

async fn typing(cx: EventCx, v: Value, start: bool) -> Result<Reply, DomainError> {
    let room = room_of(object(&v)?, "roomType", "roomId")?;
    cx.core()
        .typing(&cx.namespace, &cx.user, &room, start, TYPING_TTL)
        .await
        .map_err(|e| {
            // A room that does not exist is not revealed.
            if e.code == ErrorCode::NotFound {
                DomainError::forbidden()
            } else {
                e
            }
        })?;
    Ok(Reply::ack(json!({ "ok": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code the README lists for this contract, from the core's errors.
    #[test]
    fn error_codes_as_documented() {
        for (core, contract) in [
            (ErrorCode::Validation, "VALIDATION_ERROR"),
            (ErrorCode::NotJoined, "NOT_JOINED"),
            (ErrorCode::Forbidden, "FORBIDDEN"),
            (ErrorCode::NotFound, "NOT_FOUND"),
            (ErrorCode::RateLimited, "RATE_LIMITED"),
            (ErrorCode::EditWindowExpired, "EDIT_WINDOW_EXPIRED"),
        ] {
            assert_eq!(code(core), contract);
        }
    }

    #[test]
    fn room_errors_echo_what_was_readable() {
        let dialect = Tasks(Arc::new(RateRule {
            name: "tasks",
            limit: 1,
            window_ms: 1,
        }));
        let e = room_error(
            Some("study"),
            None,
            DomainError::validation("id is required"),
        );
        let reply = dialect.error("room:join", &e, "trace");
        assert_eq!(reply.emits[0].event, "room:error");
        assert_eq!(
            reply.emits[0].data,
            json!({ "message": "id is required", "roomType": "study", "roomId": null })
        );
    }
}
