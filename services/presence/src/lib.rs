//! The presence service: which users are online (per socket, as TTL'd entries in Redis) and
//! who is typing (with an automatic stop).
//!
//! It owns only Redis state that may be lost: sockets, their expiry, the last broadcast
//! transition of each user, pending (throttled) transitions and typing deadlines. Nothing here
//! is durable; after a Redis loss the gateways' next refreshes and connections rebuild it.
//!
//! # Model
//! - A user is online in a namespace when one of their sockets has an expiry in the future.
//!   `AddSocket` sets the expiry to now + TTL, `Refresh` extends sockets that still exist
//!   (unknown ones are ignored), `RemoveSocket` removes one.
//! - After every change (add, remove, expiry) one atomic script compares the user's state with
//!   the last broadcast one (absent = offline). When they differ it publishes an event, unless
//!   the last broadcast is younger than the throttle; then the transition is scheduled for the
//!   end of the window (delayed, never dropped; it vanishes if the user is back to the broadcast
//!   state by then). So the last broadcast always ends up matching the state, at most one event
//!   per user and window, and replicas never publish twice.
//! - Typing: a start sets a deadline (now + TTL) and reports `changed` only when it was not
//!   already running; a stop removes it and reports `changed` when it was running (the `Typing`
//!   call, through [`typing::TypingBoard`]). The gateways link [`typing::NodeTyping`] instead:
//!   each decides from its own sockets' events, broadcasts them itself and writes the board in
//!   batches. This service publishes only automatic stops.
//! - A sweeper in every replica (every `sweep_interval_ms`) atomically pops expired sockets,
//!   due throttled transitions and passed typing deadlines, so each entry is handled by exactly
//!   one replica. Redis errors there are logged and retried next tick.
//! - Every script reads the time with Redis `TIME`, and the typing board adds an offset read from
//!   it to its host's clock: replicas and gateways share one clock.
//!
//! # Events
//! Published as JSON on `{prefix}presence:events` (`switchboard:presence:events` by default):
//! ```json
//! {"type":"presence","namespace":"/","userId":"u1","status":"online","atMs":1770033600123}
//! {"type":"typing","namespace":"/","roomKind":"channel","roomId":"r1","userId":"u1","typing":false,"atMs":1770033600123}
//! ```
//!
//! Keys are listed in [`scripts`]; validation rules in [`domain`].

mod config;
pub mod domain;
mod grpc;
pub mod scripts;
mod store;
pub mod typing;

use std::{future::Future, sync::Arc};

pub use config::Config;
use switchboard_proto::presence::presence_server::PresenceServer;
use tokio::net::TcpListener;

use crate::{grpc::PresenceService, store::Store};

/// Serves the `Presence` gRPC service on `listener` until `shutdown` resolves, with the sweeper
/// running alongside. Fails at start-up when the configuration is invalid or Redis cannot be
/// reached; later Redis outages only fail the calls made meanwhile (`UNAVAILABLE`).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let store = Arc::new(Store::connect(&config).await?);
    let sweeper = tokio::spawn(sweep_loop(store.clone(), config.sweep_interval()));
    tracing::info!(addr = ?listener.local_addr().ok(), prefix = %config.redis_prefix, "presence serving");

    let result = tonic::transport::Server::builder()
        .trace_fn(switchboard_common::telemetry::grpc_server_span)
        .layer(
            tower::ServiceBuilder::new()
                .map_future(switchboard_common::telemetry::report_server_timing),
        )
        .add_service(PresenceServer::new(PresenceService::new(store.clone())))
        .serve_with_incoming_shutdown(switchboard_common::grpc_incoming(listener), shutdown)
        .await;

    // A sweep interrupted here is harmless: each script runs entirely or not at all.
    sweeper.abort();
    let _ = sweeper.await;
    store.quit().await;
    result?;
    Ok(())
}

async fn sweep_loop(store: Arc<Store>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match store.sweep().await {
            Ok(counts) => {
                if failing {
                    tracing::info!("presence sweeper recovered");
                    failing = false;
                }
                if counts != store::SweepCounts::default() {
                    tracing::debug!(?counts, "presence sweep");
                }
            }
            Err(e) => {
                // Logged once per outage at warn level, then quietly retried every tick.
                if !failing {
                    tracing::warn!(error = %e, "presence sweep failed; retrying every tick");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, "presence sweep failed again");
                }
            }
        }
    }
}
