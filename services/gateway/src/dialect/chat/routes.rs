//! The two user routes contract 002 tells clients to call, with their own credential:
//! `GET /v1/chats/{chatId}/messages` (history in `message:new`'s shape) and
//! `GET /v1/chats/{chatId}/receipts`. A chat that does not exist answers 403, as for a
//! non-member.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::IntoResponse,
    routing::get,
};
use serde_json::json;
use switchboard_common::{DomainError, ErrorCode, time_fmt};
use switchboard_proto::messages as pmsg;

use super::{ROOM_KIND, message_json};
use crate::{
    Gateway,
    http::{ApiResult, Gw, HistoryQuery, caller, history_page, room_key},
};

pub(super) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/chats/{chat_id}/messages", get(chat_history))
        .route("/v1/chats/{chat_id}/receipts", get(chat_receipts))
}

async fn chat_history(
    State(gw): Gw,
    headers: HeaderMap,
    Path(chat_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    let who = caller(&gw, &headers).await?;
    let room = room_key(ROOM_KIND.to_string(), chat_id)?;
    let (messages, has_more, next) = history_page(&gw, who.as_deref(), &room, &q)
        .await
        .map_err(not_found_is_forbidden)?;
    Ok(Json(json!({
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
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
    let room = room_key(ROOM_KIND.to_string(), chat_id)?;
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
