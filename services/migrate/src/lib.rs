//! The schema: `migrations/` embedded at build time, applied once per deployment by the
//! `switchboard-migrate` binary (a Helm pre-install/pre-upgrade job, or `make migrate`), never by
//! every replica racing at start-up. Also creates throwaway databases for integration tests.

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection, migrate::Migrator};

/// Every migration in `migrations/`.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies pending migrations to the database at `database_url`.
pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(database_url)
        .await
        .with_context(|| format!("connecting to {}", redact(database_url)))?;
    MIGRATOR
        .run(&mut conn)
        .await
        .context("applying migrations")?;
    Ok(())
}

/// Creates a fresh, migrated database next to the one at `database_url` and answers its URL.
/// Integration tests use one per test so they never see each other's rows.
pub async fn create_test_database(database_url: &str) -> anyhow::Result<String> {
    let name = format!("sb_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(database_url)
        .await
        .with_context(|| format!("connecting to {}", redact(database_url)))?;
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .context("creating test database")?;
    let url = with_database(database_url, &name);
    migrate(&url).await?;
    Ok(url)
}

/// Drops every database made by [`create_test_database`] on the server of `database_url`
/// (run before a test suite, so throwaway databases do not pile up). Answers how many.
pub async fn drop_test_databases(database_url: &str) -> anyhow::Result<usize> {
    let mut admin = PgConnection::connect(database_url)
        .await
        .with_context(|| format!("connecting to {}", redact(database_url)))?;
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'sb\\_test\\_%'")
            .fetch_all(&mut admin)
            .await?;
    for (name,) in &names {
        admin
            .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
            .await
            .with_context(|| format!("dropping {name}"))?;
    }
    Ok(names.len())
}

/// `postgres://u@h:5432/db?x` → the same URL naming database `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // The path starts after the authority (the first '/' after "scheme://").
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

pub use switchboard_common::config::redact_url as redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/test", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
