//! The `membership` binary: telemetry, configuration, `SWITCHBOARD_LISTEN`, then [`run`].

use std::net::SocketAddr;

use anyhow::Context;
use switchboard_membership::{Config, DEFAULT_LISTEN, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchboard_common::telemetry::init("membership")?;
    let config = Config::from_env()?;
    let listen: SocketAddr = switchboard_common::config::env_or("LISTEN", DEFAULT_LISTEN.parse()?)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let result = run(listener, config, switchboard_common::shutdown::signal()).await;
    telemetry.shutdown();
    result
}
