//! The `guild` dialect (contract 000, `/guild`): the `connect.sid` session cookie (refused with
//! `E_UNAUTHORIZED`), `server:<id>` and `channel:<id>` rooms where a channel's server grants it,
//! numeric ids (accepted as numbers or numeric strings, rendered as numbers), typing, messages
//! to the channel without the sending socket, the server's online members, member join/leave
//! announcements, and errors as `error:permission`, `error:not_found`, `error:validation`.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use switchboard_common::{DomainError, ErrorCode, Permission, RoomKey, time_fmt};

use super::{
    BoxFuture, Dialect, HandlerFuture, Reply, numeric_id, numeric_json, object, string_field,
};
use crate::{
    auth::{AuthFailure, Credentials},
    core::{Core, CoreEvent, Message, MessageEvent, RateRule, SendCommand, user_room},
    events::EventCx,
    fanout::Emission,
};

const SERVER: &str = "server";
const CHANNEL: &str = "channel";
const MAX_CONTENT_CHARS: usize = 4_000;
/// A typing start lasts this long without another (the contract: 3 s after the last start).
const TYPING_TTL: Duration = Duration::from_secs(3);

pub(super) fn build() -> anyhow::Result<Arc<dyn Dialect>> {
    // The document has no limit of its own and asks for one ("consider rate limiting").
    let rate = RateRule::from_env("guild", 20, 10_000)?;
    Ok(Arc::new(Guild(Arc::new(rate))))
}

struct Guild(Arc<RateRule>);

impl Dialect for Guild {
    fn name(&self) -> &'static str {
        "guild"
    }

    fn default_namespace(&self) -> &'static str {
        "/guild"
    }

    fn room_kinds(&self) -> &'static [&'static str] {
        &[SERVER, CHANNEL]
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            tokens: false,
            session_tokens: false,
            cookie: true,
            token_cookies: &[],
        }
    }

    fn refusal(&self, why: AuthFailure) -> &'static str {
        match why {
            // The contract's rate-limit code: the credentials were fine.
            AuthFailure::TooManyConnections => "E_RATE_LIMITED",
            _ => "E_UNAUTHORIZED",
        }
    }

    fn handle(&self, cx: EventCx, event: &str, data: Value) -> Option<HandlerFuture> {
        let handler: HandlerFuture = match event {
            "server:join" => Box::pin(server_join(cx, data)),
            "channel:join" => Box::pin(channel_join(cx, data)),
            "typing:start" => Box::pin(typing(cx, data, true)),
            "typing:stop" => Box::pin(typing(cx, data, false)),
            "message:create" => Box::pin(message_create(cx, data, self.0.clone())),
            _ => return None,
        };
        Some(handler)
    }

    fn error(&self, _event: &str, e: &DomainError, correlation_id: &str) -> Reply {
        let (event, code) = match e.code {
            ErrorCode::Validation
            | ErrorCode::Conflict
            | ErrorCode::PayloadTooLarge
            | ErrorCode::NotJoined => ("error:validation", "E_VALIDATION"),
            ErrorCode::RateLimited => ("error:validation", "E_RATE_LIMITED"),
            ErrorCode::Forbidden
            | ErrorCode::Unauthorized
            | ErrorCode::TokenExpired
            | ErrorCode::EditWindowExpired => ("error:permission", "E_FORBIDDEN"),
            // Only channels are looked up by events that reveal existence.
            ErrorCode::NotFound => ("error:not_found", "E_CHANNEL_NOT_FOUND"),
            ErrorCode::Unavailable | ErrorCode::Internal => ("error:internal", "E_INTERNAL"),
        };
        Reply::emit(
            event,
            json!({ "code": code, "message": e.message, "correlationId": correlation_id }),
        )
        .with_ack(json!({ "ok": false, "code": code, "message": e.message }))
    }

    fn render<'a>(
        &'a self,
        core: &'a Core,
        namespace: &'a str,
        event: &'a CoreEvent<'a>,
    ) -> BoxFuture<'a, Vec<Emission>> {
        Box::pin(async move { render(core, namespace, event).await })
    }
}

/// The user's name, falling back to the id when the application never described the user.
async fn username(core: &Core, user_id: &str) -> String {
    match core.user(user_id).await {
        Ok(u) => u.username,
        Err(_) => user_id.to_string(),
    }
}

/// MessageDTO.
fn message_dto(m: &Message, username: &str) -> Value {
    let updated = m.edited_at_ms.unwrap_or(m.created_at_ms);
    json!({
        "id": m.id,
        "channel_id": numeric_json(&m.room.id),
        "content": m.content,
        "created_at": time_fmt::iso_ms(m.created_at_ms),
        "updated_at": time_fmt::iso_ms(updated),
        "user": { "id": numeric_json(&m.sender_id), "username": username },
    })
}

/// `presence:update` of one server: its direct members online in this namespace.
async fn server_presence(core: &Core, ns: &str, server: &RoomKey) -> Result<Value, DomainError> {
    let members = core
        .room(server)
        .await?
        .members
        .into_iter()
        .map(|m| m.user_id)
        .collect::<Vec<_>>();
    let online = core.presence_of(ns, members).await?;
    let mut ids: Vec<Value> = online
        .iter()
        .filter(|p| p.online)
        .map(|p| numeric_json(&p.user_id))
        .collect();
    ids.sort_by_key(|v| (v.as_i64().unwrap_or(i64::MAX), v.to_string()));
    Ok(json!({ "serverId": numeric_json(&server.id), "onlineUserIds": ids }))
}

async fn render(core: &Core, ns: &str, event: &CoreEvent<'_>) -> Vec<Emission> {
    match *event {
        // New messages in a channel; the socket that sent one does not get it back.
        CoreEvent::Message {
            event: MessageEvent::New,
            message,
            origin,
        } if message.room.kind == CHANNEL => {
            let name = username(core, &message.sender_id).await;
            let mut e = Emission::new(
                ns,
                vec![message.room.socket_room()],
                "message:new",
                message_dto(message, &name),
            );
            e.except_socket = origin.filter(|o| o.namespace == ns).map(|o| o.socket);
            vec![e]
        }
        CoreEvent::MemberChanged {
            room,
            user_id,
            joined,
        } if room.room.kind == SERVER => {
            let data = json!({
                "serverId": numeric_json(&room.room.id),
                "userId": numeric_json(user_id),
                "username": username(core, user_id).await,
            });
            let event = if joined {
                "server:member_joined"
            } else {
                "server:member_left"
            };
            vec![Emission::new(
                ns,
                vec![room.room.socket_room()],
                event,
                data,
            )]
        }
        // Every node tells its own sockets in each of the user's servers.
        CoreEvent::Presence { user_id, .. } => {
            let servers = match core.user_rooms(user_id, SERVER).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "presence not delivered: servers unavailable");
                    return vec![];
                }
            };
            let mut out = Vec::with_capacity(servers.len());
            for server in servers {
                match server_presence(core, ns, &server).await {
                    Ok(data) => {
                        let mut e =
                            Emission::new(ns, vec![server.socket_room()], "presence:update", data);
                        e.local = true;
                        out.push(e);
                    }
                    Err(e) => tracing::warn!(error = %e, "server presence unavailable"),
                }
            }
            out
        }
        // To the channel, the typing user's own sockets excluded.
        CoreEvent::Typing {
            room,
            user_id,
            typing,
            local,
        } if room.kind == CHANNEL => {
            let data = json!({
                "channelId": numeric_json(&room.id),
                "userId": numeric_json(user_id),
                "username": username(core, user_id).await,
                "isTyping": typing,
            });
            let mut e = Emission::new(ns, vec![room.socket_room()], "typing:update", data);
            e.except = vec![user_room(user_id)];
            e.local = local;
            vec![e]
        }
        _ => vec![],
    }
}

fn room(v: &Value, field: &str, kind: &str) -> Result<RoomKey, DomainError> {
    Ok(RoomKey::new(
        kind,
        numeric_id(object(v)?.get(field), field)?,
    ))
}

async fn server_join(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let server = room(&v, "serverId", SERVER)?;
    // A server that does not exist is E_FORBIDDEN, as for a non-member.
    cx.join(&server).await?;
    let id = numeric_json(&server.id);
    let _ = cx.socket.emit("server:joined", &json!({ "serverId": id }));
    // The room (this socket included) learns who is online.
    match server_presence(cx.core(), &cx.namespace, &server).await {
        Ok(data) => {
            let e = Emission::new(
                &cx.namespace,
                vec![server.socket_room()],
                "presence:update",
                data,
            );
            cx.core().fanout.emit(e).await;
        }
        Err(e) => tracing::warn!(error = %e, "server presence unavailable"),
    }
    Ok(Reply::ack(json!({ "ok": true })))
}

async fn channel_join(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let channel = room(&v, "channelId", CHANNEL)?;
    // The document reveals a missing channel (E_CHANNEL_NOT_FOUND).
    cx.core()
        .check(&cx.user, &channel, Permission::Join)
        .await?;
    cx.join_checked(&channel).await?;
    let data = json!({ "channelId": numeric_json(&channel.id) });
    Ok(Reply::emit("channel:joined", data).with_ack(json!({ "ok": true })))
}

async fn typing(cx: EventCx, v: Value, start: bool) -> Result<Reply, DomainError> {
    let channel = room(&v, "channelId", CHANNEL)?;
    cx.core()
        .typing(&cx.namespace, &cx.user, &channel, start, TYPING_TTL)
        .await?;
    Ok(Reply::ack(json!({ "ok": true })))
}

async fn message_create(cx: EventCx, v: Value, rate: Arc<RateRule>) -> Result<Reply, DomainError> {
    let o = object(&v)?;
    // The document's order: content, then the channel, then membership.
    let content = string_field(o, "content", MAX_CONTENT_CHARS)?.to_string();
    let channel = room(&v, "channelId", CHANNEL)?;
    cx.core()
        .check(&cx.user, &channel, Permission::Send)
        .await?;
    let cmd = SendCommand {
        room: channel,
        sender_id: cx.user.to_string(),
        kind: "text".to_string(),
        content,
        client_id: None,
        reply_to_id: None,
        origin: Some(cx.origin()),
        file: None,
    };
    let sent = cx.core().send(cmd, Some(&rate)).await?;
    let name = username(cx.core(), &cx.user).await;
    Ok(Reply::ack(
        json!({ "ok": true, "message": message_dto(&sent.message, &name) }),
    ))
}
