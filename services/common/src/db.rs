//! Postgres failures as domain errors, shared by the services that own tables (feature
//! `postgres`).

use crate::DomainError;

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
