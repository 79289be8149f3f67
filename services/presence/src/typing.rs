//! The typing board: who is typing in which room, until when. This service's sweeper publishes
//! the automatic stops; starts and stops are written here, by this service's `Typing` call and
//! by the gateways in-process.
//!
//! A start is one `ZADD` of the deadline (changed when the member is new), a stop one `ZREM`
//! (changed when it was there): each is atomic on its own, so no script is needed. Deadlines are
//! in Redis's clock, as everywhere in this service: a board learns the offset between its
//! host's clock and Redis `TIME` and refreshes it every [`CLOCK_REFRESH_MS`].
//!
//! A gateway does not ask the board whether a typing event changes anything: [`NodeTyping`]
//! decides that from what the node's own sockets said, and writes the board in batches, at most
//! [`NODE_WRITE_DELAY`] after a change. A typing event then costs no Redis round trip at all
//! (`docs/benchmarks/README.md` §21, issue #17), and the sweeper still stops what nobody
//! stopped, also when the node that wrote it has died since.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fred::{prelude::*, types::CustomCommand};
use switchboard_common::DomainError;
use tokio::sync::Notify;

use crate::{domain::TypingChange, store::redis_error};

/// How often a board re-reads Redis `TIME`.
pub const CLOCK_REFRESH_MS: i64 = 30_000;

/// How long a gateway node gathers typing changes before writing them to the board in one
/// round trip. Also how long a start is not on the board yet: a node that dies within it leaves
/// that start without its automatic stop (typing is best-effort, `docs/guarantees.md`).
pub const NODE_WRITE_DELAY: Duration = Duration::from_millis(20);

/// Joins the parts of a typing member: namespace, room kind, room id, user id (validation keeps
/// it out of each part; the sweep script splits on it).
const SEP: char = '\x1f';

/// A board member: who types where.
fn member(namespace: &str, room_kind: &str, room_id: &str, user_id: &str) -> String {
    format!("{namespace}{SEP}{room_kind}{SEP}{room_id}{SEP}{user_id}")
}

/// Writes typing starts and stops to `{prefix}typing:deadlines`.
pub struct TypingBoard {
    client: Client,
    key: String,
    /// Redis `TIME` minus this host's clock, in ms.
    offset_ms: AtomicI64,
    /// When the offset was last read, in this host's ms (0: never).
    offset_read_at_ms: AtomicI64,
}

/// What a member's board entry must become: typing until this host's ms at the start plus the
/// TTL in ms, or not typing.
type BoardState = Option<(i64, u64)>;

impl TypingBoard {
    pub fn new(client: Client, prefix: &str) -> TypingBoard {
        TypingBoard {
            client,
            key: format!("{prefix}typing:deadlines"),
            offset_ms: AtomicI64::new(0),
            offset_read_at_ms: AtomicI64::new(0),
        }
    }

    /// Starts (for `ttl_ms`) or stops typing; `true` when something changed: a start that was
    /// not running, a stop of a running one.
    pub async fn set(&self, change: &TypingChange, ttl_ms: u64) -> Result<bool, DomainError> {
        let member = member(
            &change.namespace,
            &change.room_kind,
            &change.room_id,
            &change.user_id,
        );
        let changed: i64 = if change.typing {
            let deadline = local_now_ms() + self.offset_ms().await? + ttl_ms as i64;
            self.client
                .zadd(
                    &self.key,
                    None,
                    None,
                    false,
                    false,
                    (deadline as f64, member),
                )
                .await
        } else {
            self.client.zrem(&self.key, member).await
        }
        .map_err(redis_error)?;
        Ok(changed == 1)
    }

    /// Brings each member's entry to its state, in one round trip.
    async fn write(&self, states: HashMap<String, BoardState>) -> Result<(), DomainError> {
        let offset = self.offset_ms().await?;
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        for (member, state) in states {
            match state {
                Some((at_ms, ttl_ms)) => {
                    starts.push(((at_ms + offset + ttl_ms as i64) as f64, member));
                }
                None => stops.push(member),
            }
        }
        let pipeline = self.client.pipeline();
        if !starts.is_empty() {
            let () = pipeline
                .zadd(&self.key, None, None, false, false, starts)
                .await
                .map_err(redis_error)?;
        }
        if !stops.is_empty() {
            let () = pipeline.zrem(&self.key, stops).await.map_err(redis_error)?;
        }
        let _: Vec<Value> = pipeline.all().await.map_err(redis_error)?;
        Ok(())
    }

    /// Redis's clock minus this host's, in ms (read again when older than [`CLOCK_REFRESH_MS`]).
    async fn offset_ms(&self) -> Result<i64, DomainError> {
        let local = local_now_ms();
        if local - self.offset_read_at_ms.load(Ordering::Relaxed) >= CLOCK_REFRESH_MS {
            let time = CustomCommand::new_static("TIME", None, false);
            let (secs, micros): (i64, i64) = self
                .client
                .custom(time, Vec::<String>::new())
                .await
                .map_err(redis_error)?;
            let redis = secs * 1000 + micros / 1000;
            self.offset_ms.store(redis - local, Ordering::Relaxed);
            self.offset_read_at_ms.store(local, Ordering::Relaxed);
        }
        Ok(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// A gateway node's typing. Whether a start or a stop changes anything is decided from what
/// this node's own sockets said: a start changes something unless the same user started typing
/// in that room through this node less than its TTL ago, a stop only if such a start is still
/// running. The board follows in batches ([`NODE_WRITE_DELAY`]), so the presence service's
/// sweeper publishes the automatic stops, as for any other writer.
///
/// What this gives up, against asking the board: a user typing in one room from devices on two
/// nodes may have a start or a stop broadcast twice (each node knows only its own sockets), and
/// a node that dies less than [`NODE_WRITE_DELAY`] after a start leaves it without its automatic
/// stop.
pub struct NodeTyping {
    board: TypingBoard,
    state: Mutex<NodeTypingState>,
    /// Told when the first change of a batch is pending.
    pending_changed: Notify,
}

#[derive(Default)]
struct NodeTypingState {
    /// This node's running starts: until when each lasts without another.
    running: HashMap<String, Instant>,
    /// What the board must become, per member, at the next write.
    pending: HashMap<String, BoardState>,
    /// When running starts that have passed were last dropped.
    pruned_at: Option<Instant>,
}

impl NodeTyping {
    /// Starts the node's board writer on the current Tokio runtime.
    pub fn start(board: TypingBoard) -> Arc<NodeTyping> {
        let node = Arc::new(NodeTyping {
            board,
            state: Mutex::default(),
            pending_changed: Notify::new(),
        });
        tokio::spawn(write_board(node.clone()));
        node
    }

    /// A socket of this node starts (for `ttl`) or stops typing; `true` when that changes
    /// anything (see [`NodeTyping`]).
    pub fn set(&self, change: &TypingChange, ttl: Duration) -> bool {
        let member = member(
            &change.namespace,
            &change.room_kind,
            &change.room_id,
            &change.user_id,
        );
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first_pending = state.pending.is_empty();
        let changed = if change.typing {
            let running = state.running.insert(member.clone(), now + ttl);
            state
                .pending
                .insert(member, Some((local_now_ms(), ttl.as_millis() as u64)));
            running.is_none_or(|until| until <= now)
        } else {
            match state.running.remove(&member) {
                Some(until) if until > now => {
                    state.pending.insert(member, None);
                    true
                }
                // Passed: the sweeper stops it (or has). Unknown: not started through this node.
                _ => false,
            }
        };
        if first_pending && !state.pending.is_empty() {
            self.pending_changed.notify_one();
        }
        changed
    }

    /// The sweeper stopped this typing (its deadline passed): a start after this is a new one.
    pub fn stopped(&self, namespace: &str, room_kind: &str, room_id: &str, user_id: &str) {
        let member = member(namespace, room_kind, room_id, user_id);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running.remove(&member);
    }

    /// The changes to write now; drops running starts that have passed, once a second.
    fn take_pending(&self) -> HashMap<String, BoardState> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .pruned_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            state.running.retain(|_, until| *until > now);
            state.pruned_at = Some(now);
        }
        std::mem::take(&mut state.pending)
    }
}

/// Writes a node's typing changes to the board, [`NODE_WRITE_DELAY`] after the first of each
/// batch. A write that fails is logged and dropped: typing is best-effort, and the next change
/// of each member writes its state again.
async fn write_board(node: Arc<NodeTyping>) {
    let mut failing = false;
    loop {
        node.pending_changed.notified().await;
        tokio::time::sleep(NODE_WRITE_DELAY).await;
        let pending = node.take_pending();
        if pending.is_empty() {
            continue;
        }
        match node.board.write(pending).await {
            // Once per outage, not once per batch.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "typing changes not written to the board");
            }
            Err(_) => {}
            Ok(()) if failing => {
                failing = false;
                tracing::info!("typing changes written to the board again");
            }
            Ok(()) => {}
        }
    }
}

fn local_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset is read in whole ms on both sides: a deadline may come out 1 ms past the TTL.
    const ROUNDING_MS: i64 = 2;

    async fn board() -> (TypingBoard, Client, String) {
        let url = std::env::var("SWITCHBOARD_TEST_REDIS_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
        let client = Client::new(
            fred::types::config::Config::from_url(&url).unwrap(),
            None,
            None,
            None,
        );
        client.init().await.unwrap();
        let prefix = format!("test:typing-board:{}:", uuid::Uuid::new_v4());
        (TypingBoard::new(client.clone(), &prefix), client, prefix)
    }

    /// Changed flags as the contracts need them, and a deadline in Redis's clock, in ms.
    #[tokio::test]
    async fn starts_and_stops_report_changes_and_deadlines_follow_redis_time() {
        let (board, client, prefix) = board().await;
        let change = |typing| TypingChange::new("/", "chat", "c1", "u1", typing).unwrap();
        assert!(
            board.set(&change(true), 60_000).await.unwrap(),
            "a new start"
        );
        assert!(
            !board.set(&change(true), 60_000).await.unwrap(),
            "a repeated start"
        );

        let key = format!("{prefix}typing:deadlines");
        let deadline: f64 = client.zscore(&key, "/\x1fchat\x1fc1\x1fu1").await.unwrap();
        let (secs, micros): (i64, i64) = client
            .custom(
                CustomCommand::new_static("TIME", None, false),
                Vec::<String>::new(),
            )
            .await
            .unwrap();
        let redis_now = secs * 1000 + micros / 1000;
        let ahead = deadline as i64 - redis_now;
        assert!(
            (55_000..=60_000 + ROUNDING_MS).contains(&ahead),
            "the deadline is {ahead} ms ahead of Redis's clock"
        );

        assert!(board.set(&change(false), 60_000).await.unwrap(), "a stop");
        assert!(
            !board.set(&change(false), 60_000).await.unwrap(),
            "a repeated stop"
        );
        let left: i64 = client.zcard(&key).await.unwrap();
        assert_eq!(left, 0);
        let _: i64 = client.del(&key).await.unwrap();
    }

    /// The board's entry for u1 in c1, waiting for the node's next write.
    async fn entry_after_write(client: &Client, key: &str) -> Option<f64> {
        tokio::time::sleep(NODE_WRITE_DELAY * 5).await;
        client.zscore(key, "/\x1fchat\x1fc1\x1fu1").await.unwrap()
    }

    /// A node decides changes from its own sockets' starts and stops, and the board follows.
    #[tokio::test]
    async fn a_node_decides_changes_itself_and_the_board_follows() {
        let (board, client, prefix) = board().await;
        let key = format!("{prefix}typing:deadlines");
        let node = NodeTyping::start(board);
        let change = |typing| TypingChange::new("/", "chat", "c1", "u1", typing).unwrap();
        let ttl = Duration::from_secs(60);

        assert!(node.set(&change(true), ttl), "a new start");
        assert!(!node.set(&change(true), ttl), "a repeated start");
        let deadline = entry_after_write(&client, &key)
            .await
            .expect("the start is on the board");
        let ahead = deadline as i64 - (local_now_ms() + node.board.offset_ms().await.unwrap());
        assert!(
            (55_000..=60_000 + ROUNDING_MS).contains(&ahead),
            "the deadline is {ahead} ms ahead of Redis's clock"
        );

        assert!(node.set(&change(false), ttl), "a stop");
        assert!(!node.set(&change(false), ttl), "a repeated stop");
        assert_eq!(
            entry_after_write(&client, &key).await,
            None,
            "the stop is on the board"
        );

        // A start, then the sweeper's automatic stop: the next start is a new one.
        assert!(node.set(&change(true), ttl));
        node.stopped("/", "chat", "c1", "u1");
        assert!(
            node.set(&change(true), ttl),
            "a start after the automatic stop"
        );

        // A start that has passed is the sweeper's to stop, not this node's.
        assert!(node.set(&change(false), ttl));
        assert!(node.set(&change(true), Duration::ZERO));
        assert!(
            !node.set(&change(false), ttl),
            "the sweeper stops a passed start"
        );
        let _: i64 = client.del(&key).await.unwrap();
    }
}
