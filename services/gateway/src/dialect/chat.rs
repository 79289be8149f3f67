//! The `chat` dialect (contract 002): rooms `user:<id>` and `chat:<id>`, acknowledgements
//! `{ ok, data? }` / `{ ok: false, error, message, correlationId }`.

use std::{future::Future, pin::Pin, sync::Arc};

use serde_json::{Value, json};
use socketioxide::{
    ParserError,
    extract::{AckSender, Event, SocketRef, TryData},
};
use switchboard_common::{DomainError, ErrorCode, telemetry, time_fmt};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{object, string_field};
use crate::{
    Gateway,
    core::{Message, MessageEvent, RateRule, RoomInfo, RoomKey, SendCommand, user_room},
    fanout::{Adapter, Emission},
};

pub const ROOM_KIND: &str = "chat";
const MAX_BODY_CHARS: usize = 8000;
const MAX_CLIENT_ID_CHARS: usize = 128;
const MAX_ID_CHARS: usize = 256;

/// Renders core events in the contract's shapes.
#[derive(Debug, Clone)]
pub struct ChatRender {
    pub namespace: String,
}

fn chat_room(chat_id: &str) -> String {
    format!("{ROOM_KIND}:{chat_id}")
}

/// A message in `message:new`'s shape (also the `/v1/chats/{id}/messages` items).
pub fn message_json(m: &Message) -> Value {
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
pub fn chat_json(room: &RoomInfo) -> Value {
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

impl ChatRender {
    fn emission(&self, rooms: Vec<String>, event: &'static str, data: Value) -> Emission {
        Emission {
            namespace: self.namespace.clone(),
            rooms,
            except: vec![],
            event,
            data,
            local: false,
        }
    }

    /// Only new messages have an event in this contract.
    pub fn message(&self, event: MessageEvent, m: &Message) -> Option<Emission> {
        (m.room.kind == ROOM_KIND && event == MessageEvent::New)
            .then(|| self.emission(vec![chat_room(&m.room.id)], "message:new", message_json(m)))
    }

    /// To the chat room and every member's (and a removed member's) user room: one emit to
    /// all of them, so each socket receives it once.
    pub fn room_changed(&self, room: &RoomInfo, removed: Option<&str>) -> Option<Emission> {
        if room.room.kind != ROOM_KIND {
            return None;
        }
        let mut rooms = vec![chat_room(&room.room.id)];
        rooms.extend(room.members.iter().map(|m| user_room(&m.user_id)));
        rooms.extend(removed.map(user_room));
        Some(self.emission(rooms, "chat:update", json!({ "chat": chat_json(room) })))
    }

    pub fn presence(
        &self,
        user_id: &str,
        online: bool,
        at_ms: i64,
        contacts: &[String],
    ) -> Emission {
        let data = json!({
            "userId": user_id,
            "status": if online { "online" } else { "offline" },
            "timestamp": time_fmt::iso_ms(at_ms),
        });
        let mut e = self.emission(
            contacts.iter().map(|c| user_room(c)).collect(),
            "presence:update",
            data,
        );
        e.local = true;
        e
    }

    /// A read cursor moved: to the chat room, the reader's other sockets included.
    pub fn receipt(
        &self,
        room: &RoomKey,
        user_id: &str,
        message_id: i64,
        read_at_ms: i64,
    ) -> Option<Emission> {
        if room.kind != ROOM_KIND {
            return None;
        }
        let data = json!({
            "chatId": room.id,
            "messageId": message_id.to_string(),
            "userId": user_id,
            "readAt": time_fmt::iso_ms(read_at_ms),
        });
        Some(self.emission(vec![chat_room(&room.id)], "receipt:update", data))
    }

    /// To the room, the typing user's own sockets excluded.
    pub fn typing(
        &self,
        room: &RoomKey,
        user_id: &str,
        typing: bool,
        local: bool,
    ) -> Option<Emission> {
        if room.kind != ROOM_KIND {
            return None;
        }
        let data = json!({ "chatId": room.id, "userId": user_id, "state": if typing { "start" } else { "stop" } });
        let mut e = self.emission(vec![chat_room(&room.id)], "typing:update", data);
        e.except = vec![user_room(user_id)];
        e.local = local;
        Some(e)
    }
}

/// An acknowledgement: `{ ok: true, data? }` or the contract's error shape.
/// Errors are logged here, where they are handled, with the same `correlationId` the client
/// sees, so an operator can find the request from a user's report.
fn ack_json(result: Result<Option<Value>, DomainError>) -> Value {
    match result {
        Ok(None) => json!({ "ok": true }),
        Ok(Some(data)) => json!({ "ok": true, "data": data }),
        Err(e) => {
            let correlation_id = telemetry::current_trace_id();
            tracing::info!(code = e.code.name(), message = %e.message, %correlation_id, "event refused");
            json!({
                "ok": false,
                "error": e.code.chat_code(),
                "message": e.message,
                "correlationId": correlation_id,
            })
        }
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Option<Value>, DomainError>> + Send>>;
/// A handler gets the socket's user, fixed at the handshake (never from a payload).
type Handler = fn(Arc<Gateway>, SocketRef<Adapter>, Arc<str>, Value) -> HandlerFuture;

/// The contract's events and their handlers.
const EVENTS: [(&str, Handler); 7] = [
    ("room:join", room_join),
    ("room:leave", room_leave),
    ("message:send", message_send),
    ("typing:start", typing_start),
    ("typing:stop", typing_stop),
    ("receipt:read", receipt_read),
    ("presence:ping", presence_ping),
];

/// Registers the contract's events on a socket authenticated as `user_id`: one handler for all
/// of them (socketioxide boxes every handler of every socket and keeps a map of them per
/// socket, which costs idle sockets memory). Events outside the contract get no answer, as
/// events without a handler never did.
///
/// A socket's events are handled one after the other, in the order they arrived (socketioxide
/// runs each handler as its own task): a `typing:stop` never overtakes its `typing:start`, and
/// two sends from one socket are stored in the order they were sent.
pub fn register(gw: &Arc<Gateway>, s: &SocketRef<Adapter>, user_id: &str) {
    let user: Arc<str> = Arc::from(user_id);
    let gw = gw.clone();
    let in_order = Arc::new(InOrder::default());
    s.on_fallback(
        move |s: SocketRef<Adapter>,
              Event(name): Event,
              TryData(data): TryData<Value>,
              ack: AckSender<Adapter>| {
            let gw = gw.clone();
            let user = user.clone();
            // Taken here, synchronously, as the event arrives: the turn follows arrival order.
            let (previous, done) = in_order.turn();
            async move {
                if let Some(previous) = previous {
                    // Err = the previous event's handler finished (or its task ended).
                    let _ = previous.await;
                }
                if let Some(&(event, handler)) = EVENTS.iter().find(|(e, _)| *e == name) {
                    handle(gw, s, user, event, handler, data, ack).await;
                }
                drop(done);
            }
        },
    );
}

/// Turns for one socket's events: each waits for the one before it to finish.
#[derive(Default)]
struct InOrder(std::sync::Mutex<Option<oneshot::Receiver<()>>>);

impl InOrder {
    /// The previous event's completion to wait for, and this event's (dropped when done).
    fn turn(&self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, finished) = oneshot::channel();
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(finished);
        (previous, done)
    }
}

/// Runs `handler` for `event` in its own span (whose trace id is the `correlationId`), and
/// answers the acknowledgement when the client asked for one.
async fn handle(
    gw: Arc<Gateway>,
    s: SocketRef<Adapter>,
    user: Arc<str>,
    event: &'static str,
    handler: Handler,
    data: Result<Value, ParserError>,
    ack: AckSender<Adapter>,
) {
    let namespace = &gw.config.chat_namespace;
    gw.metrics.event_in(namespace, event);
    let span = tracing::info_span!("socket.event", namespace = %namespace, event, user_id = %user, socket_id = %s.id);
    async move {
        let result = match data {
            Ok(v) => handler(gw.clone(), s, user, v).await,
            Err(_) => Err(DomainError::validation("Invalid payload")),
        };
        if let Err(e) = &result {
            gw.metrics.error(e.code.name());
        }
        // A client that passed no callback simply gets nothing.
        let _ = ack.send(&ack_json(result));
    }
    .instrument(span)
    .await
}

fn chat_id(v: &Value) -> Result<String, DomainError> {
    Ok(string_field(object(v)?, "chatId", MAX_ID_CHARS)?.to_string())
}

fn room_join(gw: Arc<Gateway>, s: SocketRef<Adapter>, user: Arc<str>, v: Value) -> HandlerFuture {
    Box::pin(async move {
        let chat = chat_id(&v)?;
        let room = RoomKey::new(ROOM_KIND, chat);
        gw.core
            .require(&user, &room, crate::core::Action::Join)
            .await?;
        let name = room.socket_room();
        let rooms = s.rooms();
        if !rooms.iter().any(|r| r == &name) {
            if rooms.len() >= gw.config.max_rooms_per_socket {
                return Err(DomainError::validation("Too many rooms joined"));
            }
            s.join(name);
        }
        Ok(None)
    })
}

fn room_leave(
    _gw: Arc<Gateway>,
    s: SocketRef<Adapter>,
    _user: Arc<str>,
    v: Value,
) -> HandlerFuture {
    Box::pin(async move {
        let chat = chat_id(&v)?;
        s.leave(chat_room(&chat));
        Ok(None)
    })
}

fn message_send(
    gw: Arc<Gateway>,
    _s: SocketRef<Adapter>,
    user: Arc<str>,
    v: Value,
) -> HandlerFuture {
    Box::pin(async move {
        let o = object(&v)?;
        let chat = string_field(o, "chatId", MAX_ID_CHARS)?.to_string();
        let body = string_field(o, "body", MAX_BODY_CHARS)?.to_string();
        let client_id = string_field(o, "clientId", MAX_CLIENT_ID_CHARS)?.to_string();
        let rule = RateRule {
            name: "chat",
            limit: gw.config.chat_rate_limit,
            window_ms: gw.config.chat_rate_window.as_millis() as u64,
        };
        let cmd = SendCommand {
            room: RoomKey::new(ROOM_KIND, chat),
            sender_id: user.to_string(),
            kind: "text".to_string(),
            content: body,
            client_id: Some(client_id.clone()),
            reply_to_id: None,
        };
        let sent = gw.core.send(cmd, Some(&rule)).await.map_err(|e| {
            if e.code == ErrorCode::RateLimited {
                DomainError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "Maximum {} messages per {} seconds",
                        rule.limit,
                        (rule.window_ms as f64 / 1000.0).round() as u64
                    ),
                )
            } else {
                e
            }
        })?;
        Ok(Some(
            json!({ "clientId": client_id, "serverId": sent.message.id.to_string() }),
        ))
    })
}

fn typing_start(
    gw: Arc<Gateway>,
    s: SocketRef<Adapter>,
    user: Arc<str>,
    v: Value,
) -> HandlerFuture {
    typing(gw, s, user, v, true)
}

fn typing_stop(gw: Arc<Gateway>, s: SocketRef<Adapter>, user: Arc<str>, v: Value) -> HandlerFuture {
    typing(gw, s, user, v, false)
}

fn typing(
    gw: Arc<Gateway>,
    _s: SocketRef<Adapter>,
    user: Arc<str>,
    v: Value,
    start: bool,
) -> HandlerFuture {
    Box::pin(async move {
        let chat = chat_id(&v)?;
        let room = RoomKey::new(ROOM_KIND, chat);
        let ns = gw.config.chat_namespace.clone();
        let ttl = gw.config.chat_typing_ttl.as_millis() as i64;
        // Fire-and-forget: failures are silent for the client (logged by the core).
        match gw.core.typing(&ns, &user, &room, start, ttl).await {
            Ok(true) => {
                gw.core.fanout.typing(&ns, &room, &user, start, false).await;
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "typing not delivered"),
        }
        Ok(None)
    })
}

fn receipt_read(
    gw: Arc<Gateway>,
    _s: SocketRef<Adapter>,
    user: Arc<str>,
    v: Value,
) -> HandlerFuture {
    Box::pin(async move {
        let o = object(&v)?;
        let chat = string_field(o, "chatId", MAX_ID_CHARS)?.to_string();
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
        let room = RoomKey::new(ROOM_KIND, chat.clone());
        let read = gw.core.mark_read(&user, &room, message_id).await?;
        let read_at = time_fmt::iso_ms(read.read_at_ms);
        if read.moved {
            let ns = &gw.config.chat_namespace;
            gw.core
                .fanout
                .receipt(ns, &room, &user, read.message_id, read.read_at_ms)
                .await;
        }
        Ok(Some(json!({ "readAt": read_at })))
    })
}

fn presence_ping(
    gw: Arc<Gateway>,
    s: SocketRef<Adapter>,
    _user: Arc<str>,
    _v: Value,
) -> HandlerFuture {
    Box::pin(async move {
        gw.refresh_presence_of(&s).await;
        Ok(Some(
            json!({ "serverTime": time_fmt::iso_ms(time_fmt::now_ms()) }),
        ))
    })
}
