//! Redis connections (fred, the one Redis client): a command client (sessions, rate windows)
//! and the pub/sub client of the Socket.IO adapter.
//!
//! socketioxide-redis does not resubscribe by itself after Redis restarts; `manage_subscriptions`
//! makes fred re-issue every tracked (S)SUBSCRIBE on reconnect, so no node stays an island.
//! A command timeout keeps emits and checks from hanging while Redis is away: they fail fast
//! and the caller answers an error (or, for broadcasts, the outbox redelivers later).

use std::time::Duration;

use fred::{
    clients::SubscriberClient,
    prelude::{Builder, Client, ClientLike, Config as FredConfig, ReconnectPolicy},
    types::RespVersion,
};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn builder(url: &str) -> anyhow::Result<Builder> {
    let mut config = FredConfig::from_url(url)?;
    // The adapter's driver needs RESP3 (sharded pub/sub push messages).
    config.version = RespVersion::RESP3;
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.max_command_attempts = 2;
        })
        // Retry for ever, 100 ms doubling up to 2 s: Redis coming back is picked up within seconds.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    Ok(builder)
}

/// A connected command client.
pub async fn command_client(url: &str) -> anyhow::Result<Client> {
    let client = builder(url)?.build()?;
    client.init().await?;
    Ok(client)
}

/// A pub/sub client (the adapter's driver calls `init`). Call `manage_subscriptions` on it once
/// it has subscribed to something: started earlier, fred re-issues an empty SUBSCRIBE on the
/// first connection, which Redis refuses.
pub fn subscriber_client(url: &str) -> anyhow::Result<SubscriberClient> {
    Ok(builder(url)?.build_subscriber_client()?)
}
