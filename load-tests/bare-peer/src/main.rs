//! `sb-bare-peer`: socketioxide with its Redis adapter and nothing else, serving just enough of
//! the chat contract for `sb-load`'s typing scenarios: the integration API's provisioning calls
//! (answered and forgotten), a handshake whose token is the user id, `room:join`, and
//! `typing:start` / `typing:stop` broadcast to the chat as `typing:update`, the typist's own
//! sockets left out, in the shape Switchboard's chat dialect renders.
//!
//! It checks nothing, stores nothing and traces nothing, on purpose: it is what the transport
//! Switchboard runs (the workspace's patched engineioxide, socketioxide and tungstenite, the
//! Redis adapter on fred) costs per delivery on this machine, measured by the same generator in
//! the same run as the two systems compared. docs/benchmarks/README.md reads it as the floor
//! under Switchboard's typing figures. Never deploy it.
//!
//! Environment: `PORT` (4100), `REDIS_URL` (redis://127.0.0.1:6379), `REDIS_PREFIX`
//! (`bench-bare:`).

use std::net::SocketAddr;

use axum::{Json, Router, routing::post, routing::put, serve::ListenerExt};
use fred::prelude::{Builder, Config as FredConfig};
use fred::types::RespVersion;
use serde::Deserialize;
use serde_json::json;
use socketioxide::{
    SocketIo,
    extract::{AckSender, Data, SocketRef},
};
use socketioxide_redis::{FredAdapter, RedisAdapterConfig, RedisAdapterCtr};

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
struct TokenRequest {
    user_id: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

type Adapter = FredAdapter<socketioxide::adapter::Emitter>;

async fn on_connect(socket: SocketRef<Adapter>, Data(auth): Data<Auth>) {
    let user = auth.token;
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = env_or("PORT", "4100").parse()?;
    let mut config = FredConfig::from_url(&env_or("REDIS_URL", "redis://127.0.0.1:6379"))?;
    // The adapter's sharded pub/sub needs RESP3.
    config.version = RespVersion::RESP3;
    let subscriber = Builder::from_config(config)
        .with_connection_config(|c| c.tcp.nodelay = Some(true))
        // fred hands pub/sub messages to the adapter through a broadcast channel of 32 slots by
        // default, and a reader that falls behind loses messages: the gateway's size, so that
        // the transport is measured, not that default.
        .with_performance_config(|p| p.broadcast_channel_capacity = 16_384)
        .build_subscriber_client()?;
    let adapter_config = RedisAdapterConfig::default().with_prefix(format!(
        "{}socket.io",
        env_or("REDIS_PREFIX", "bench-bare:")
    ));
    let adapter = RedisAdapterCtr::new_with_fred_config(subscriber, adapter_config).await?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<Adapter>(adapter)
        .build_layer();
    io.ns("/", on_connect).await?;

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
