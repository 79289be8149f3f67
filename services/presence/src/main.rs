//! The `presence` binary: see the library docs.

use std::net::SocketAddr;

use switchboard_common::config::env_or;
use switchboard_presence::{Config, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = switchboard_common::telemetry::init("presence")?;
    let config = Config::from_env()?;
    let addr: SocketAddr = env_or("LISTEN", "127.0.0.1:50053".parse()?)?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let result = run(listener, config, switchboard_common::shutdown::signal()).await;
    telemetry.shutdown();
    result
}
