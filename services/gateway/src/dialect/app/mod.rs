//! The `app` dialect (contract 001, `/ws/app`): JWT handshakes refused with
//! `socket_error:unauthorized` / `socket_error:token_expired`, the personal room and
//! `notifications:ready`, `conversations:join|leave` with acknowledgements, `messages:new|
//! updated|deleted` to the conversation room and every participant's user room, presence
//! snapshots to the whole namespace, the inbound payload cap and `system:disconnect`.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use switchboard_common::{DomainError, ErrorCode, RoomKey, room::MAX_ID_CHARS, time_fmt};
use switchboard_proto::presence as pp;

use super::{BoxFuture, Dialect, Emit, HandlerFuture, Reply, object, string_field};
use crate::{
    auth::{AuthFailure, Credentials},
    core::{Core, CoreEvent, Message, MessageEvent, user_room},
    events::EventCx,
    fanout::Emission,
};

const ROOM_KIND: &str = "conversation";
/// The document's default `maxHttpBufferSize`: 5 KB.
const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 5_120;
/// The document's default presence TTL.
const DEFAULT_PRESENCE_TTL_SECONDS: u64 = 60;

/// A positive number from a variable the document names (not `SWITCHBOARD_`-prefixed, so an
/// existing deployment's setting carries over).
fn document_var(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow::anyhow!("{name}={v:?}: expected a positive number")),
        _ => Ok(default),
    }
}

pub(super) fn build() -> anyhow::Result<Arc<dyn Dialect>> {
    Ok(Arc::new(App {
        cap: document_var("SOCKET_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES)? as usize,
        presence_ttl: Duration::from_secs(document_var(
            "PRESENCE_TTL_SECONDS",
            DEFAULT_PRESENCE_TTL_SECONDS,
        )?),
        heartbeats: Arc::default(),
    }))
}

struct App {
    cap: usize,
    presence_ttl: Duration,
    heartbeats: Arc<HeartbeatLimiter>,
}

/// At most one heartbeat snapshot per user per [`HEARTBEAT_BROADCAST_EVERY`] from this node:
/// each one is a namespace-wide broadcast, so unthrottled heartbeats would let one client make
/// every socket of the namespace busy. Heartbeats inside the interval still refresh presence.
const HEARTBEAT_BROADCAST_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
struct HeartbeatLimiter(std::sync::Mutex<std::collections::HashMap<Arc<str>, std::time::Instant>>);

impl HeartbeatLimiter {
    /// Whether `user` may broadcast now (and, if so, remembers it did).
    fn admit(&self, user: &Arc<str>) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() > 10_000 {
            last.retain(|_, at| now.duration_since(*at) < HEARTBEAT_BROADCAST_EVERY);
        }
        match last.get(user) {
            Some(at) if now.duration_since(*at) < HEARTBEAT_BROADCAST_EVERY => false,
            _ => {
                last.insert(user.clone(), now);
                true
            }
        }
    }
}

/// MessageDTO.
fn message_dto(m: &Message) -> Value {
    let updated = [Some(m.created_at_ms), m.edited_at_ms, m.deleted_at_ms]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(m.created_at_ms);
    json!({
        "id": m.id.to_string(),
        "conversationId": m.room.id,
        "senderId": m.sender_id,
        "body": m.content,
        "status": if m.deleted_at_ms.is_some() { "deleted" } else { "sent" },
        "createdAt": time_fmt::iso_ms(m.created_at_ms),
        "updatedAt": time_fmt::iso_ms(updated),
        "editedAt": m.edited_at_ms.map(time_fmt::iso_ms),
        "deletedAt": m.deleted_at_ms.map(time_fmt::iso_ms),
    })
}

/// PresenceSnapshot. `ip` stays null: the operator has not turned address reporting on.
fn presence_snapshot(p: &pp::UserPresence) -> Value {
    json!({
        "userId": p.user_id,
        "isOnline": p.online,
        "lastSeen": p.last_seen_ms,
        "sockets": p.sockets.iter().map(|s| json!({
            "socketId": s.socket_id,
            "connectedAt": s.connected_at_ms,
            "lastSeen": s.last_seen_ms,
            "userAgent": s.user_agent,
            "ip": Value::Null,
        })).collect::<Vec<_>>(),
    })
}

impl Dialect for App {
    fn name(&self) -> &'static str {
        "app"
    }

    fn default_namespace(&self) -> &'static str {
        "/ws/app"
    }

    fn room_kinds(&self) -> &'static [&'static str] {
        &[ROOM_KIND]
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
            AuthFailure::Expired => "socket_error:token_expired",
            // The document's codes are open (`| string`); this one names the limit.
            AuthFailure::TooManyConnections => "socket_error:rate_limited",
            _ => "socket_error:unauthorized",
        }
    }

    fn inbound_cap(&self) -> Option<usize> {
        Some(self.cap)
    }

    fn presence_ttl(&self) -> Option<Duration> {
        Some(self.presence_ttl)
    }

    fn connected<'a>(&'a self, _core: &'a Core, user_id: &'a str) -> BoxFuture<'a, Vec<Emit>> {
        let ready = Emit {
            event: "notifications:ready",
            data: json!({ "message": "Notifications ready", "userId": user_id }),
        };
        Box::pin(async move { vec![ready] })
    }

    fn handle(&self, cx: EventCx, event: &str, data: Value) -> Option<HandlerFuture> {
        let handler: HandlerFuture = match event {
            "conversations:join" => Box::pin(conversation_join(cx, data)),
            "conversations:leave" => Box::pin(conversation_leave(cx, data)),
            "presence:heartbeat" => Box::pin(heartbeat(cx, self.heartbeats.clone())),
            _ => return None,
        };
        Some(handler)
    }

    fn error(&self, event: &str, e: &DomainError, correlation_id: &str) -> Reply {
        if e.code == ErrorCode::PayloadTooLarge {
            return Reply::emit(
                "error",
                json!({ "code": "socket_error:payload_too_large", "message": e.message }),
            );
        }
        let body = json!({
            "success": false,
            "code": e.code.name(),
            "message": e.message,
            "correlationId": correlation_id,
        });
        if event.starts_with("conversations:") {
            Reply::ack(body)
        } else {
            Reply::emit(
                "error",
                json!({ "code": e.code.name(), "message": e.message, "correlationId": correlation_id }),
            )
        }
    }

    fn render<'a>(
        &'a self,
        core: &'a Core,
        namespace: &'a str,
        event: &'a CoreEvent<'a>,
    ) -> BoxFuture<'a, Vec<Emission>> {
        Box::pin(async move { render(core, namespace, event).await })
    }

    fn disconnect_notice(&self, reason: &str) -> Option<Emit> {
        Some(Emit {
            event: "system:disconnect",
            data: json!({ "reason": reason }),
        })
    }
}

async fn render(core: &Core, ns: &str, event: &CoreEvent<'_>) -> Vec<Emission> {
    match *event {
        // To the conversation room and every participant's user room, in one emit: each socket
        // receives it once.
        CoreEvent::Message { event, message, .. } => {
            let name = match event {
                MessageEvent::New => "messages:new",
                MessageEvent::Edited => "messages:updated",
                MessageEvent::Deleted => "messages:deleted",
            };
            let participants = match core.room(&message.room).await {
                Ok(info) => info
                    .members
                    .into_iter()
                    .map(|m| m.user_id)
                    .collect::<Vec<_>>(),
                Err(e) => {
                    // Still reaches the conversation room.
                    tracing::warn!(error = %e, "participants unavailable");
                    vec![]
                }
            };
            let mut rooms = vec![message.room.socket_room()];
            rooms.extend(participants.iter().map(|p| user_room(p)));
            let data = json!({
                "conversationId": message.room.id,
                "message": message_dto(message),
                "senderId": message.sender_id,
                "recipients": participants,
            });
            vec![Emission::new(ns, rooms, name, data)]
        }
        // Every node delivers transitions to its own sockets: the whole namespace, once each.
        CoreEvent::Presence { user_id, .. } => snapshot(core, ns, user_id, true).await,
        CoreEvent::PresenceHeartbeat { user_id } => snapshot(core, ns, user_id, false).await,
        _ => vec![],
    }
}

/// `presence:update` with the user's current snapshot, to every socket of the namespace.
async fn snapshot(core: &Core, ns: &str, user_id: &str, local: bool) -> Vec<Emission> {
    let presence = match core.presence_of(ns, vec![user_id.to_string()]).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "presence snapshot unavailable");
            return vec![];
        }
    };
    let Some(p) = presence.iter().find(|p| p.user_id == user_id) else {
        return vec![];
    };
    let mut e = Emission::new(ns, vec![], "presence:update", presence_snapshot(p));
    e.everyone = true;
    e.local = local;
    vec![e]
}

fn conversation(v: &Value) -> Result<RoomKey, DomainError> {
    let id = string_field(object(v)?, "conversationId", MAX_ID_CHARS)?;
    Ok(RoomKey::new(ROOM_KIND, id))
}

async fn conversation_join(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let room = conversation(&v)?;
    cx.join(&room).await?;
    Ok(Reply::ack(
        json!({ "success": true, "conversationId": room.id }),
    ))
}

async fn conversation_leave(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let room = conversation(&v)?;
    cx.leave(&room).await;
    Ok(Reply::ack(
        json!({ "success": true, "conversationId": room.id }),
    ))
}

/// The payload is ignored: refreshes the socket's presence and announces the user's snapshot.
async fn heartbeat(cx: EventCx, limiter: Arc<HeartbeatLimiter>) -> Result<Reply, DomainError> {
    cx.gw.refresh_presence_of(&cx.socket).await;
    if limiter.admit(&cx.user) {
        let event = CoreEvent::PresenceHeartbeat { user_id: &cx.user };
        cx.core().publish(Some(&cx.namespace), event).await;
    }
    Ok(Reply::ack(json!({ "success": true })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_broadcasts_are_limited_per_user() {
        let limiter = HeartbeatLimiter::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert!(limiter.admit(&a));
        assert!(!limiter.admit(&a), "a second one within the interval");
        assert!(limiter.admit(&b), "another user is not held back");
    }

    #[test]
    fn message_dto_has_the_decided_fields() {
        let m = Message {
            id: 7,
            room: RoomKey::new(ROOM_KIND, "c1"),
            seq: 1,
            sender_id: "u1".into(),
            kind: "text".into(),
            content: "hi".into(),
            file_id: None,
            file_name: None,
            file_size: None,
            mime_type: None,
            reply_to_id: None,
            client_id: None,
            created_at_ms: 1_000,
            edited_at_ms: Some(2_000),
            deleted_at_ms: None,
        };
        let dto = message_dto(&m);
        let mut keys: Vec<_> = dto.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "body",
                "conversationId",
                "createdAt",
                "deletedAt",
                "editedAt",
                "id",
                "senderId",
                "status",
                "updatedAt"
            ]
        );
        assert_eq!(dto["id"], "7");
        assert_eq!(dto["status"], "sent");
        assert_eq!(dto["updatedAt"], dto["editedAt"]);
        assert_eq!(dto["deletedAt"], Value::Null);
    }
}
