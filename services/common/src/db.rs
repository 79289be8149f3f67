//! Postgres failures as domain errors, shared by the services that own tables (feature
//! `postgres`).

use std::time::Duration;

use crate::DomainError;

/// How long a request waits for a pooled Postgres connection by default: while Postgres is
/// unreachable, every request that needs it fails within this (as `UNAVAILABLE`) instead of
/// holding its caller for the gRPC deadline; under load no healthy request waits this long.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// `SWITCHBOARD_DB_ACQUIRE_TIMEOUT_MS`, or [`DEFAULT_ACQUIRE_TIMEOUT`].
pub fn acquire_timeout_from_env() -> anyhow::Result<Duration> {
    let ms = crate::config::env_or(
        "DB_ACQUIRE_TIMEOUT_MS",
        DEFAULT_ACQUIRE_TIMEOUT.as_millis() as u64,
    )?;
    crate::config::ensure(ms > 0, "SWITCHBOARD_DB_ACQUIRE_TIMEOUT_MS must be positive")?;
    Ok(Duration::from_millis(ms))
}

/// Maps a database error: connection problems (I/O, TLS, pool timeout or closed, a crashed
/// worker, and the server-side "connection exception" / "shutting down" / "cannot connect now"
/// states) become `Unavailable`, everything else `Internal`. Both log the cause; clients never
/// see it.
pub fn db_error(e: sqlx::Error) -> DomainError {
    let connection_problem = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"),
        _ => false,
    };
    if connection_problem {
        DomainError::unavailable(e)
    } else {
        DomainError::internal(e)
    }
}
