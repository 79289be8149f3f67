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
use switchboard_common::{room::ROOM_KINDS, telemetry};
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

/// How a service answered a readiness probe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// It answered, and its storage worked.
    Ok,
    /// It answered, but its storage (Postgres) did not: it reports its own time on the call in
    /// `Server-Timing` even then, which a transport error (the service unreachable) cannot.
    StorageDown,
    Unreachable,
}

impl Probe {
    fn of<T>(result: &Result<tonic::Response<T>, tonic::Status>) -> Probe {
        match result {
            Ok(_) => Probe::Ok,
            Err(s) if s.metadata().contains_key(telemetry::SERVER_TIMING) => Probe::StorageDown,
            Err(_) => Probe::Unreachable,
        }
    }
}

/// Ready when not draining, Redis answers, presence works, and membership and messages answer.
/// A Postgres outage alone leaves the node ready: every node is in the same state, and it
/// still serves connections, presence and typing (sends answer the contract's error at once);
/// taking every node out of the load balancer would stop those too (`docs/guarantees.md`).
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
    let membership = Probe::of(
        &c.membership
            .clone()
            .list_contacts(pm::ListContactsRequest {
                user_id: "readyz".into(),
            })
            .await,
    );
    let messages = Probe::of(
        &c.messages
            .clone()
            .list_receipts(pmsg::ListReceiptsRequest {
                room: Some(pc::RoomRef {
                    kind: ROOM_KINDS[0].into(),
                    id: "readyz".into(),
                }),
                user_ids: vec!["readyz".into()],
            })
            .await,
    );
    let presence = Probe::of(
        &c.presence
            .clone()
            .get_presence(pp::GetPresenceRequest {
                namespace: "/".into(),
                user_ids: vec![],
            })
            .await,
    );
    let ok = redis
        && presence == Probe::Ok
        && membership != Probe::Unreachable
        && messages != Probe::Unreachable;
    let database = membership == Probe::Ok && messages == Probe::Ok;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if !ok { "unavailable" } else if database { "ready" } else { "degraded" },
            "redis": redis,
            "membership": membership != Probe::Unreachable,
            "messages": messages != Probe::Unreachable,
            "presence": presence == Probe::Ok,
            "database": database,
        })),
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
