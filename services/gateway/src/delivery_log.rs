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
use tokio::sync::{mpsc, oneshot};

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

/// Appends each event (`KEYS[i + 1]` its logged marker, `ARGV[i + 2]` its payload) unless its
/// outbox id is logged already; answers each entry's id either way, in order. `MAXLEN ~` trims
/// whole macro-nodes of the oldest entries, cheaply.
const APPEND_LUA: &str = r#"
local ids = {}
for i = 2, #KEYS do
  local id = redis.call('GET', KEYS[i])
  if not id then
    id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i + 1])
    redis.call('SET', KEYS[i], id, 'PX', ARGV[2])
  end
  ids[i - 1] = id
end
return ids
"#;

/// How long an outbox id is remembered as logged: far longer than the sweeper takes to
/// redeliver an unconfirmed entry (seconds), unless Postgres or every node was down meanwhile.
const LOGGED_FOR: Duration = Duration::from_secs(600);

/// Entries one read takes at most.
const READ_BATCH: u64 = 512;

/// The most events one append carries, and about the most bytes (unless its first event alone
/// is larger).
const APPEND_BATCH: usize = 256;
const APPEND_BATCH_BYTES: usize = 1 << 20;

#[derive(Clone)]
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

    /// Logs stored events, in order (each once per outbox id); answers their entries' ids. The
    /// payloads are moved into the command, not copied: `events` are left without them.
    async fn append(&self, redis: &Client, events: &mut [Queued]) -> anyhow::Result<Vec<LogId>> {
        let mut keys = Vec::with_capacity(events.len() + 1);
        keys.push(self.key.clone());
        let mut args = Vec::with_capacity(events.len() + 2);
        args.push(self.max_entries.to_string());
        args.push(LOGGED_FOR.as_millis().to_string());
        for e in events.iter_mut() {
            keys.push(format!("{}{}", self.logged_prefix, e.name));
            args.push(std::mem::take(&mut e.payload));
        }
        let ids: Vec<String> = self
            .append_script
            .evalsha_with_reload(redis, keys, args)
            .await?;
        anyhow::ensure!(
            ids.len() == events.len(),
            "{} ids for {} appended events",
            ids.len(),
            events.len()
        );
        ids.iter()
            .map(|id| {
                id.parse()
                    .map_err(|()| anyhow::anyhow!("unexpected stream id {id:?}"))
            })
            .collect()
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

/// Appends stored events to the log in the order they are handed to it, all that queued
/// meanwhile in one script call.
///
/// Order matters across a node's sends: the messages service stores a `SendMany` call's sends
/// in the call's order (seqs and ids growing), and each send's task then renders and appends
/// its own event. Tasks resume in whatever order the runtime picks, so each send also gets an
/// [`AppendTurn`], and hands its event over only once the send stored before it has: the log
/// then holds a node's sends in the order they were stored (`docs/guarantees.md`, promise 4).
pub struct LogAppender {
    queue: mpsc::Sender<Queued>,
}

struct Queued {
    /// `<outbox id>:<created at ms>`, what names the event (`LoggedEvent::key`).
    name: String,
    payload: String,
    reply: oneshot::Sender<Result<LogId, String>>,
}

impl LogAppender {
    /// Starts the appending task on the current runtime.
    pub fn start(log: DeliveryLog, redis: Client) -> Self {
        let (queue, rx) = mpsc::channel(4_096);
        tokio::spawn(append_in_order(log, redis, rx));
        LogAppender { queue }
    }

    /// Logs a stored event once its turn comes (at once without one); answers its entry's id.
    pub async fn append(
        &self,
        event: &LoggedEvent,
        mut turn: Option<AppendTurn>,
    ) -> anyhow::Result<LogId> {
        let payload = serde_json::to_string(event)?;
        if let Some(turn) = &mut turn {
            turn.wait().await;
        }
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            name: format!("{}:{}", event.outbox_id, event.created_at_ms),
            payload,
            reply,
        };
        let stopped = || anyhow::anyhow!("delivery log appender stopped");
        self.queue.send(queued).await.map_err(|_| stopped())?;
        // Queued: the next send in line may hand its event over now.
        drop(turn);
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(anyhow::Error::msg)
    }
}

async fn append_in_order(log: DeliveryLog, redis: Client, mut rx: mpsc::Receiver<Queued>) {
    let mut held_back = None;
    while let Some(first) = crate::batch::first(&mut held_back, &mut rx).await {
        // The first event's sender woke this task, which the runtime then runs next, before the
        // other sends of the same call have handed theirs over: letting them run first makes
        // one script call of what would be several.
        tokio::task::yield_now().await;
        let mut batch;
        (batch, held_back) = crate::batch::gather(
            first,
            &mut rx,
            APPEND_BATCH,
            APPEND_BATCH_BYTES,
            |q: &Queued| q.payload.len(),
        );
        match log.append(&redis, &mut batch).await {
            Ok(ids) => {
                for (q, id) in batch.into_iter().zip(ids) {
                    let _ = q.reply.send(Ok(id));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for q in batch {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A send's place in line for [`LogAppender::append`]: it waits for the turn before it to be
/// used or dropped, and lets the next one go when it is used or dropped itself (a send that
/// failed, or was a repeat, appends nothing and only lets the next one go).
#[derive(Debug)]
pub struct AppendTurn {
    after: Option<oneshot::Receiver<()>>,
    _mine: oneshot::Sender<()>,
}

impl AppendTurn {
    /// `n` turns in a row, after the turn `last` leads to (the line's previous end), which
    /// becomes this line's end.
    pub fn line(last: &mut Option<oneshot::Receiver<()>>, n: usize) -> Vec<AppendTurn> {
        (0..n)
            .map(|_| {
                let (mine, next) = oneshot::channel();
                AppendTurn {
                    after: last.replace(next),
                    _mine: mine,
                }
            })
            .collect()
    }

    async fn wait(&mut self) {
        if let Some(after) = &mut self.after {
            // Used or dropped: either way it is this turn's go.
            let _ = after.await;
            self.after = None;
        }
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
    fn a_turn_comes_once_the_turn_before_it_is_used_or_dropped() {
        use futures_util::FutureExt;
        let mut last = None;
        let mut first_call = AppendTurn::line(&mut last, 2);
        let mut third = AppendTurn::line(&mut last, 1).remove(0);
        let mut second = first_call.pop().unwrap();
        let mut first = first_call.pop().unwrap();
        assert!(
            first.wait().now_or_never().is_some(),
            "nobody before the first"
        );
        assert!(second.wait().now_or_never().is_none());
        assert!(
            third.wait().now_or_never().is_none(),
            "the next call waits too"
        );
        drop(first);
        assert!(second.wait().now_or_never().is_some());
        assert!(third.wait().now_or_never().is_none());
        drop(second);
        assert!(third.wait().now_or_never().is_some());
    }

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
