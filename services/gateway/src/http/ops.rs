//! Operations: liveness, readiness (dependencies reachable, not draining) and Prometheus metrics.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use switchboard_common::room::ROOM_KINDS;
use switchboard_proto::{common as pc, membership as pm, messages as pmsg, presence as pp};

use super::Gw;
use crate::Gateway;

pub(super) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

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
                    kind: ROOM_KINDS[0].into(),
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
