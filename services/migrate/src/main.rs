//! `switchboard-migrate`: applies `migrations/` to `SWITCHBOARD_DATABASE_URL` and exits.

use switchboard_common::config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = switchboard_common::telemetry::init("switchboard-migrate")?;
    let url: String = config::env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test".to_string())?;
    switchboard_migrate::migrate(&url).await?;
    tracing::info!(database = %switchboard_migrate::redact(&url), "migrations applied");
    Ok(())
}
