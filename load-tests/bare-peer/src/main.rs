//! `sb-bare-peer`: socketioxide with its Redis adapter and nothing else, serving just enough of
//! the chat contract for `sb-load`'s typing and persisted-send scenarios:
//! - the integration API's provisioning calls, answered and forgotten;
//! - a handshake whose token is the user id;
//! - `room:join`;
//! - `typing:start` / `typing:stop`, broadcast to the chat as `typing:update` without the
//!   typist's own sockets, in the shape Switchboard's chat dialect renders;
//! - with `DATABASE_URL` set, `message:send`: one `INSERT … ON CONFLICT DO NOTHING` per send
//!   (a repeat is acked and not broadcast), `message:new` to the chat, then the ack.
//!
//! It checks, limits, logs and traces nothing, on purpose. It is the minimum the same transport
//! (the workspace's patched engineioxide, socketioxide and tungstenite, the Redis adapter on
//! fred) and one Postgres statement per send cost on this machine, measured by the same
//! generator in the same run as the two systems compared. docs/benchmarks/README.md (§29, §30)
//! reads it as the floor under Switchboard's figures. Never deploy it.
//!
//! Environment: `PORT` (4100), `REDIS_URL` (redis://127.0.0.1:6379), `REDIS_PREFIX`
//! (`bench-bare:`), `DATABASE_URL` (unset: no sends; set: table `barepeer.messages`, created
//! if missing), `PG_POOL_SIZE` (15, the Node peer's).

use std::net::SocketAddr;

use axum::{Json, Router, routing::post, routing::put, serve::ListenerExt};
use serde::Deserialize;
use serde_json::json;
use socketioxide::{
    SocketIo,
    extract::{AckSender, Data, SocketRef},
    handler::ConnectHandler,
};
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};
use sqlx::{PgPool, postgres::PgPoolOptions};

#[derive(Deserialize)]
struct Auth {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChatRef {
    chat_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewMessage {
    chat_id: String,
    body: String,
    client_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRequest {
    user_id: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

type Adapter = FredAdapter<socketioxide::adapter::Emitter>;

/// Runs as the connect middleware, before the CONNECT packet leaves: handlers registered later
/// (in an async connect handler, which socketioxide spawns after sending CONNECT) could miss the
/// client's first events.
async fn register(
    socket: SocketRef<Adapter>,
    Data(auth): Data<Auth>,
    db: Option<PgPool>,
) -> Result<(), std::convert::Infallible> {
    let user = auth.token;
    if let Some(db) = db {
        let user = user.clone();
        socket.on(
            "message:send",
            move |socket: SocketRef<Adapter>, Data(m): Data<NewMessage>, ack: AckSender<Adapter>| {
                let (db, user) = (db.clone(), user.clone());
                async move {
                    let answer = match send(&db, &socket, &user, m).await {
                        Ok(id) => json!({ "ok": true, "data": { "serverId": id.to_string() } }),
                        Err(e) => json!({ "ok": false, "error": { "code": "INTERNAL", "message": e.to_string() } }),
                    };
                    let _ = ack.send(&answer);
                }
            },
        );
    }
    socket.join(format!("user:{user}"));
    socket.on(
        "room:join",
        async |socket: SocketRef<Adapter>, Data(chat): Data<ChatRef>, ack: AckSender<Adapter>| {
            socket.join(format!("chat:{}", chat.chat_id));
            let _ = ack.send(&json!({ "ok": true }));
        },
    );
    for (event, state) in [("typing:start", "start"), ("typing:stop", "stop")] {
        let user = user.clone();
        socket.on(
            event,
            move |socket: SocketRef<Adapter>, Data(chat): Data<ChatRef>| {
                let user = user.clone();
                async move {
                    let data = json!({ "chatId": chat.chat_id, "userId": user, "state": state });
                    let _ = socket
                        .within(format!("chat:{}", chat.chat_id))
                        .except(format!("user:{user}"))
                        .emit("typing:update", &data)
                        .await;
                }
            },
        );
    }
    Ok(())
}

/// Stores a message once and broadcasts it to its chat; answers its id (a repeat's too).
async fn send(
    db: &PgPool,
    socket: &SocketRef<Adapter>,
    user: &str,
    m: NewMessage,
) -> anyhow::Result<i64> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO barepeer.messages (chat_id, sender_id, client_id, body) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sender_id, chat_id, client_id) DO NOTHING RETURNING id",
    )
    .bind(&m.chat_id)
    .bind(user)
    .bind(&m.client_id)
    .bind(&m.body)
    .fetch_optional(db)
    .await?;
    let Some(id) = inserted else {
        return Ok(sqlx::query_scalar(
            "SELECT id FROM barepeer.messages WHERE sender_id = $1 AND chat_id = $2 AND client_id = $3",
        )
        .bind(user)
        .bind(&m.chat_id)
        .bind(&m.client_id)
        .fetch_one(db)
        .await?);
    };
    let data = json!({
        "chatId": m.chat_id, "_id": id.to_string(), "body": m.body, "senderId": user,
        "clientId": m.client_id,
    });
    socket
        .within(format!("chat:{}", m.chat_id))
        .emit("message:new", &data)
        .await
        .map_err(|e| anyhow::anyhow!("broadcast failed: {e}"))?;
    Ok(id)
}

/// The pool and the table, when `DATABASE_URL` is set. The pool skips sqlx's ping before each
/// use (`test_before_acquire`), as the messages service's send lane does.
async fn database() -> anyhow::Result<Option<PgPool>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return Ok(None);
    };
    let db = PgPoolOptions::new()
        .max_connections(env_or("PG_POOL_SIZE", "15").parse()?)
        .test_before_acquire(false)
        .connect(&url)
        .await?;
    sqlx::raw_sql(
        "CREATE SCHEMA IF NOT EXISTS barepeer; \
         CREATE TABLE IF NOT EXISTS barepeer.messages ( \
             id bigserial PRIMARY KEY, chat_id text NOT NULL, sender_id text NOT NULL, \
             client_id text NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), \
             UNIQUE (sender_id, chat_id, client_id)); \
         CREATE INDEX IF NOT EXISTS messages_chat_id_idx ON barepeer.messages (chat_id, id);",
    )
    .execute(&db)
    .await?;
    Ok(Some(db))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = env_or("PORT", "4100").parse()?;
    // The gateway's own Redis connection (RESP3 for sharded pub/sub, `TCP_NODELAY`, fred's
    // pub/sub channel sized so that a reader falling behind does not lose messages): the
    // transport is measured, not fred's defaults.
    let subscriber = switchboard_gateway::redis_subscriber_client(&env_or(
        "REDIS_URL",
        "redis://127.0.0.1:6379",
    ))?;
    let adapter_config = RedisAdapterConfig::default().with_prefix(format!(
        "{}socket.io",
        env_or("REDIS_PREFIX", "bench-bare:")
    ));
    let adapter = RedisAdapterCtr::new_with_fred_config(subscriber, adapter_config).await?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<Adapter>(adapter)
        .build_layer();
    let db = database().await?;
    let connected = async |_: SocketRef<Adapter>| {};
    io.ns(
        "/",
        connected.with(async move |socket: SocketRef<Adapter>, auth: Data<Auth>| {
            register(socket, auth, db.clone()).await
        }),
    )
    .await?;

    let ok = || async { Json(json!({})) };
    let app =
        Router::new()
            .route("/healthz", axum::routing::get(ok))
            .route("/v1/users/{user}", put(ok))
            .route("/v1/rooms/chat/{chat}", put(ok))
            .route("/v1/rooms/chat/{chat}/members/{user}", put(ok))
            .route(
                "/v1/tokens",
                post(|Json(req): Json<TokenRequest>| async move {
                    Json(json!({ "token": req.user_id }))
                }),
            )
            .layer(layer);
    // Small frames must leave at once, as they do from Switchboard's gateway.
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("listening on 127.0.0.1:{port}");
    axum::serve(listener, app).await?;
    Ok(())
}
