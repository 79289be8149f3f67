//! Redis access: one fred client (multiplexed, reconnecting forever, every command bounded by a
//! timeout so callers never hang while Redis is away) and the Lua scripts of [`crate::scripts`],
//! loaded once at start-up and run with `EVALSHA`, falling back to `EVAL` on `NOSCRIPT` (after a
//! Redis restart or `SCRIPT FLUSH`; `EVAL` caches the script again).

use std::time::Duration;

use fred::{
    error::{Error as RedisError, ErrorKind},
    prelude::*,
    types::{FromValue, config::ReconnectPolicy},
};
use serde::Deserialize;
use switchboard_common::{DomainError, ErrorCode};

use crate::{
    Config,
    domain::{
        NewSocket, PresenceQuery, Refresh, SocketInfo, SocketKey, TypingChange, UserPresence,
    },
    scripts,
    typing::TypingBoard,
};

/// Every command fails after this long instead of waiting for a reconnection.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Refresh batches larger than this are sent as several script calls.
const REFRESH_CHUNK: usize = 1_000;
/// At most this many batches of one kind per sweep tick, so one tick stays short.
const MAX_BATCHES_PER_TICK: u32 = 20;

struct Script {
    source: String,
    sha: String,
}

/// What one sweep tick popped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepCounts {
    pub expired: u64,
    pub pending: u64,
    pub typing: u64,
}

/// The Redis side of the service.
pub struct Store {
    client: Client,
    prefix: String,
    ttl_ms: u64,
    throttle_ms: u64,
    typing_ttl_ms: u64,
    add: Script,
    remove: Script,
    refresh: Script,
    get: Script,
    typing: TypingBoard,
    sweep_expired: Script,
    sweep_pending: Script,
    sweep_typing: Script,
}

/// Connection problems become `Unavailable`, anything else (a script error) `Internal`.
pub fn redis_error(e: RedisError) -> DomainError {
    match e.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Routing
        | ErrorKind::Sentinel
        | ErrorKind::Cluster => DomainError::unavailable(e),
        _ => DomainError::internal(e),
    }
}

impl Store {
    /// Connects (failing fast when Redis cannot be reached at start-up; later disconnections are
    /// retried forever with exponential back-off) and loads the scripts.
    pub async fn connect(config: &Config) -> anyhow::Result<Store> {
        let redis_config = fred::types::config::Config::from_url(&config.redis_url)?;
        let client = Builder::from_config(redis_config)
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                // Small pipelined commands: do not let Nagle hold them back.
                c.tcp.nodelay = Some(true);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()?;
        client.init().await?;
        let load = async |body: &str| -> anyhow::Result<Script> {
            let source = format!("{}\n{}", scripts::PREAMBLE, body);
            let sha: String = client.script_load(source.clone()).await?;
            Ok(Script { source, sha })
        };
        Ok(Store {
            add: load(scripts::ADD_SOCKET).await?,
            remove: load(scripts::REMOVE_SOCKET).await?,
            refresh: load(scripts::REFRESH).await?,
            get: load(scripts::GET_PRESENCE).await?,
            typing: TypingBoard::new(client.clone(), &config.redis_prefix),
            sweep_expired: load(scripts::SWEEP_EXPIRED).await?,
            sweep_pending: load(scripts::SWEEP_PENDING).await?,
            sweep_typing: load(scripts::SWEEP_TYPING).await?,
            client,
            prefix: config.redis_prefix.clone(),
            ttl_ms: config.presence_ttl_ms,
            throttle_ms: config.presence_throttle_ms,
            typing_ttl_ms: config.typing_ttl_ms,
        })
    }

    /// Closes the connection.
    pub async fn quit(&self) {
        if let Err(e) = self.client.quit().await {
            tracing::debug!(error = %e, "redis quit failed");
        }
    }

    async fn run<R: FromValue>(
        &self,
        script: &Script,
        mut args: Vec<String>,
    ) -> Result<R, RedisError> {
        args.insert(0, self.prefix.clone());
        match self
            .client
            .evalsha(script.sha.as_str(), (), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.client.eval(script.source.as_str(), (), args).await
            }
            other => other,
        }
    }

    fn throttle_args(&self) -> [String; 2] {
        [
            self.throttle_ms.to_string(),
            scripts::LAST_RETENTION_MS.to_string(),
        ]
    }

    /// Adds a socket; `true` when the user had no live socket in the namespace before.
    pub async fn add_socket(&self, s: NewSocket) -> Result<bool, DomainError> {
        let [throttle, retention] = self.throttle_args();
        let args = vec![
            s.ttl_ms.unwrap_or(self.ttl_ms).to_string(),
            throttle,
            retention,
            s.key.namespace,
            s.key.user_id,
            s.key.socket_id,
            s.node_id,
            s.user_agent.unwrap_or_default(),
            s.ip.unwrap_or_default(),
            s.max_user_sockets.unwrap_or(0).to_string(),
        ];
        let outcome: i64 = self.run(&self.add, args).await.map_err(redis_error)?;
        if outcome == -1 {
            return Err(DomainError::new(
                ErrorCode::RateLimited,
                "The user has as many connections as allowed",
            ));
        }
        Ok(outcome == 1)
    }

    /// Removes a socket (unknown ones too); `true` when the user has no live socket left.
    pub async fn remove_socket(&self, k: SocketKey) -> Result<bool, DomainError> {
        let [throttle, retention] = self.throttle_args();
        let args = vec![throttle, retention, k.namespace, k.user_id, k.socket_id];
        let now_offline: i64 = self.run(&self.remove, args).await.map_err(redis_error)?;
        Ok(now_offline == 1)
    }

    /// Extends the sockets that still exist; returns how many did.
    pub async fn refresh(&self, r: Refresh) -> Result<u64, DomainError> {
        let ttl = r.ttl_ms.unwrap_or(self.ttl_ms).to_string();
        let mut extended = 0;
        for chunk in r.sockets.chunks(REFRESH_CHUNK) {
            let mut args = Vec::with_capacity(1 + chunk.len() * 3);
            args.push(ttl.clone());
            for k in chunk {
                args.extend([k.namespace.clone(), k.user_id.clone(), k.socket_id.clone()]);
            }
            let n: u64 = self.run(&self.refresh, args).await.map_err(redis_error)?;
            extended += n;
        }
        Ok(extended)
    }

    /// The presence of each asked user, in the order asked.
    pub async fn get_presence(&self, q: PresenceQuery) -> Result<Vec<UserPresence>, DomainError> {
        if q.user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = Vec::with_capacity(1 + q.user_ids.len());
        args.push(q.namespace);
        args.extend(q.user_ids);
        let json: String = self.run(&self.get, args).await.map_err(redis_error)?;
        let rows: Vec<PresenceRow> = serde_json::from_str(&json).map_err(DomainError::internal)?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Starts or stops typing; `true` when something changed.
    pub async fn typing(&self, t: TypingChange) -> Result<bool, DomainError> {
        let ttl = t.ttl_ms.unwrap_or(self.typing_ttl_ms);
        self.typing.set(&t, ttl).await
    }

    /// One sweep tick: expired sockets, due throttled transitions, passed typing deadlines.
    /// Each pop is atomic, so concurrent sweepers (one per replica) never handle an entry twice.
    pub async fn sweep(&self) -> Result<SweepCounts, RedisError> {
        let batch = scripts::SWEEP_BATCH.to_string();
        let [throttle, retention] = self.throttle_args();
        let with_throttle = vec![throttle, retention, batch.clone()];
        Ok(SweepCounts {
            expired: self.drain(&self.sweep_expired, &with_throttle).await?,
            pending: self.drain(&self.sweep_pending, &with_throttle).await?,
            typing: self.drain(&self.sweep_typing, &[batch]).await?,
        })
    }

    async fn drain(&self, script: &Script, args: &[String]) -> Result<u64, RedisError> {
        let mut total = 0;
        for _ in 0..MAX_BATCHES_PER_TICK {
            let n: u64 = self.run(script, args.to_vec()).await?;
            total += n;
            if n < scripts::SWEEP_BATCH {
                break;
            }
        }
        Ok(total)
    }
}

#[derive(Deserialize)]
struct PresenceRow {
    u: String,
    online: bool,
    seen: Option<i64>,
    #[serde(default)]
    sockets: Vec<SocketRow>,
}

#[derive(Deserialize)]
struct SocketRow {
    id: String,
    c: i64,
    s: i64,
    ua: Option<String>,
    ip: Option<String>,
}

impl From<PresenceRow> for UserPresence {
    fn from(r: PresenceRow) -> Self {
        UserPresence {
            user_id: r.u,
            online: r.online,
            last_seen_ms: r.seen,
            sockets: r
                .sockets
                .into_iter()
                .map(|s| SocketInfo {
                    socket_id: s.id,
                    connected_at_ms: s.c,
                    last_seen_ms: s.s,
                    user_agent: s.ua,
                    ip: s.ip,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script missing from Redis' cache (as after a restart) still runs, through `EVAL`.
    /// Uses a wrong hash rather than `SCRIPT FLUSH`, which would disturb other users of the
    /// shared test Redis.
    #[tokio::test]
    async fn noscript_falls_back_to_eval() {
        let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
        let config = Config {
            redis_url: url,
            redis_prefix: format!("test:noscript:{}:", std::process::id()),
            ..Config::default()
        };
        let mut store = Store::connect(&config).await.unwrap();
        store.get.sha = "0000000000000000000000000000000000000000".to_string();
        let query = PresenceQuery {
            namespace: "/".into(),
            user_ids: vec!["u".into()],
        };
        let presence = store.get_presence(query).await.unwrap();
        assert_eq!(presence.len(), 1);
        assert!(!presence[0].online);
        store.quit().await;
    }
}
