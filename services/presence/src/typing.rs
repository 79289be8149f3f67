//! The typing board: who is typing in which room, until when. This service's sweeper publishes
//! the automatic stops; starts and stops are written here, by this service's `Typing` call and
//! by the gateways in-process (a typing event then costs a gateway one Redis command, not a
//! gRPC round trip and a script; `docs/benchmarks/README.md`, issue #17).
//!
//! A start is one `ZADD` of the deadline (changed when the member is new), a stop one `ZREM`
//! (changed when it was there): each is atomic on its own, so no script is needed. Deadlines are
//! in Redis's clock, as everywhere in this service: a board learns the offset between its
//! host's clock and Redis `TIME` and refreshes it every [`CLOCK_REFRESH_MS`].

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use fred::{prelude::*, types::CustomCommand};
use switchboard_common::DomainError;

use crate::{domain::TypingChange, store::redis_error};

/// How often a board re-reads Redis `TIME`.
pub const CLOCK_REFRESH_MS: i64 = 30_000;

/// Joins the parts of a typing member: namespace, room kind, room id, user id (validation keeps
/// it out of each part; the sweep script splits on it).
const SEP: char = '\x1f';

/// Writes typing starts and stops to `{prefix}typing:deadlines`.
pub struct TypingBoard {
    client: Client,
    key: String,
    /// Redis `TIME` minus this host's clock, in ms.
    offset_ms: AtomicI64,
    /// When the offset was last read, in this host's ms (0: never).
    offset_read_at_ms: AtomicI64,
}

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
        let member = format!(
            "{}{SEP}{}{SEP}{}{SEP}{}",
            change.namespace, change.room_kind, change.room_id, change.user_id
        );
        let changed: i64 = if change.typing {
            let deadline = self.redis_now_ms().await? + ttl_ms as i64;
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

    /// Now in Redis's clock, from this host's clock and the last offset read.
    async fn redis_now_ms(&self) -> Result<i64, DomainError> {
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
        Ok(local + self.offset_ms.load(Ordering::Relaxed))
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
            (55_000..=60_000).contains(&ahead),
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
}
