//! The `chat` dialect (contract 002): rooms `user:<id>` and `chat:<id>`, acknowledgements
//! `{ ok, data? }` / `{ ok: false, error, message, correlationId }`, and the two user routes the
//! document tells clients to call (`routes`).

mod routes;

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use switchboard_common::{
    DomainError, ErrorCode, RoomKey,
    room::{MAX_CLIENT_ID_CHARS, MAX_ID_CHARS},
    time_fmt,
};

use super::{BoxFuture, Dialect, HandlerFuture, Reply, object, string_field};
use crate::{
    auth::{AuthFailure, Credentials},
    core::{Core, CoreEvent, Message, MessageEvent, RateRule, RoomInfo, SendCommand, user_room},
    events::EventCx,
    fanout::Emission,
};

const ROOM_KIND: &str = "chat";
const MAX_BODY_CHARS: usize = 8000;

/// `SWITCHBOARD_CHAT_*` settings.
#[derive(Debug)]
struct Settings {
    rate: RateRule,
    typing_ttl: Duration,
}

pub(super) fn build() -> anyhow::Result<Arc<dyn Dialect>> {
    let rate = RateRule::from_env("chat", 10, 10_000)?;
    let typing_ttl = Duration::from_millis(switchboard_common::config::env_or(
        "CHAT_TYPING_TTL_MS",
        3_000,
    )?);
    Ok(Arc::new(Chat(Arc::new(Settings { rate, typing_ttl }))))
}

struct Chat(Arc<Settings>);

fn chat_room(chat_id: &str) -> String {
    RoomKey::new(ROOM_KIND, chat_id).socket_room()
}

/// This contract's `error` code for a domain error.
fn code(e: ErrorCode) -> &'static str {
    match e {
        ErrorCode::Validation
        | ErrorCode::Conflict
        | ErrorCode::PayloadTooLarge
        | ErrorCode::NotJoined => "VALIDATION_ERROR",
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => "UNAUTHORIZED",
        ErrorCode::Forbidden | ErrorCode::EditWindowExpired => "FORBIDDEN",
        ErrorCode::NotFound => "NOT_FOUND",
        ErrorCode::RateLimited => "RATE_LIMITED",
        ErrorCode::Unavailable | ErrorCode::Internal => "INTERNAL",
    }
}

/// A message in `message:new`'s shape (also the `/v1/chats/{id}/messages` items).
fn message_json(m: &Message) -> Value {
    let mut v = json!({
        "chatId": m.room.id,
        "_id": m.id.to_string(),
        "body": m.content,
        "senderId": m.sender_id,
        "createdAt": time_fmt::iso_ms(m.created_at_ms),
    });
    if let Some(c) = &m.client_id {
        v["clientId"] = json!(c);
    }
    if let Some(t) = m.edited_at_ms {
        v["editedAt"] = json!(time_fmt::iso_ms(t));
    }
    if let Some(t) = m.deleted_at_ms {
        v["deletedAt"] = json!(time_fmt::iso_ms(t));
    }
    v
}

/// `chat:update`'s `chat` object.
fn chat_json(room: &RoomInfo) -> Value {
    json!({
        "_id": room.room.id,
        "type": room.kind_type.clone().unwrap_or_else(|| "group".to_string()),
        "title": room.title,
        "memberIds": room.members.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>(),
        "createdBy": room.creator(),
        "createdAt": time_fmt::iso_ms(room.created_at_ms),
        "updatedAt": time_fmt::iso_ms(room.updated_at_ms),
    })
}

impl Dialect for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn default_namespace(&self) -> &'static str {
        "/"
    }

    fn room_kinds(&self) -> &'static [&'static str] {
        &[ROOM_KIND]
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            tokens: true,
            session_tokens: true,
            cookie: true,
            token_cookies: &[],
        }
    }

    fn refusal(&self, why: AuthFailure) -> &'static str {
        match why {
            // The contract's rate-limit code: the credentials were fine.
            AuthFailure::TooManyConnections => "RATE_LIMITED",
            _ => "UNAUTHORIZED",
        }
    }

    fn handle(&self, cx: EventCx, event: &str, data: Value) -> Option<HandlerFuture> {
        let settings = self.0.clone();
        let handler: HandlerFuture = match event {
            "room:join" => Box::pin(room_join(cx, data)),
            "room:leave" => Box::pin(room_leave(cx, data)),
            "message:send" => Box::pin(message_send(cx, data, settings)),
            "typing:start" => Box::pin(typing(cx, data, true, settings)),
            "typing:stop" => Box::pin(typing(cx, data, false, settings)),
            "receipt:read" => Box::pin(receipt_read(cx, data)),
            "presence:ping" => Box::pin(presence_ping(cx)),
            _ => return None,
        };
        Some(handler)
    }

    fn error(&self, _event: &str, e: &DomainError, correlation_id: &str) -> Reply {
        Reply::ack(json!({
            "ok": false,
            "error": code(e.code),
            "message": e.message,
            "correlationId": correlation_id,
        }))
    }

    fn render<'a>(
        &'a self,
        core: &'a Core,
        namespace: &'a str,
        event: &'a CoreEvent<'a>,
    ) -> BoxFuture<'a, Vec<Emission>> {
        Box::pin(async move { render(core, namespace, event).await })
    }

    fn routes(&self) -> Option<axum::Router<Arc<crate::Gateway>>> {
        Some(routes::routes())
    }
}

async fn render(core: &Core, ns: &str, event: &CoreEvent<'_>) -> Vec<Emission> {
    match *event {
        // Only new messages have an event in this contract.
        CoreEvent::Message {
            event: MessageEvent::New,
            message,
            ..
        } => vec![Emission::new(
            ns,
            vec![chat_room(&message.room.id)],
            "message:new",
            message_json(message),
        )],
        // To the chat room and every member's (and a removed member's) user room: one emit to
        // all of them, so each socket receives it once.
        CoreEvent::RoomChanged { room, removed } => {
            let mut rooms = vec![chat_room(&room.room.id)];
            rooms.extend(room.members.iter().map(|m| user_room(&m.user_id)));
            rooms.extend(removed.map(user_room));
            vec![Emission::new(
                ns,
                rooms,
                "chat:update",
                json!({ "chat": chat_json(room) }),
            )]
        }
        // To this node's sockets of the user's contacts.
        CoreEvent::Presence {
            user_id,
            online,
            at_ms,
        } => {
            let contacts = match core.contacts(user_id).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "presence not delivered: contacts unavailable");
                    return vec![];
                }
            };
            let data = json!({
                "userId": user_id,
                "status": if online { "online" } else { "offline" },
                "timestamp": time_fmt::iso_ms(at_ms),
            });
            let mut e = Emission::new(
                ns,
                contacts.iter().map(user_room).collect(),
                "presence:update",
                data,
            );
            e.local = true;
            vec![e]
        }
        // A read cursor moved: to the chat room, the reader's other sockets included.
        CoreEvent::Receipt {
            room,
            user_id,
            message_id,
            read_at_ms,
        } if room.kind == ROOM_KIND => {
            let data = json!({
                "chatId": room.id,
                "messageId": message_id.to_string(),
                "userId": user_id,
                "readAt": time_fmt::iso_ms(read_at_ms),
            });
            vec![Emission::new(
                ns,
                vec![chat_room(&room.id)],
                "receipt:update",
                data,
            )]
        }
        // To the room, the typing user's own sockets excluded.
        CoreEvent::Typing {
            room,
            user_id,
            typing,
            local,
        } if room.kind == ROOM_KIND => {
            let data = json!({ "chatId": room.id, "userId": user_id, "state": if typing { "start" } else { "stop" } });
            let mut e = Emission::new(ns, vec![chat_room(&room.id)], "typing:update", data);
            e.except = vec![user_room(user_id)];
            e.local = local;
            vec![e]
        }
        _ => vec![],
    }
}

fn ok(data: Option<Value>) -> Reply {
    Reply::ack(match data {
        None => json!({ "ok": true }),
        Some(data) => json!({ "ok": true, "data": data }),
    })
}

fn chat_key(v: &Value) -> Result<RoomKey, DomainError> {
    let id = string_field(object(v)?, "chatId", MAX_ID_CHARS)?;
    Ok(RoomKey::new(ROOM_KIND, id))
}

async fn room_join(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    cx.join(&chat_key(&v)?).await?;
    Ok(ok(None))
}

async fn room_leave(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    cx.leave(&chat_key(&v)?).await;
    Ok(ok(None))
}

async fn message_send(
    cx: EventCx,
    v: Value,
    settings: Arc<Settings>,
) -> Result<Reply, DomainError> {
    let o = object(&v)?;
    let chat = string_field(o, "chatId", MAX_ID_CHARS)?;
    let body = string_field(o, "body", MAX_BODY_CHARS)?;
    let client_id = string_field(o, "clientId", MAX_CLIENT_ID_CHARS)?.to_string();
    let cmd = SendCommand {
        room: RoomKey::new(ROOM_KIND, chat),
        sender_id: cx.user.to_string(),
        kind: "text".to_string(),
        content: body.to_string(),
        client_id: Some(client_id.clone()),
        reply_to_id: None,
        origin: Some(cx.origin()),
        file: None,
    };
    let sent = cx.core().send(cmd, Some(&settings.rate)).await?;
    Ok(ok(Some(
        json!({ "clientId": client_id, "serverId": sent.message.id.to_string() }),
    )))
}

async fn typing(
    cx: EventCx,
    v: Value,
    start: bool,
    settings: Arc<Settings>,
) -> Result<Reply, DomainError> {
    let room = chat_key(&v)?;
    // Fire-and-forget: refusals and failures are silent for the client, as the contract asks.
    if let Err(e) = cx
        .core()
        .typing(&cx.namespace, &cx.user, &room, start, settings.typing_ttl)
        .await
    {
        tracing::debug!(error = %e, "typing not delivered");
    }
    Ok(ok(None))
}

async fn receipt_read(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let o = object(&v)?;
    let chat = string_field(o, "chatId", MAX_ID_CHARS)?;
    // A string that is not a message id names no message of the chat: NOT_FOUND (after
    // the membership check, so existence is not revealed to non-members).
    let message_id = match o.get("messageId") {
        Some(Value::String(s)) if !s.is_empty() => s.parse::<i64>().ok().filter(|id| *id > 0),
        Some(Value::String(_)) => {
            return Err(DomainError::validation("messageId must not be empty"));
        }
        Some(_) => return Err(DomainError::validation("messageId must be a string")),
        None => return Err(DomainError::validation("messageId is required")),
    };
    let room = RoomKey::new(ROOM_KIND, chat);
    let read = cx
        .core()
        .mark_read(&cx.namespace, &cx.user, &room, message_id)
        .await?;
    Ok(ok(Some(
        json!({ "readAt": time_fmt::iso_ms(read.read_at_ms) }),
    )))
}

async fn presence_ping(cx: EventCx) -> Result<Reply, DomainError> {
    cx.gw.refresh_presence_of(&cx.socket).await;
    Ok(ok(Some(
        json!({ "serverTime": time_fmt::iso_ms(time_fmt::now_ms()) }),
    )))
}
