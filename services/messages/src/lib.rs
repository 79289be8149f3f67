//! The `messages` service: Switchboard's system of record for what is said in rooms.
//!
//! It owns the `messages`, `read_cursors` and `outbox` tables and each room's `last_seq`
//! counter:
//!
//! - **Send** stores a message with the next per-room sequence number, idempotently per
//!   `(sender, room, client_id)`, and writes an outbox entry in the same transaction, so a
//!   stored message always reaches its room even when the gateway node that stored it dies.
//!   Concurrent sends are committed together (group commit, [`batch`]).
//! - **Edit / Delete** change a message (soft delete: the row stays, its content is never
//!   served again) and write `edited` / `deleted` outbox entries.
//! - **MarkRead / ListReceipts** keep forward-only read cursors per `(room, user)`.
//! - **History** pages through a room in either direction.
//! - **ClaimUndelivered / MarkDelivered** let gateway nodes lease and confirm outbox entries.
//! - **SendStream** carries a gateway's sends in batches on one long-lived stream
//!   ([`send_stream`]).
//!
//! It does **not** decide authorization: the gateway asks the membership service first and
//! passes its decisions (e.g. `actor_may_moderate`). This service enforces data rules only
//! (rooms exist, messages belong to the room they are addressed through, senders edit their own
//! messages, edit windows, sizes). Rooms themselves are created by the membership service.

use std::future::Future;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use switchboard_common::config::{ensure, env_or};
use switchboard_proto::messages::messages_server::MessagesServer;

mod batch;
mod grpc;
pub use batch::CHECK_AFTER_IDLE;
pub use grpc::MAX_SENDS_PER_BATCH;
pub mod model;
mod send_stream;
pub mod store;

pub use grpc::MessagesService;
pub use store::Store;

/// The service's settings. `SWITCHBOARD_LISTEN` (default `127.0.0.1:50052`) is read by
/// `main.rs` only: [`run`] serves on a listener it is given.
#[derive(Debug, Clone)]
pub struct Config {
    /// `SWITCHBOARD_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
    pub database_url: String,
    /// `SWITCHBOARD_DB_MAX_CONNECTIONS`, default 20 (more than `send_lanes`: each lane keeps one).
    pub db_max_connections: u32,
    /// `SWITCHBOARD_MAX_CONTENT_CHARS`, default 65536 (at least 1): the longest message content,
    /// counted in Unicode code points. A backstop: dialects enforce their own, smaller limits.
    pub max_content_chars: usize,
    /// `SWITCHBOARD_SEND_LANES`, default 1 (at least 1): how many group-commit batches of
    /// sends are stored at once, each for its own share of the rooms (see [`batch`]). One lane
    /// makes the largest batches, so the fewest commits (docs/benchmarks §22); more lanes
    /// overlap commits, which pays only where one commit's latency bounds the rate.
    pub send_lanes: usize,
    /// `SWITCHBOARD_DB_ACQUIRE_TIMEOUT_MS`, default 1,000: see
    /// [`switchboard_common::db::DEFAULT_ACQUIRE_TIMEOUT`].
    pub db_acquire_timeout: std::time::Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://postgres@127.0.0.1:5432/test".to_string(),
            db_max_connections: 20,
            max_content_chars: 65_536,
            send_lanes: 1,
            db_acquire_timeout: switchboard_common::db::DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl Config {
    /// Defaults, then `SWITCHBOARD_*` environment variables, validated.
    pub fn from_env() -> anyhow::Result<Config> {
        let d = Config::default();
        let config = Config {
            database_url: env_or("DATABASE_URL", d.database_url)?,
            db_max_connections: env_or("DB_MAX_CONNECTIONS", d.db_max_connections)?,
            max_content_chars: env_or("MAX_CONTENT_CHARS", d.max_content_chars)?,
            send_lanes: env_or("SEND_LANES", d.send_lanes)?,
            db_acquire_timeout: switchboard_common::db::acquire_timeout_from_env()?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the service cannot work with.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure(
            !self.database_url.trim().is_empty(),
            "SWITCHBOARD_DATABASE_URL is empty",
        )?;
        ensure(
            self.db_max_connections as usize > self.send_lanes,
            "SWITCHBOARD_DB_MAX_CONNECTIONS must be more than SWITCHBOARD_SEND_LANES (each lane keeps a connection)",
        )?;
        ensure(
            self.max_content_chars >= 1,
            "SWITCHBOARD_MAX_CONTENT_CHARS must be at least 1",
        )?;
        ensure(
            self.send_lanes >= 1,
            "SWITCHBOARD_SEND_LANES must be at least 1",
        )?;
        Ok(())
    }
}

/// Connects to Postgres (failing start-up when it cannot) and serves the `Messages` gRPC service
/// on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(config.db_acquire_timeout)
        .connect(&config.database_url)
        .await
        .with_context(|| {
            format!(
                "connecting to {}",
                switchboard_common::config::redact_url(&config.database_url)
            )
        })?;
    // Send streams outlive any call: told when shutdown starts, they drain and end, and only
    // then can the server's graceful shutdown finish.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let service = MessagesService::new(
        Store::new(pool),
        config.max_content_chars,
        config.send_lanes,
        stopping,
    );
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "messages service listening");
    }
    tonic::transport::Server::builder()
        .trace_fn(switchboard_common::telemetry::grpc_server_span)
        .layer(
            tower::ServiceBuilder::new()
                .map_future(switchboard_common::telemetry::report_server_timing),
        )
        .add_service(MessagesServer::new(service))
        .serve_with_incoming_shutdown(switchboard_common::grpc_incoming(listener), shutdown)
        .await
        .context("serving gRPC")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zero_limits_are_refused() {
        let c = Config {
            max_content_chars: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            db_max_connections: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        // Each lane keeps a connection: something must be left for everything else.
        let c = Config {
            db_max_connections: 2,
            send_lanes: 2,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            switchboard_common::config::redact_url("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
    }
}
