//! A stateless gateway node. It terminates Socket.IO (WebSocket and long-polling) for every
//! mounted dialect, authenticates handshakes, fans events out to every node through the Redis
//! adapter (stored ones through the delivery log, a Redis stream), serves the integration API,
//! and reaches state only through the services' gRPC APIs. Any node can die: clients reconnect
//! to another and recover their session, stored messages are redelivered from the outbox, and
//! presence expires by TTL.

pub(crate) mod auth;
pub(crate) mod authz;
pub(crate) mod background;
pub(crate) mod batch;
pub(crate) mod clients;
pub mod config;
pub(crate) mod core;
pub(crate) mod delivery_log;
pub(crate) mod dialect;
pub(crate) mod events;
pub(crate) mod fanout;
pub(crate) mod files;
pub(crate) mod handshakes;
pub(crate) mod head;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod pubsub;
pub(crate) mod rate;
pub(crate) mod recovery;
pub(crate) mod redis;
pub(crate) mod send_forwarder;
pub(crate) mod send_stream;
pub(crate) mod serve;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use serde_json::Value;
use socketioxide::{
    SocketIo,
    extract::{SocketRef, TryData},
    handler::ConnectHandler,
    socket::{DisconnectReason, Sid},
};
use socketioxide_redis::RedisAdapterCtr;
use switchboard_common::ErrorCode;
use switchboard_proto::presence as pp;
use tokio::net::TcpListener;

pub use crate::config::Config;
/// The Redis pub/sub connection the gateway's Socket.IO adapter runs on; also used by the
/// benchmarks' bare peer (`load-tests/bare-peer`), so that it runs on the same settings.
pub use crate::redis::subscriber_client as redis_subscriber_client;
use crate::{
    auth::{AuthFailure, Authenticator, Credentials, Identity},
    clients::Clients,
    core::{Core, session_room, user_room},
    delivery_log::DeliveryLog,
    dialect::Mount,
    fanout::{Adapter, Fanout},
    metrics::Metrics,
    recovery::{Claim, Recovery, Replay},
};

/// A socket this node holds, for presence refreshes.
#[derive(Debug, Clone)]
struct LocalSocket {
    namespace: Arc<str>,
    user_id: Arc<str>,
    /// Its namespace's presence TTL (0: the presence service's default).
    presence_ttl_ms: i64,
    /// The private id of its recovery session (none when recovery is off).
    pid: Option<Arc<str>>,
}

/// Everything a node shares between its sockets, its API and its background tasks.
pub struct Gateway {
    pub config: Arc<Config>,
    pub core: Core,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub redis: fred::prelude::Client,
    pub(crate) files: files::FileStore,
    draining: AtomicBool,
    sockets: Mutex<HashMap<Sid, LocalSocket>>,
    /// Sockets whose handshake was refused by a contract that says so after connecting, with
    /// what they are told (taken by the connect handler right after the middleware).
    refused: Mutex<HashMap<Sid, dialect::Emit>>,
    recovery: Recovery,
    /// Sockets whose session was recovered at the handshake, with what they are replayed (taken
    /// by the connect handler).
    replays: Mutex<HashMap<Sid, Replay>>,
    /// Handshakes that recorded presence and whose socket is not yet in its namespace.
    pub(crate) handshakes: handshakes::Handshakes,
    /// Limits the gRPC calls made in bulk behind the clients' backs (see
    /// [`BACKGROUND_CALLS_IN_FLIGHT`]).
    pub background_calls: tokio::sync::Semaphore,
}

/// At most this many background gRPC calls of one node are in flight: presence removals of
/// closed sockets and the contact lookups of presence transitions. When thousands of sockets
/// close at once (a load balancer drops them, a client fleet restarts), unbounded, these calls
/// broke the gRPC channels ("transport error") for the handshakes and `room:join`s of clients
/// connecting meanwhile: 200 of 19,000 joins failed in a benchmark started right after 10,000
/// disconnects. None of them is urgent (an unremoved socket expires by TTL); waiting costs a
/// parked future each.
const BACKGROUND_CALLS_IN_FLIGHT: usize = 32;

/// The contract's refusal: `connect_error` with `message` = the code.
#[derive(Debug)]
struct HandshakeRefused(&'static str);

impl std::fmt::Display for HandshakeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Gateway {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn socket_ref(&self, namespace: &str, s: &SocketRef<Adapter>, user_id: &str) -> pp::SocketRef {
        pp::SocketRef {
            namespace: namespace.to_string(),
            user_id: user_id.to_string(),
            socket_id: s.id.to_string(),
        }
    }

    /// Handshake authentication shared by every dialect, with the credentials it accepts.
    async fn authenticate(
        &self,
        s: &SocketRef<Adapter>,
        auth: Option<&Value>,
        accepted: Credentials,
    ) -> Result<Identity, AuthFailure> {
        let parts = s.req_parts();
        let auth_token = auth.and_then(|a| a.get("token")).and_then(|t| t.as_str());
        let query_token = parts.uri.query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == "token").then(|| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
        });
        let header = |name: ::http::header::HeaderName| {
            parts.headers.get(name).and_then(|v| v.to_str().ok())
        };
        self.auth
            .authenticate(
                accepted,
                auth_token,
                query_token.as_deref(),
                header(::http::header::COOKIE),
                header(::http::header::ORIGIN),
            )
            .await
    }

    /// After a successful handshake, still before the client hears `connect`: personal and
    /// session rooms, presence (which enforces the per-user cap of sockets, cluster-wide), the
    /// dialect's handlers and the disconnect hook. Doing this before the CONNECT packet leaves
    /// no window in which an early event finds no handler or a quick close finds no disconnect
    /// hook (which would leave a ghost socket online).
    async fn on_authenticated(
        self: &Arc<Self>,
        mount: &Mount,
        s: &SocketRef<Adapter>,
        identity: &Identity,
        claim: Option<Claim>,
    ) -> Result<(), AuthFailure> {
        let namespace = &*mount.namespace;
        let presence_ttl_ms = mount
            .dialect
            .presence_ttl()
            .map_or(0, |t| t.as_millis() as i64);
        let recovered = match claim {
            Some(claim) if self.recovery.enabled() => {
                let found = self.recover(namespace, identity, &claim).await;
                self.metrics.recovery(if found.is_some() {
                    "recovered"
                } else {
                    "new_session"
                });
                found.map(|(session, replay)| (claim.pid, session, replay))
            }
            _ => None,
        };
        // The personal rooms first: recording presence announces the user online, and some
        // contracts send that to the user's own room too, this socket included. A recovered
        // socket joins every room once it has been replayed what it missed.
        if recovered.is_none() {
            for room in personal_rooms(identity) {
                s.join(room);
            }
        }
        let req = pp::AddSocketRequest {
            socket: Some(self.socket_ref(namespace, s, &identity.user_id)),
            node_id: self.config.node_id.clone(),
            user_agent: s
                .req_parts()
                .headers
                .get(::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(256).collect()),
            ip: serve::peer(s.req_parts()).map(|a| a.ip().to_string()),
            ttl_ms: presence_ttl_ms,
            max_user_sockets: self.config.max_sockets_per_user,
        };
        let clients = &self.core.clients;
        // Ended by the connect handler, once the socket is in its namespace.
        self.handshakes
            .begin(namespace, &identity.user_id, s.id.as_str());
        match clients
            .call(
                "presence",
                "AddSocket",
                clients.presence.clone().add_socket(req),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::RateLimited => {
                self.handshakes
                    .end(namespace, &identity.user_id, s.id.as_str());
                s.leave_all();
                return Err(AuthFailure::TooManyConnections);
            }
            // The connection still works (uncapped); the user shows offline until they
            // reconnect.
            Err(e) => tracing::warn!(error = %e, "presence not recorded"),
        }
        let pid = if self.recovery.enabled() {
            Some(self.open_session(namespace, s, identity, recovered).await)
        } else {
            None
        };
        // One copy of the user's id for the socket's registry entry and its event handler; the
        // namespace's is the mount's.
        let user: Arc<str> = Arc::from(identity.user_id.as_str());
        events::register(self, s, user.clone(), mount);
        self.metrics.connections.inc();
        self.sockets.lock().expect("socket registry").insert(
            s.id,
            LocalSocket {
                namespace: mount.namespace.clone(),
                user_id: user,
                presence_ttl_ms,
                pid,
            },
        );
        let gw = self.clone();
        s.on_disconnect(
            move |s: SocketRef<Adapter>, reason: DisconnectReason| async move {
                gw.metrics.connections.dec();
                // The variant's name: a stable label (the Display text is a sentence).
                gw.metrics.disconnect(&format!("{reason:?}"));
                let local = gw.sockets.lock().expect("socket registry").remove(&s.id);
                gw.replays.lock().expect("replays").remove(&s.id);
                // Registered before this handler was set, and removed only here.
                let Some(local) = local else {
                    return;
                };
                if let Some(pid) = &local.pid {
                    gw.recovery
                        .closed(&gw.redis, pid, recoverable(reason))
                        .await;
                }
                let req = pp::RemoveSocketRequest {
                    socket: Some(gw.socket_ref(&local.namespace, &s, &local.user_id)),
                };
                let Ok(_in_flight) = gw.background_calls.acquire().await else {
                    return;
                };
                let clients = &gw.core.clients;
                if let Err(e) = clients
                    .call(
                        "presence",
                        "RemoveSocket",
                        clients.presence.clone().remove_socket(req),
                    )
                    .await
                {
                    tracing::warn!(error = %e, "presence removal failed (expires by TTL)");
                }
            },
        );
        Ok(())
    }

    /// Extends the presence TTL of one socket (on `presence:ping`).
    pub async fn refresh_presence_of(&self, s: &SocketRef<Adapter>) {
        let Some(entry) = self
            .sockets
            .lock()
            .expect("socket registry")
            .get(&s.id)
            .cloned()
        else {
            return;
        };
        let req = pp::RefreshRequest {
            sockets: vec![self.socket_ref(&entry.namespace, s, &entry.user_id)],
            ttl_ms: entry.presence_ttl_ms,
        };
        let clients = &self.core.clients;
        if let Err(e) = clients
            .call("presence", "Refresh", clients.presence.clone().refresh(req))
            .await
        {
            tracing::debug!(error = %e, "presence refresh failed");
        }
    }

    /// A socket joined a room through its dialect: its recovery session remembers it.
    pub(crate) async fn session_joined(&self, s: &SocketRef<Adapter>, room: &str) {
        if let Some(pid) = self.pid_of(s) {
            let at = self.core.fanout.position();
            self.recovery.joined(&self.redis, &pid, room, at).await;
        }
    }

    /// A socket left a room through its dialect.
    pub(crate) async fn session_left(&self, s: &SocketRef<Adapter>, room: &str) {
        if let Some(pid) = self.pid_of(s) {
            self.recovery.left(&self.redis, &pid, room).await;
        }
    }

    fn pid_of(&self, s: &SocketRef<Adapter>) -> Option<Arc<str>> {
        self.sockets
            .lock()
            .expect("socket registry")
            .get(&s.id)
            .and_then(|l| l.pid.clone())
    }

    /// The recovery sessions of this node's sockets.
    fn local_pids(&self) -> Vec<Arc<str>> {
        self.sockets
            .lock()
            .expect("socket registry")
            .values()
            .filter_map(|l| l.pid.clone())
            .collect()
    }

    /// Every socket this node holds, as presence references grouped by presence TTL.
    fn local_sockets(&self) -> HashMap<i64, Vec<pp::SocketRef>> {
        let mut by_ttl: HashMap<i64, Vec<pp::SocketRef>> = HashMap::new();
        for (id, s) in self.sockets.lock().expect("socket registry").iter() {
            by_ttl
                .entry(s.presence_ttl_ms)
                .or_default()
                .push(pp::SocketRef {
                    namespace: s.namespace.to_string(),
                    user_id: s.user_id.to_string(),
                    socket_id: id.to_string(),
                });
        }
        by_ttl
    }
}

/// The rooms a socket joins for who it is: its user's, and its session's when it has one.
pub(crate) fn personal_rooms(identity: &Identity) -> Vec<String> {
    let mut rooms = vec![user_room(&identity.user_id)];
    if let Some(sid) = &identity.session_id {
        rooms.push(session_room(sid));
    }
    rooms
}

/// Whether a socket closed this way may be recovered: its connection was lost, or its node is
/// draining. A client that disconnected, or a socket the server put out, may not.
fn recoverable(reason: DisconnectReason) -> bool {
    !matches!(
        reason,
        DisconnectReason::ClientNSDisconnect | DisconnectReason::ServerNSDisconnect
    )
}

/// Mounts a dialect's namespace with the shared handshake in front of it.
async fn mount_dialect(
    gw: &Arc<Gateway>,
    io: &SocketIo<Adapter>,
    mount: Mount,
) -> anyhow::Result<()> {
    let namespace = mount.namespace.clone();
    let auth_gw = gw.clone();
    let auth_mount = mount.clone();
    let middleware = move |s: SocketRef<Adapter>, TryData(auth): TryData<Value>| {
        let gw = auth_gw.clone();
        let mount = auth_mount.clone();
        async move {
            let dialect = &mount.dialect;
            let auth = auth.ok();
            let outcome = if gw.is_draining() {
                Err(AuthFailure::Unavailable)
            } else {
                gw.authenticate(&s, auth.as_ref(), dialect.credentials())
                    .await
            };
            let outcome = match outcome {
                Ok(identity) => {
                    let claim = Claim::of(auth.as_ref());
                    gw.on_authenticated(&mount, &s, &identity, claim).await
                }
                Err(why) => Err(why),
            };
            match outcome {
                Ok(()) => Ok(()),
                Err(why) => {
                    tracing::info!(?why, dialect = dialect.name(), "handshake refused");
                    gw.metrics.error(dialect.refusal(why));
                    // Contracts that refuse with an event accept the connection, say why once
                    // it is up, then disconnect (see the connect handler).
                    if let Some(notice) = dialect.refusal_after_connect(why) {
                        gw.refused
                            .lock()
                            .expect("refused handshakes")
                            .insert(s.id, notice);
                        return Ok(());
                    }
                    Err(HandshakeRefused(dialect.refusal(why)))
                }
            }
        }
    };
    // Everything else happens in the middleware, before the client hears `connect`; what the
    // contract says right after connecting is sent once it has.
    let connect_gw = gw.clone();
    let on_connect = move |s: SocketRef<Adapter>| {
        let dialect = mount.dialect.clone();
        let gw = connect_gw.clone();
        async move {
            let refused = gw.refused.lock().expect("refused handshakes").remove(&s.id);
            if let Some(notice) = refused {
                let _ = s.emit(notice.event, &notice.data);
                s.disconnect().ok();
                return;
            }
            let user: Option<(Arc<str>, Arc<str>)> = gw
                .sockets
                .lock()
                .expect("socket registry")
                .get(&s.id)
                .map(|e| (e.namespace.clone(), e.user_id.clone()));
            let Some((namespace, user)) = user else {
                return;
            };
            gw.handshakes.end(&namespace, &user, s.id.as_str());
            let replay = gw.replays.lock().expect("replays").remove(&s.id);
            if let Some(replay) = replay {
                gw.replay(&s, replay).await;
            }
            for e in dialect.connected(&gw.core, &user).await {
                if let Err(err) = s.emit(e.event, &e.data) {
                    tracing::debug!(error = %err, event = e.event, "connect notice not sent");
                }
            }
        }
    };
    io.ns(namespace.to_string(), on_connect.with(middleware))
        .await?;
    Ok(())
}

/// Runs a gateway node on `listener` until `shutdown` resolves, then drains: not ready, tell
/// sockets to reconnect elsewhere, close them, stop.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    if config.dev_mode {
        tracing::warn!(
            development_values = ?config.dev_defaults,
            admin_token = config::DEV_ADMIN_TOKEN,
            "SWITCHBOARD_DEV_MODE is on: secrets may be short or well-known development values \
             (anyone can mint tokens and cookies with those); never run it in production"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let redis_client = redis::command_client(&config.redis_url).await?;
    let subscriber = redis::subscriber_client(&config.redis_url)?;
    let adapter_config = socketioxide_redis::RedisAdapterConfig::default()
        .with_prefix(format!("{}socket.io", config.redis_prefix))
        .with_request_timeout(std::time::Duration::from_secs(2));
    let driver = pubsub::PacedDriver::start(subscriber.clone(), config.publish_linger).await?;
    let adapter = RedisAdapterCtr::new_with_driver(driver, adapter_config);
    // One cap for every way a packet arrives: long-polling bodies, WebSocket frames and
    // messages. No contract uses binary attachments, so a packet announcing any is refused
    // (and its connection closed) instead of buffering up to the library's 10,000.
    let ws_cap = usize::try_from(config.max_payload_bytes).unwrap_or(usize::MAX);
    let (layer, io) = SocketIo::builder()
        .max_payload(config.max_payload_bytes)
        .ws_max_message_size(ws_cap)
        .ws_max_frame_size(ws_cap)
        .with_parser(
            socketioxide::ParserConfig::common()
                .max_incoming_binaries(0)
                .max_incoming_binary_buf_size(0),
        )
        .ws_read_buffer_size(config.ws_read_buffer_bytes)
        .with_adapter::<Adapter>(adapter)
        .build_layer();

    let mounts = dialect::mount(&config.dialects)?;
    for m in &mounts {
        if let Some(ttl) = m.dialect.presence_ttl() {
            anyhow::ensure!(
                ttl > config.presence_refresh,
                "the {} dialect's presence TTL ({ttl:?}) must exceed SWITCHBOARD_PRESENCE_REFRESH_MS ({:?})",
                m.dialect.name(),
                config.presence_refresh
            );
        }
    }
    let namespaces = mounts.iter().map(|m| m.namespace.to_string()).collect();
    let recovery = Recovery::new(
        &config.redis_prefix,
        config.recovery_window,
        config.presence_refresh,
    );
    let fanout = Arc::new(Fanout::new(
        io.clone(),
        metrics.clone(),
        namespaces,
        DeliveryLog::new(&config.redis_prefix, config.delivery_log_entries),
        redis_client.clone(),
        recovery.enabled(),
    ));
    let clients = Clients::new(&config, metrics.clone())?;
    let core = Core::new(
        clients,
        fanout,
        mounts.clone(),
        redis_client.clone(),
        config.clone(),
    );
    let auth = Authenticator::new(&config, redis_client.clone())?;
    let gw = Arc::new(Gateway {
        config: config.clone(),
        core,
        auth,
        metrics,
        redis: redis_client,
        files: files::FileStore::open(&config)?,
        draining: AtomicBool::new(false),
        sockets: Mutex::new(HashMap::new()),
        refused: Mutex::new(HashMap::new()),
        recovery,
        replays: Mutex::new(HashMap::new()),
        handshakes: handshakes::Handshakes::default(),
        background_calls: tokio::sync::Semaphore::new(BACKGROUND_CALLS_IN_FLIGHT),
    });
    for m in mounts {
        tracing::info!(dialect = m.dialect.name(), namespace = %m.namespace, "dialect mounted");
        mount_dialect(&gw, &io, m).await?;
    }
    // Now that the adapter has subscribed its channels, re-subscribe them after every reconnect.
    let recovering = gw.core.fanout.clone();
    let window = config.redis_recovery_window;
    let resubscriber =
        redis::keep_subscribed(&subscriber, move || recovering.mark_recovering(window));

    let tasks = background::spawn_all(gw.clone()).await?;
    let app = http::router(gw.clone())
        .layer(layer)
        // Before socketioxide sees the request: idle sockets must not pin hyper's read buffer.
        .layer(axum::middleware::map_request(head::compact_engine_io_head))
        .layer(http::cors(&config));
    let addr = listener.local_addr()?;
    tracing::info!(%addr, node = %config.node_id, "gateway listening");

    let drain_gw = gw.clone();
    let drain_io = io.clone();
    let limits = serve::HttpLimits {
        head_timeout: config.request_head_timeout,
        max_head_bytes: config.max_request_head_bytes,
        connections_per_address: config.max_connections_per_address,
    };
    serve::serve(listener, app, limits, gw.metrics.clone(), async move {
        shutdown.await;
        drain_gw.draining.store(true, Ordering::Relaxed);
        tracing::info!("draining: asking clients to reconnect elsewhere");
        for ns in drain_gw.core.fanout.namespaces() {
            if let Some(op) = drain_io.of(&ns) {
                let _ = op
                    .local()
                    .emit("server:draining", &serde_json::json!({ "reconnect": true }))
                    .await;
            }
        }
        tokio::time::sleep(drain_gw.config.drain_grace).await;
        // Closing the transports (not a namespace disconnect) makes clients reconnect.
        drain_io.close().await;
    })
    .await?;
    for t in tasks {
        t.abort();
    }
    resubscriber.abort();
    tracing::info!("gateway stopped");
    Ok(())
}
