//! Redis connections (fred, the one Redis client): a command client (sessions, rate windows)
//! and the pub/sub client of the Socket.IO adapter.
//!
//! socketioxide-redis does not resubscribe by itself after Redis restarts; [`keep_subscribed`]
//! re-issues every tracked (S)SUBSCRIBE on reconnect, so no node stays an island.
//! A command timeout keeps emits and checks from hanging while Redis is away: they fail fast
//! and the caller answers an error (or, for broadcasts, the outbox redelivers later).

use std::time::Duration;

use fred::{
    clients::SubscriberClient,
    prelude::{
        Builder, Client, ClientLike, Config as FredConfig, EventInterface, PubsubInterface,
        ReconnectPolicy,
    },
    types::RespVersion,
};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Pub/sub messages a subscriber may fall behind by before it loses some.
const PUBSUB_BUFFER: usize = 16_384;

fn builder(url: &str) -> anyhow::Result<Builder> {
    let mut config = FredConfig::from_url(url)?;
    // The adapter's driver needs RESP3 (sharded pub/sub push messages).
    config.version = RespVersion::RESP3;
    let mut builder = Builder::from_config(config);
    builder
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            // Pub/sub messages reach the adapter (and the presence-events reader) through a
            // broadcast channel of this many slots; a reader that falls further behind *loses*
            // messages. fred's default (32) dropped broadcasts at 1,000 sends/s (load-tests).
            p.broadcast_channel_capacity = PUBSUB_BUFFER;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.max_command_attempts = 2;
            // Commands from many tasks share one connection: Nagle would hold small writes
            // back until the previous reply is ACKed.
            c.tcp.nodelay = Some(true);
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

/// A pub/sub client (the adapter's driver calls `init`). Pair it with [`keep_subscribed`].
pub fn subscriber_client(url: &str) -> anyhow::Result<SubscriberClient> {
    Ok(builder(url)?.build_subscriber_client()?)
}

/// Re-subscribes every channel the client tracks after each reconnect, retrying until it
/// succeeds. fred's own `manage_subscriptions` sends `SUBSCRIBE` even with no plain channels
/// (the adapter only has sharded ones), Redis refuses that, and the shard channels are then
/// never re-subscribed: the node would stay an island.
/// `on_reconnect` runs when the connection comes back and again once re-subscribed.
pub fn keep_subscribed(
    client: &SubscriberClient,
    on_reconnect: impl Fn() + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut reconnects = client.reconnect_rx();
        loop {
            match reconnects.recv().await {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
            on_reconnect();
            for attempt in 1.. {
                match resubscribe(&client).await {
                    Ok(n) => {
                        tracing::info!(channels = n, "re-subscribed after Redis reconnect");
                        on_reconnect();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "re-subscribe failed; retrying");
                        tokio::time::sleep(Duration::from_millis(250 * attempt.min(8))).await;
                    }
                }
            }
        }
    })
}

async fn resubscribe(client: &SubscriberClient) -> Result<usize, fred::error::Error> {
    let channels: Vec<String> = client
        .tracked_channels()
        .iter()
        .map(|c| c.to_string())
        .collect();
    let shard: Vec<String> = client
        .tracked_shard_channels()
        .iter()
        .map(|c| c.to_string())
        .collect();
    if !channels.is_empty() {
        client.subscribe(channels.clone()).await?;
    }
    // One at a time: channels of different hash slots may not share an SSUBSCRIBE.
    for c in &shard {
        client.ssubscribe(c.as_str()).await?;
    }
    Ok(channels.len() + shard.len())
}

/// The Redis unit tests use: `SWITCHBOARD_TEST_REDIS_URL`, else the local default.
#[cfg(test)]
pub(crate) fn test_url() -> String {
    std::env::var("SWITCHBOARD_TEST_REDIS_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}
