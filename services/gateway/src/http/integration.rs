//! The integration API (`../shared/contracts/INTEGRATION_API.md`): what applications' backends
//! call with the admin token (users, rooms, members, credentials, messages, server-side events,
//! disconnects), and the history route users call with their own credential.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_common::{
    DomainError, ErrorCode, RoomKey,
    room::{check_client_id, exceeds_chars},
    time_fmt,
};
use switchboard_proto::{common as pc, membership as pm};

use super::{
    ApiJson, ApiResult, Gw, HistoryQuery, caller, history_page, id_value, message_json,
    require_admin, room_key, validate_id,
};
use crate::{
    Gateway,
    core::{CoreEvent, SendCommand, session_room, user_room},
};

pub(super) fn routes(gw: Arc<Gateway>) -> Router<Arc<Gateway>> {
    let admin = Router::new()
        .route("/v1/users/{user_id}", put(put_user))
        .route("/v1/rooms/{kind}/{room_id}", put(put_room))
        .route(
            "/v1/rooms/{kind}/{room_id}/members/{user_id}",
            put(put_member).delete(delete_member),
        )
        .route("/v1/sessions", post(create_session))
        .route(
            "/v1/sessions/{token}",
            axum::routing::delete(delete_session),
        )
        .route("/v1/tokens", post(create_token))
        .route("/v1/rooms/{kind}/{room_id}/messages", post(post_message))
        .route(
            "/v1/rooms/{kind}/{room_id}/messages/{message_id}",
            axum::routing::patch(patch_message).delete(delete_message),
        )
        .route("/v1/rooms/{kind}/{room_id}/events", post(post_room_event))
        .route("/v1/users/{user_id}/events", post(post_user_event))
        .route("/v1/users/{user_id}/disconnect", post(disconnect_user))
        .route("/v1/users/{user_id}/revoke", post(revoke_user))
        .route_layer(middleware::from_fn_with_state(gw.clone(), require_admin));
    admin.route("/v1/rooms/{kind}/{room_id}/messages", get(room_history))
}

// ---- users, rooms, members ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserBody {
    username: String,
    first_name: Option<String>,
    last_name: Option<String>,
    role: Option<String>,
}

async fn put_user(
    State(gw): Gw,
    Path(user_id): Path<String>,
    ApiJson(b): ApiJson<UserBody>,
) -> ApiResult {
    validate_id("userId", &user_id)?;
    let req = pm::User {
        id: user_id,
        username: b.username,
        first_name: b.first_name,
        last_name: b.last_name,
        role: b.role,
    };
    let c = &gw.core.clients;
    let u = c
        .call(
            "membership",
            "UpsertUser",
            c.membership.clone().upsert_user(req),
        )
        .await?;
    // The global role may have changed, and with it what the user may do.
    gw.core.permissions_changed(&u.id).await;
    Ok(Json(json!({
        "id": u.id, "username": u.username, "firstName": u.first_name, "lastName": u.last_name, "role": u.role,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct RoomRefBody {
    kind: String,
    id: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomBody {
    parent: Option<RoomRefBody>,
    title: Option<String>,
    #[serde(rename = "type")]
    kind_type: Option<String>,
    created_by: Option<Value>,
}

fn room_info_json(r: &crate::core::RoomInfo) -> Value {
    json!({
        "kind": r.room.kind,
        "id": r.room.id,
        "parent": r.parent.as_ref().map(|p| json!({ "kind": p.kind, "id": p.id })),
        "title": r.title,
        "type": r.kind_type,
        "createdBy": r.creator(),
        "createdAt": time_fmt::iso_ms(r.created_at_ms),
        "updatedAt": time_fmt::iso_ms(r.updated_at_ms),
        "members": r.members.iter().map(|m| json!({ "userId": m.user_id, "role": m.role, "grantedAt": time_fmt::iso_ms(m.granted_at_ms) })).collect::<Vec<_>>(),
    })
}

async fn put_room(
    State(gw): Gw,
    Path((kind, room_id)): Path<(String, String)>,
    ApiJson(b): ApiJson<RoomBody>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    let before = gw.core.room(&room).await.ok();
    let parent = match b.parent {
        Some(p) => Some(pc::RoomRef {
            kind: p.kind,
            id: id_value(&p.id)?,
        }),
        None => None,
    };
    let req = pm::UpsertRoomRequest {
        room: Some(room.to_proto()),
        parent,
        title: b.title,
        r#type: b.kind_type,
        created_by: b.created_by.as_ref().map(id_value).transpose()?,
    };
    let c = &gw.core.clients;
    c.call(
        "membership",
        "UpsertRoom",
        c.membership.clone().upsert_room(req),
    )
    .await?;
    let after = gw.core.room(&room).await?;
    // A new parent changes who inherits membership of this room and its children.
    if before.as_ref().is_some_and(|b| b.parent != after.parent) {
        gw.core.permissions_changed(crate::authz::EVERYONE).await;
    }
    let changed = before.as_ref().is_some_and(|b| {
        b.title != after.title || b.kind_type != after.kind_type || b.created_by != after.created_by
    });
    if changed {
        let event = CoreEvent::RoomChanged {
            room: &after,
            removed: None,
        };
        gw.core.publish(None, event).await;
    }
    Ok(Json(room_info_json(&after)).into_response())
}

#[derive(Deserialize)]
struct MemberBody {
    role: String,
}

async fn put_member(
    State(gw): Gw,
    Path((kind, room_id, user_id)): Path<(String, String, String)>,
    ApiJson(b): ApiJson<MemberBody>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    validate_id("userId", &user_id)?;
    let was_member = gw
        .core
        .room(&room)
        .await
        .is_ok_and(|r| r.members.iter().any(|m| m.user_id == user_id));
    let req = pm::GrantMemberRequest {
        room: Some(room.to_proto()),
        user_id: user_id.clone(),
        role: b.role,
    };
    let c = &gw.core.clients;
    let m = c
        .call(
            "membership",
            "GrantMember",
            c.membership.clone().grant_member(req),
        )
        .await?;
    // A new role may allow less than the old one.
    gw.core.permissions_changed(&user_id).await;
    let info = gw.core.room(&room).await?;
    if !was_member {
        let event = CoreEvent::MemberChanged {
            room: &info,
            user_id: &user_id,
            joined: true,
        };
        gw.core.publish(None, event).await;
    }
    let event = CoreEvent::RoomChanged {
        room: &info,
        removed: None,
    };
    gw.core.publish(None, event).await;
    Ok(Json(json!({ "userId": m.user_id, "role": m.role, "grantedAt": time_fmt::iso_ms(m.granted_at_ms) })).into_response())
}

async fn delete_member(
    State(gw): Gw,
    Path((kind, room_id, user_id)): Path<(String, String, String)>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    validate_id("userId", &user_id)?;
    let req = pm::RevokeMemberRequest {
        room: Some(room.to_proto()),
        user_id: user_id.clone(),
    };
    let c = &gw.core.clients;
    let r = c
        .call(
            "membership",
            "RevokeMember",
            c.membership.clone().revoke_member(req),
        )
        .await?;
    if !r.removed {
        return Err(DomainError::not_found("Membership not found").into());
    }
    gw.core.permissions_changed(&user_id).await;
    let lost = r
        .lost_rooms
        .into_iter()
        .map(|r| RoomKey::new(r.kind, r.id))
        .collect::<Vec<_>>();
    gw.core.fanout.leave_rooms(&user_id, &lost).await;
    if let Ok(info) = gw.core.room(&room).await {
        let event = CoreEvent::MemberChanged {
            room: &info,
            user_id: &user_id,
            joined: false,
        };
        gw.core.publish(None, event).await;
        let event = CoreEvent::RoomChanged {
            room: &info,
            removed: Some(&user_id),
        };
        gw.core.publish(None, event).await;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- credentials ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialBody {
    user_id: Value,
    ttl_seconds: Option<u64>,
}

fn ttl(b: &CredentialBody) -> Result<Option<Duration>, DomainError> {
    match b.ttl_seconds {
        Some(0) => Err(DomainError::validation("ttlSeconds must be positive")),
        Some(s) if s > 366 * 86_400 => {
            Err(DomainError::validation("ttlSeconds must be at most a year"))
        }
        Some(s) => Ok(Some(Duration::from_secs(s))),
        None => Ok(None),
    }
}

async fn create_session(State(gw): Gw, ApiJson(b): ApiJson<CredentialBody>) -> ApiResult {
    let user = id_value(&b.user_id)?;
    validate_id("userId", &user)?;
    let s = gw
        .auth
        .create_session(&user, ttl(&b)?)
        .await
        .map_err(DomainError::unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": s.token, "cookie": s.cookie, "expiresAt": time_fmt::iso_ms(s.expires_at_ms) })),
    )
        .into_response())
}

async fn delete_session(State(gw): Gw, Path(token): Path<String>) -> ApiResult {
    let existed = gw
        .auth
        .revoke_session(&token)
        .await
        .map_err(DomainError::unavailable)?;
    gw.core
        .disconnect_room(session_room(&token), "session revoked")
        .await;
    if !existed {
        return Err(DomainError::not_found("Session not found").into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_token(State(gw): Gw, ApiJson(b): ApiJson<CredentialBody>) -> ApiResult {
    let user = id_value(&b.user_id)?;
    validate_id("userId", &user)?;
    let ttl = ttl(&b)?.unwrap_or(Duration::from_secs(3600));
    let token = gw
        .auth
        .mint_jwt(&user, ttl)
        .map_err(DomainError::internal)?;
    Ok((StatusCode::CREATED, Json(json!({ "token": token }))).into_response())
}

// ---- messages ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostMessageBody {
    sender_id: Value,
    content: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    client_id: Option<String>,
    reply_to_id: Option<i64>,
    file_id: Option<Value>,
}

async fn post_message(
    State(gw): Gw,
    Path((kind, room_id)): Path<(String, String)>,
    ApiJson(b): ApiJson<PostMessageBody>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    if b.file_id.is_some() {
        return Err(DomainError::validation("file messages arrive with the files API").into());
    }
    let kind = b.kind.unwrap_or_else(|| "text".to_string());
    if kind != "text" {
        return Err(
            DomainError::validation("only text messages can be posted without a file").into(),
        );
    }
    if let Some(c) = &b.client_id {
        check_client_id(c)?;
    }
    let cmd = SendCommand {
        room,
        sender_id: id_value(&b.sender_id)?,
        kind,
        content: b.content,
        client_id: b.client_id,
        reply_to_id: b.reply_to_id,
        origin: None,
        file: None,
    };
    // Messages posted here do not count toward the sender's rate window.
    let sent = gw.core.send(cmd, None).await?;
    let status = if sent.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(message_json(&sent.message))).into_response())
}

fn message_id(s: &str) -> Result<i64, DomainError> {
    s.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| DomainError::not_found("Message not found"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditBody {
    content: String,
    actor_id: Value,
}

async fn patch_message(
    State(gw): Gw,
    Path((kind, room_id, mid)): Path<(String, String, String)>,
    ApiJson(b): ApiJson<EditBody>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    let actor = id_value(&b.actor_id)?;
    validate_id("actorId", &actor)?;
    let m = gw
        .core
        .edit(&room, message_id(&mid)?, &actor, Some(b.content), 0)
        .await?;
    Ok(Json(message_json(&m)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActorQuery {
    actor_id: Option<String>,
}

async fn delete_message(
    State(gw): Gw,
    Path((kind, room_id, mid)): Path<(String, String, String)>,
    Query(q): Query<ActorQuery>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    let actor = q
        .actor_id
        .ok_or_else(|| DomainError::validation("actorId is required"))?;
    validate_id("actorId", &actor)?;
    let m = gw
        .core
        .edit(&room, message_id(&mid)?, &actor, None, 0)
        .await?;
    Ok(Json(message_json(&m)).into_response())
}

async fn room_history(
    State(gw): Gw,
    headers: HeaderMap,
    Path((kind, room_id)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    let who = caller(&gw, &headers).await?;
    let room = room_key(kind, room_id)?;
    let (messages, has_more, next) = history_page(&gw, who.as_deref(), &room, &q).await?;
    Ok(Json(json!({
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
        "hasMore": has_more,
        "nextCursor": next,
    }))
    .into_response())
}

// ---- server-side events ----

#[derive(Deserialize)]
struct EventBody {
    event: String,
    #[serde(default)]
    data: Value,
    namespace: Option<String>,
}

/// Event names Socket.IO reserves for itself.
fn validate_event(name: &str) -> Result<(), DomainError> {
    const RESERVED: [&str; 6] = [
        "connect",
        "connect_error",
        "disconnect",
        "disconnecting",
        "newListener",
        "removeListener",
    ];
    if name.is_empty() || name.len() > 128 || RESERVED.contains(&name) {
        return Err(DomainError::validation(
            "event must be a 1-128 character name that Socket.IO does not reserve",
        ));
    }
    Ok(())
}

async fn post_room_event(
    State(gw): Gw,
    Path((kind, room_id)): Path<(String, String)>,
    ApiJson(b): ApiJson<EventBody>,
) -> ApiResult {
    let room = room_key(kind, room_id)?;
    validate_event(&b.event)?;
    if !gw
        .core
        .fanout
        .publish(
            b.namespace.as_deref(),
            room.socket_room(),
            &b.event,
            &b.data,
        )
        .await
    {
        return Err(DomainError::of(ErrorCode::Unavailable).into());
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
}

async fn post_user_event(
    State(gw): Gw,
    Path(user_id): Path<String>,
    ApiJson(b): ApiJson<EventBody>,
) -> ApiResult {
    validate_id("userId", &user_id)?;
    validate_event(&b.event)?;
    if !gw
        .core
        .fanout
        .publish(
            b.namespace.as_deref(),
            user_room(&user_id),
            &b.event,
            &b.data,
        )
        .await
    {
        return Err(DomainError::of(ErrorCode::Unavailable).into());
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
}

#[derive(Deserialize, Default)]
struct DisconnectBody {
    reason: Option<String>,
}

/// A reason is shown to every socket of the user.
const MAX_REASON_CHARS: usize = 256;

/// The reason of an optional `{ reason? }` body (disconnect, revoke), or `default`.
fn disconnect_reason(body: &[u8], default: &str) -> Result<String, DomainError> {
    let body: DisconnectBody = if body.is_empty() {
        DisconnectBody::default()
    } else {
        serde_json::from_slice(body).map_err(|_| DomainError::validation("Invalid body"))?
    };
    match body.reason {
        Some(r) if exceeds_chars(&r, MAX_REASON_CHARS) => Err(DomainError::validation(format!(
            "reason must have at most {MAX_REASON_CHARS} characters"
        ))),
        Some(r) => Ok(r),
        None => Ok(default.to_string()),
    }
}

async fn disconnect_user(
    State(gw): Gw,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    validate_id("userId", &user_id)?;
    let reason = disconnect_reason(&body, "disconnected by the server")?;
    tracing::info!(%user_id, %reason, "disconnecting user");
    if !gw.core.disconnect_room(user_room(&user_id), &reason).await {
        return Err(DomainError::of(ErrorCode::Unavailable).into());
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
}

/// `POST /v1/users/{userId}/revoke`: every credential of the user issued up to now (JWTs by
/// `iat`, sessions by creation) is refused from now on by every node, and every socket of the
/// user is disconnected: a ban that outlives the reconnect. Credentials issued afterwards work.
async fn revoke_user(
    State(gw): Gw,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    validate_id("userId", &user_id)?;
    let reason = disconnect_reason(&body, "credentials revoked")?;
    let revoked_before = gw.auth.revoke_user(&user_id).await.map_err(|e| {
        tracing::warn!(error = %e, "revocation not stored");
        DomainError::of(ErrorCode::Unavailable)
    })?;
    tracing::info!(%user_id, %reason, "credentials revoked");
    // Sockets already connected were authenticated before: they go now.
    if !gw.core.disconnect_room(user_room(&user_id), &reason).await {
        return Err(DomainError::of(ErrorCode::Unavailable).into());
    }
    Ok(Json(json!({ "revokedBefore": time_fmt::iso_ms(revoked_before * 1000) })).into_response())
}
