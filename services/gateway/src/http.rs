//! The integration API (`../shared/contracts/INTEGRATION_API.md`), the user routes of the
//! `chat` contract, and health, readiness and metrics. Errors are
//! `{ error, message, correlationId }` with the status from the error-code table.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequest, Path, Query, Request, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use switchboard_common::{DomainError, ErrorCode, telemetry, time_fmt};
use switchboard_proto::{common as pc, membership as pm, messages as pmsg, presence as pp};
use tracing::Instrument;

use crate::{
    Gateway,
    auth::{AuthFailure, secrets_equal},
    core::{Message, RoomKey, SendCommand, session_room, user_room},
    dialect::{chat, exceeds_chars},
};

type Gw = State<Arc<Gateway>>;

/// An error answered over HTTP.
pub struct ApiError(DomainError);

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let correlation_id = telemetry::current_trace_id();
        tracing::info!(code = self.0.code.name(), message = %self.0.message, %correlation_id, "request refused");
        let body = json!({
            "error": self.0.code.name(),
            "message": self.0.message,
            "correlationId": correlation_id,
        });
        (status, Json(body)).into_response()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

/// JSON body whose rejection is the API's validation error.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError(DomainError::of(ErrorCode::PayloadTooLarge)))
            }
            Err(e) => Err(ApiError(DomainError::validation(match e {
                JsonRejection::MissingJsonContentType(_) => "Expected a JSON body".to_string(),
                other => format!("Invalid body: {}", other.body_text()),
            }))),
        }
    }
}

fn validate_id(what: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() || exceeds_chars(id, 256) {
        return Err(DomainError::validation(format!(
            "{what} must be 1-256 characters"
        )));
    }
    Ok(())
}

fn room_key(kind: String, id: String) -> Result<RoomKey, DomainError> {
    const KINDS: [&str; 7] = [
        "server",
        "channel",
        "conversation",
        "chat",
        "vault",
        "project",
        "study",
    ];
    if !KINDS.contains(&kind.as_str()) {
        return Err(DomainError::validation(format!(
            "kind must be one of {}",
            KINDS.join(", ")
        )));
    }
    validate_id("roomId", &id)?;
    Ok(RoomKey::new(kind, id))
}

/// Browsers on the allowed origins may call the API and use long-polling across origins, with
/// credentials (the session cookie); WebSocket handshakes are checked by Origin in the handshake.
pub fn cors(config: &crate::Config) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<header::HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|o| o.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PUT,
            axum::http::Method::PATCH,
            axum::http::Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600))
}

pub fn router(gw: Arc<Gateway>) -> Router {
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
        .route_layer(middleware::from_fn_with_state(gw.clone(), require_admin));
    let open = Router::new()
        .route("/v1/rooms/{kind}/{room_id}/messages", get(room_history))
        .route("/v1/chats/{chat_id}/messages", get(chat_history))
        .route("/v1/chats/{chat_id}/receipts", get(chat_receipts))
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    admin
        .merge(open)
        .layer(middleware::from_fn(trace_request))
        .with_state(gw)
}

/// Each request in its own span (a child of the caller's trace when it sent one).
async fn trace_request(req: Request, next: Next) -> Response {
    let span = telemetry::http_server_span(&req);
    next.run(req).instrument(span).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn is_admin(gw: &Gateway, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| secrets_equal(t, &gw.config.admin_token))
}

async fn require_admin(State(gw): Gw, req: Request, next: Next) -> Response {
    if is_admin(&gw, req.headers()) {
        next.run(req).await
    } else {
        gw.metrics.error("UNAUTHORIZED");
        ApiError(DomainError::new(
            ErrorCode::Unauthorized,
            "Admin token required",
        ))
        .into_response()
    }
}

/// Who is calling a user route: the admin (None) or a user with their own credential.
async fn caller(gw: &Gateway, headers: &HeaderMap) -> Result<Option<String>, DomainError> {
    if is_admin(gw, headers) {
        return Ok(None);
    }
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let result = match bearer(headers) {
        Some(token) => gw.auth.verify_token(token).await,
        None => {
            gw.auth
                .verify_cookie(h(header::COOKIE), h(header::ORIGIN))
                .await
        }
    };
    match result {
        Ok(identity) => Ok(Some(identity.user_id)),
        Err(AuthFailure::Unavailable) => Err(DomainError::of(ErrorCode::Unavailable)),
        Err(AuthFailure::Expired) => Err(DomainError::new(
            ErrorCode::Unauthorized,
            "Credential expired",
        )),
        Err(_) => Err(DomainError::new(
            ErrorCode::Unauthorized,
            "Valid credential required",
        )),
    }
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

/// Ids are opaque strings; numbers are accepted and kept as their decimal text.
fn id_value(v: &Value) -> Result<String, DomainError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(DomainError::validation("ids must be strings")),
    }
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
        gw.core.fanout.room_changed(&after, None).await;
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
    gw.core.fanout.room_changed(&info, None).await;
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
        gw.core.fanout.room_changed(&info, Some(&user_id)).await;
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
    gw.core.fanout.disconnect_room(session_room(&token)).await;
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

/// A message in the core's own JSON.
pub fn message_json(m: &Message) -> Value {
    let iso = |t: Option<i64>| t.map(time_fmt::iso_ms);
    json!({
        "id": m.id,
        "roomKind": m.room.kind,
        "roomId": m.room.id,
        "seq": m.seq,
        "senderId": m.sender_id,
        "type": m.kind,
        "content": m.content,
        "fileId": m.file_id,
        "fileName": m.file_name,
        "fileSize": m.file_size,
        "mimeType": m.mime_type,
        "replyToId": m.reply_to_id,
        "clientId": m.client_id,
        "createdAt": time_fmt::iso_ms(m.created_at_ms),
        "editedAt": iso(m.edited_at_ms),
        "deletedAt": iso(m.deleted_at_ms),
    })
}

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
    if let Some(c) = &b.client_id
        && (c.is_empty() || exceeds_chars(c, 128))
    {
        return Err(DomainError::validation("clientId must be 1-128 characters").into());
    }
    let cmd = SendCommand {
        room,
        sender_id: id_value(&b.sender_id)?,
        kind,
        content: b.content,
        client_id: b.client_id,
        reply_to_id: b.reply_to_id,
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

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

struct HistoryArgs {
    before: Option<i64>,
    after: Option<i64>,
    limit: u32,
}

fn history_args(q: &HistoryQuery) -> Result<HistoryArgs, DomainError> {
    let cursor = |v: &Option<String>, name: &str| -> Result<Option<i64>, DomainError> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| DomainError::validation(format!("{name} must be a message id"))),
        }
    };
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| DomainError::validation("limit must be between 1 and 100"))?,
    };
    Ok(HistoryArgs {
        before: cursor(&q.before, "before")?,
        after: cursor(&q.after, "after")?,
        limit,
    })
}

/// The page and the cursor of the next one in the same direction (None at the end).
async fn history_page(
    gw: &Gateway,
    caller: Option<&str>,
    room: &RoomKey,
    q: &HistoryQuery,
) -> Result<(Vec<Message>, bool, Option<i64>), DomainError> {
    let a = history_args(q)?;
    let page = gw
        .core
        .history(caller, room, a.before, a.after, a.limit)
        .await?;
    let next = if page.has_more {
        page.messages.last().map(|m| m.id)
    } else {
        None
    };
    Ok((page.messages, page.has_more, next))
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

async fn chat_history(
    State(gw): Gw,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    let who = caller(&gw, &headers).await?;
    let room = room_key(chat::ROOM_KIND.to_string(), chat_id)?;
    let (messages, has_more, next) = history_page(&gw, who.as_deref(), &room, &q)
        .await
        .map_err(not_found_is_forbidden)?;
    Ok(Json(json!({
        "messages": messages.iter().map(chat::message_json).collect::<Vec<_>>(),
        "hasMore": has_more,
        "nextCursor": next.map(|id| id.to_string()),
    }))
    .into_response())
}

/// On the `chat` routes a chat that does not exist answers 403, as for a non-member.
fn not_found_is_forbidden(e: DomainError) -> DomainError {
    if e.code == ErrorCode::NotFound {
        DomainError::forbidden()
    } else {
        e
    }
}

async fn chat_receipts(
    State(gw): Gw,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
) -> ApiResult {
    let who = caller(&gw, &headers).await?;
    let room = room_key(chat::ROOM_KIND.to_string(), chat_id)?;
    let receipts = match who {
        Some(user) => gw.core.receipts(&user, &room).await,
        None => {
            // The admin sees the same list without a membership check.
            let info = gw.core.room(&room).await?;
            let user_ids = info
                .members
                .iter()
                .map(|m| m.user_id.clone())
                .collect::<Vec<_>>();
            let req = pmsg::ListReceiptsRequest {
                room: Some(room.to_proto()),
                user_ids,
            };
            let c = &gw.core.clients;
            c.call(
                "messages",
                "ListReceipts",
                c.messages.clone().list_receipts(req),
            )
            .await
            .map(|r| r.receipts)
        }
    }
    .map_err(not_found_is_forbidden)?;
    Ok(Json(json!({
        "receipts": receipts.iter().map(|r| json!({
            "userId": r.user_id,
            "messageId": r.message_id.to_string(),
            "readAt": time_fmt::iso_ms(r.read_at_ms),
        })).collect::<Vec<_>>(),
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

async fn disconnect_user(
    State(gw): Gw,
    Path(user_id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    validate_id("userId", &user_id)?;
    // The body is optional.
    let body: DisconnectBody = if body.is_empty() {
        DisconnectBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|_| DomainError::validation("Invalid body"))?
    };
    let reason = body
        .reason
        .unwrap_or_else(|| "disconnected by the server".to_string());
    tracing::info!(%user_id, %reason, "disconnecting user");
    if !gw.core.fanout.disconnect_room(user_room(&user_id)).await {
        return Err(DomainError::of(ErrorCode::Unavailable).into());
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))).into_response())
}

// ---- operations ----

async fn readyz(State(gw): Gw) -> Response {
    if gw.is_draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "draining" })),
        )
            .into_response();
    }
    let c = &gw.core.clients;
    let redis = fred::prelude::ClientLike::ping::<String>(&gw.redis, None)
        .await
        .is_ok();
    let membership = c
        .call(
            "membership",
            "ListContacts",
            c.membership.clone().list_contacts(pm::ListContactsRequest {
                user_id: "readyz".into(),
            }),
        )
        .await
        .is_ok();
    let messages = c
        .call(
            "messages",
            "ListReceipts",
            c.messages.clone().list_receipts(pmsg::ListReceiptsRequest {
                room: Some(pc::RoomRef {
                    kind: "chat".into(),
                    id: "readyz".into(),
                }),
                user_ids: vec!["readyz".into()],
            }),
        )
        .await
        .is_ok();
    let presence = c
        .call(
            "presence",
            "GetPresence",
            c.presence.clone().get_presence(pp::GetPresenceRequest {
                namespace: "/".into(),
                user_ids: vec![],
            }),
        )
        .await
        .is_ok();
    let ok = redis && membership && messages && presence;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "status": if ok { "ready" } else { "unavailable" }, "redis": redis, "membership": membership, "messages": messages, "presence": presence })),
    )
        .into_response()
}

async fn metrics(State(gw): Gw) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics.render(),
    )
        .into_response()
}
