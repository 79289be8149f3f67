//! `gateway`: one stateless gateway node (see the library for what it does).

use switchboard_common::{config::env_or, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("switchboard-gateway")?;
    let config = switchboard_gateway::Config::from_env()?;
    let addr: String = env_or("LISTEN", "127.0.0.1:3000".to_string())?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let result = switchboard_gateway::run(listener, config, shutdown::signal()).await;
    telemetry.shutdown();
    result
}
