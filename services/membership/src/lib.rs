//! The membership service owns Switchboard's users, rooms (a hierarchy: a room may have a parent
//! room), memberships with roles, and the RBAC decisions made from them. It is the only writer of
//! the `users` and `memberships` tables and of the descriptive columns of `rooms` (the messages
//! service owns `rooms.last_seq`).
//!
//! - [`Config`]: settings from `SWITCHBOARD_*` variables, validated at start-up.
//! - [`run`]: serves the `switchboard.membership.v1.Membership` gRPC service on a bound listener.
//! - [`roles`]: the role → permission table. [`domain`]: validated types. [`store`]: the SQL.
//!
//! RBAC: membership of a room grants access to all its descendants; a user's roles on a room and
//! its ancestors are all consulted (any one granting the action allows it), and the nearest one
//! is reported as the effective role.

use std::{future::Future, time::Duration};

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use switchboard_common::config::{ensure, env_opt, env_or};
use switchboard_proto::membership::membership_server::MembershipServer;

pub mod domain;
pub mod roles;
pub mod service;
pub mod store;

pub use roles::{Permission, RoleTable};
pub use service::MembershipService;
pub use store::Store;

/// The default address of `SWITCHBOARD_LISTEN` (read by the binary only).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// The service's settings.
#[derive(Clone)]
pub struct Config {
    /// `SWITCHBOARD_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
    pub database_url: String,
    /// `SWITCHBOARD_DB_MAX_CONNECTIONS`, default 10, at least 1.
    pub db_max_connections: u32,
    /// `SWITCHBOARD_ROLE_PERMISSIONS` (`role=perm,perm;role=perm`), replacing
    /// [`RoleTable::default`] when set.
    pub roles: RoleTable,
    /// `SWITCHBOARD_DB_ACQUIRE_TIMEOUT_MS`, default 1,000: see
    /// [`switchboard_common::db::DEFAULT_ACQUIRE_TIMEOUT`].
    pub db_acquire_timeout: Duration,
}

impl Config {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            database_url: database_url.into(),
            db_max_connections: 10,
            roles: RoleTable::default(),
            db_acquire_timeout: switchboard_common::db::DEFAULT_ACQUIRE_TIMEOUT,
        }
    }

    /// Reads and validates the environment.
    pub fn from_env() -> anyhow::Result<Config> {
        let database_url: String = env_or(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/test".to_string(),
        )?;
        let db_max_connections: u32 = env_or("DB_MAX_CONNECTIONS", 10)?;
        ensure(
            db_max_connections >= 1,
            "SWITCHBOARD_DB_MAX_CONNECTIONS must be at least 1",
        )?;
        let roles: RoleTable = env_opt("ROLE_PERMISSIONS")?.unwrap_or_default();
        Ok(Config {
            database_url,
            db_max_connections,
            roles,
            db_acquire_timeout: switchboard_common::db::acquire_timeout_from_env()?,
        })
    }
}

/// Connects to Postgres (failing at start when it is unreachable) and serves the gRPC service
/// on `listener` until `shutdown` resolves, then finishes in-flight requests and closes the pool.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(config.db_acquire_timeout)
        .connect(&config.database_url)
        .await
        .context("connecting to Postgres")?;
    tracing::info!(
        addr = ?listener.local_addr().ok(),
        roles = ?config.roles.role_names(),
        "membership service listening"
    );
    let service = MembershipService::new(Store::new(pool.clone()), config.roles);
    let result = tonic::transport::Server::builder()
        .trace_fn(switchboard_common::telemetry::grpc_server_span)
        .layer(
            tower::ServiceBuilder::new()
                .map_future(switchboard_common::telemetry::report_server_timing),
        )
        .add_service(MembershipServer::new(service))
        .serve_with_incoming_shutdown(switchboard_common::grpc_incoming(listener), shutdown)
        .await
        .context("serving gRPC");
    pool.close().await;
    result
}
