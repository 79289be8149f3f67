//! The delivery log: the Redis stream every stored event (a message, an edit, a deletion: each
//! has an outbox entry) crosses on its way to sockets, and the order in which every node emits
//! them.
//!
//! A node appends a stored event's rendered emissions once ([`DeliveryLog::append`]); every
//! node, the appending one included, reads the stream in order and emits each entry to its own
//! sockets, with the entry's id as the event's last argument (the offset a Socket.IO client keeps
//! for connection state recovery). Because a node reads from where it stopped, a node cut off
//! from Redis for a while catches up when it is back instead of missing what was said
//! meanwhile; and because every node emits in the stream's order, a client's last offset tells
//! exactly what it has had: recovery replays the entries after it (`crate::recovery`).
//!
//! Appending is idempotent per outbox id: the outbox sweeper appends again what a node stored
//! but never confirmed (the node died between appending and confirming), and the append script
//! finds it logged and answers the first entry's id. So each stored event is in the stream once,
//! and each node emits it once.

use std::{fmt, str::FromStr, time::Duration};

use fred::{
    prelude::{Client, KeysInterface, StreamsInterface},
    types::{Value, scripts::Script},
};
use serde::{Deserialize, Serialize};

/// The id of a stream entry (`<ms>-<seq>`); ordered as Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    ms: u64,
    seq: u64,
}

impl FromStr for LogId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        Ok(LogId {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One emission of a stored event, as it crosses the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedEmission {
    pub namespace: String,
    pub rooms: Vec<String>,
    pub except: Vec<String>,
    pub event: String,
    pub data: serde_json::Value,
    pub everyone: bool,
    /// The sending socket (on the appending node), left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_socket: Option<String>,
}

/// A stored event's emissions, one entry of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedEvent {
    pub outbox_id: i64,
    /// When its message was created (ms): with the outbox id, names the event even when outbox
    /// ids start again (a database restored from a backup, a test database recreated while
    /// Redis keeps its keys).
    #[serde(default)]
    pub created_at_ms: i64,
    pub emissions: Vec<LoggedEmission>,
}

impl LoggedEvent {
    /// What names this event across appends and nodes.
    pub fn key(&self) -> (i64, i64) {
        (self.outbox_id, self.created_at_ms)
    }
}

/// Appends unless this outbox id is logged already; answers the entry's id either way.
/// `MAXLEN ~` trims whole macro-nodes of the oldest entries, cheaply.
const APPEND_LUA: &str = r#"
local logged = redis.call('GET', KEYS[2])
if logged then return logged end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
return id
"#;

/// How long an outbox id is remembered as logged: far longer than the sweeper takes to
/// redeliver an unconfirmed entry (seconds), unless Postgres or every node was down meanwhile.
const LOGGED_FOR: Duration = Duration::from_secs(600);

/// Entries one read takes at most.
const READ_BATCH: u64 = 512;

pub struct DeliveryLog {
    key: String,
    logged_prefix: String,
    max_entries: u64,
    append_script: Script,
}

impl DeliveryLog {
    pub fn new(redis_prefix: &str, max_entries: u64) -> Self {
        DeliveryLog {
            key: format!("{redis_prefix}deliveries"),
            logged_prefix: format!("{redis_prefix}logged:"),
            max_entries,
            append_script: Script::from_lua(APPEND_LUA),
        }
    }

    /// Logs a stored event (once per outbox id); answers its entry's id.
    pub async fn append(&self, redis: &Client, event: &LoggedEvent) -> anyhow::Result<LogId> {
        let payload = serde_json::to_string(event)?;
        let id: String = self
            .append_script
            .evalsha_with_reload(
                redis,
                vec![
                    self.key.clone(),
                    format!(
                        "{}{}:{}",
                        self.logged_prefix, event.outbox_id, event.created_at_ms
                    ),
                ],
                vec![
                    self.max_entries.to_string(),
                    payload,
                    LOGGED_FOR.as_millis().to_string(),
                ],
            )
            .await?;
        id.parse()
            .map_err(|()| anyhow::anyhow!("unexpected stream id {id:?}"))
    }

    /// The id of the newest entry (0-0 when the log is empty): where a node starts reading.
    pub async fn newest(&self, redis: &Client) -> anyhow::Result<LogId> {
        let newest: Vec<(String, Value)> = redis.xrevrange(&self.key, "+", "-", Some(1)).await?;
        Ok(newest
            .first()
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or_default())
    }

    /// The next entries after `after`, waiting up to `block` for one (a dedicated client: the
    /// wait holds its connection).
    pub async fn read(
        &self,
        reader: &Client,
        after: LogId,
        block: Duration,
    ) -> anyhow::Result<Vec<(LogId, LoggedEvent)>> {
        let response: Value = reader
            .xread(
                Some(READ_BATCH),
                Some(block.as_millis() as u64),
                &self.key,
                after.to_string(),
            )
            .await?;
        // Nothing arrived while waiting: Redis answers nil, which is no map.
        if response.is_null() {
            return Ok(Vec::new());
        }
        let response: fred::types::streams::XReadResponse<String, String, String, String> =
            response.into_xread_response()?;
        Ok(decode(response.into_values().flatten()))
    }

    /// Up to `count` entries after `after`, at once.
    pub async fn range(
        &self,
        redis: &Client,
        after: LogId,
        count: u64,
    ) -> anyhow::Result<Vec<(LogId, LoggedEvent)>> {
        let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis
            .xrange_values(&self.key, format!("({after}"), "+", Some(count))
            .await?;
        Ok(decode(entries))
    }

    /// Whether every entry after `after` is still in the log (none was trimmed).
    pub async fn retains_after(&self, redis: &Client, after: LogId) -> anyhow::Result<bool> {
        let exists: i64 = redis.exists(&self.key).await?;
        if exists == 0 {
            return Ok(true);
        }
        let info: std::collections::HashMap<String, Value> =
            redis.xinfo_stream(&self.key, false, None).await?;
        let trimmed_up_to = info
            .get("max-deleted-entry-id")
            .and_then(|v| v.as_string())
            .and_then(|s| s.parse::<LogId>().ok())
            .unwrap_or_default();
        Ok(trimmed_up_to <= after)
    }
}

fn decode(
    entries: impl IntoIterator<Item = (String, std::collections::HashMap<String, String>)>,
) -> Vec<(LogId, LoggedEvent)> {
    entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let id: LogId = id.parse().ok()?;
            match fields.get("e").map(|e| serde_json::from_str(e)) {
                Some(Ok(event)) => Some((id, event)),
                _ => {
                    tracing::warn!(%id, "unreadable delivery log entry");
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_redis_orders_them() {
        let a: LogId = "1700000000000-9".parse().unwrap();
        let b: LogId = "1700000000000-10".parse().unwrap();
        let c: LogId = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-10");
        assert!("1700000000000".parse::<LogId>().is_err());
        assert!("x-1".parse::<LogId>().is_err());
        assert_eq!(LogId::default().to_string(), "0-0");
    }
}
