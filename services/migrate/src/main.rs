//! `switchboard-migrate`: applies `migrations/` to `SWITCHBOARD_DATABASE_URL` and exits.
//! `switchboard-migrate drop-test-databases` removes the throwaway databases of test runs.

use switchboard_common::config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = switchboard_common::telemetry::init("switchboard-migrate")?;
    let url: String = config::env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test".to_string(),
    )?;
    if std::env::args().nth(1).as_deref() == Some("drop-test-databases") {
        let n = switchboard_migrate::drop_test_databases(&url).await?;
        tracing::info!(count = n, "dropped test databases");
        return Ok(());
    }
    switchboard_migrate::migrate(&url).await?;
    tracing::info!(database = %switchboard_migrate::redact(&url), "migrations applied");
    Ok(())
}
