//! The `messages` binary: telemetry, configuration from the environment, then [`run`] on
//! `SWITCHBOARD_LISTEN` (default `127.0.0.1:50052`) until SIGTERM/SIGINT.

use anyhow::Context;
use switchboard_common::config::env_or;
use switchboard_messages::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchboard_common::telemetry::init("messages")?;
    let config = Config::from_env()?;
    let listen: String = env_or("LISTEN", "127.0.0.1:50052".to_string())?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let result = run(listener, config, switchboard_common::shutdown::signal()).await;
    telemetry.shutdown();
    result
}
