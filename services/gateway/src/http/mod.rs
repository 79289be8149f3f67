//! The gateway's HTTP surface: the integration API (`integration`), the mounted dialects' own
//! routes, and operations (`ops`: health, readiness, metrics), with what they share: errors as
//! `{ error, message, correlationId }` with the status from the error-code table, JSON bodies,
//! callers (admin token or a user's own credential), CORS and a span per request.

mod files;
mod integration;
mod ops;

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{FromRequest, Request, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};
use switchboard_common::{DomainError, ErrorCode, RoomKey, room::check_id, telemetry, time_fmt};
use tracing::Instrument;

use crate::{
    Gateway,
    auth::{AuthFailure, secrets_equal},
    core::Message,
};

pub(crate) type Gw = State<Arc<Gateway>>;

/// An error answered over HTTP.
pub struct ApiError(pub DomainError);

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
        if self.0.code == ErrorCode::PayloadTooLarge {
            // The rest of the body is not read, so the connection cannot carry another
            // request: say so, or a client reusing it races the close ("other side closed").
            return (status, [(header::CONNECTION, "close")], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

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

pub(crate) fn validate_id(what: &str, id: &str) -> Result<(), DomainError> {
    check_id(what, id)
}

/// A room named in a path: a known kind and a valid id.
pub(crate) fn room_key(kind: String, id: String) -> Result<RoomKey, DomainError> {
    RoomKey::parse("room", kind, id)
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
    let mut routes = integration::routes(gw.clone())
        .merge(files::routes())
        .merge(ops::routes());
    for m in gw.core.mounts() {
        if let Some(own) = m.dialect.routes() {
            routes = routes.merge(own);
        }
    }
    routes
        .layer(middleware::from_fn(trace_request))
        .with_state(gw)
}

/// Each request in its own span (a child of the caller's trace when it sent one).
async fn trace_request(req: Request, next: Next) -> Response {
    // The route's template, not the path: `DELETE /v1/sessions/{token}` carries a secret.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_string();
    let span = telemetry::http_server_span(&req, &route);
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

pub(crate) fn is_admin(gw: &Gateway, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| secrets_equal(t, &gw.config.admin_token))
}

pub(crate) async fn require_admin(State(gw): Gw, req: Request, next: Next) -> Response {
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
pub(crate) async fn caller(
    gw: &Gateway,
    headers: &HeaderMap,
) -> Result<Option<String>, DomainError> {
    if is_admin(gw, headers) {
        return Ok(None);
    }
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let result = match bearer(headers) {
        Some(token) => gw.auth.verify_token(token).await,
        None => {
            // The cookies the mounted dialects accept that carry a session token, then the
            // signed session cookie.
            let names: Vec<&str> = gw
                .core
                .mounts()
                .iter()
                .flat_map(|m| m.dialect.credentials().token_cookies.iter().copied())
                .collect();
            match gw
                .auth
                .verify_token_cookie(h(header::COOKIE), h(header::ORIGIN), &names)
                .await
            {
                Err(AuthFailure::Missing) => {
                    gw.auth
                        .verify_cookie(h(header::COOKIE), h(header::ORIGIN))
                        .await
                }
                other => other,
            }
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

/// Ids are opaque strings; numbers are accepted and kept as their decimal text.
pub(crate) fn id_value(v: &Value) -> Result<String, DomainError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(DomainError::validation("ids must be strings")),
    }
}

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

// ---- history, shared by the integration API and dialects' own routes ----

#[derive(Deserialize)]
pub(crate) struct HistoryQuery {
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
pub(crate) async fn history_page(
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
