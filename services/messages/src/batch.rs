//! Group commit for `Send`: concurrent plain sends are stored together, one transaction per
//! batch.
//!
//! Sends are routed by room to one of the lanes (`SWITCHBOARD_SEND_LANES`, 1 by default). A
//! lane stores one batch at a time, and a batch is whatever reached the lane while its previous
//! batch was being stored (at most [`MAX_BATCH`]): at low load every send is a batch of one and
//! waits for nothing; under load, batches grow and Postgres commits once per batch instead of
//! once per message. Lanes never share a room, so their batches never wait for each other's room
//! locks.
//!
//! Each lane keeps one pooled connection between batches. Taking a connection from sqlx's pool
//! and giving it back costs a round trip each way, since the pool checks it with a ping on both
//! (docs/benchmarks §28). A lane that has been idle for a while checks its connection once
//! before using it, since Postgres may have restarted meanwhile.

use std::{
    hash::{Hash, Hasher},
    time::{Duration, Instant},
};

use sqlx::{Connection as _, Postgres, pool::PoolConnection};
use switchboard_common::{DomainError, ErrorCode, db::db_error};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::{
    model::{NewMessage, Sent},
    store::Store,
};

/// The most messages one transaction stores.
pub const MAX_BATCH: usize = 128;

/// Sends waiting in a lane beyond this are refused as `UNAVAILABLE` rather than queued
/// without bound.
const QUEUE: usize = 4_096;

type Reply = oneshot::Sender<Result<Sent, DomainError>>;

/// A queued send: the message, where its answer goes, and the request's span (the batch's span
/// links to it, so a request's trace still leads to the statement that stored it).
type Queued = (NewMessage, Reply, tracing::Span);

/// A handle to the lanes; cloned into every request handler.
#[derive(Debug, Clone)]
pub struct SendBatcher {
    lanes: Vec<mpsc::Sender<Queued>>,
}

impl SendBatcher {
    /// Starts `lanes` lane tasks on the current runtime; they stop when every handle is dropped.
    pub fn start(store: Store, lanes: usize) -> Self {
        let lanes = (0..lanes.max(1))
            .map(|_| {
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(lane(store.clone(), rx));
                queue
            })
            .collect();
        Self { lanes }
    }

    /// Stores the message with whatever is sent at the same time; answers as [`Store::send`].
    pub async fn send(&self, m: NewMessage) -> Result<Sent, DomainError> {
        let mut room = std::collections::hash_map::DefaultHasher::new();
        m.room.hash(&mut room);
        let lane = &self.lanes[(room.finish() % self.lanes.len() as u64) as usize];
        let (reply, answer) = oneshot::channel();
        lane.try_send((m, reply, tracing::Span::current()))
            .map_err(|_| DomainError::unavailable("too many sends in flight"))?;
        answer
            .await
            .map_err(|_| DomainError::internal("send batcher stopped"))?
    }
}

/// How long a lane's connection may sit unused before it is checked again.
pub const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A lane's connection: taken from the pool when first needed (or after a failure), then kept.
struct LaneConnection {
    conn: Option<PoolConnection<Postgres>>,
    last_used: Instant,
}

impl LaneConnection {
    async fn get(&mut self, store: &Store) -> Result<&mut sqlx::PgConnection, DomainError> {
        if let Some(conn) = &mut self.conn
            && self.last_used.elapsed() > CHECK_AFTER_IDLE
        {
            let checked =
                tokio::time::timeout(store.pool().options().get_acquire_timeout(), conn.ping())
                    .await;
            if !matches!(checked, Ok(Ok(()))) {
                self.conn = None;
            }
        }
        self.last_used = Instant::now();
        if self.conn.is_none() {
            self.conn = Some(store.pool().acquire().await.map_err(db_error)?);
        }
        Ok(self.conn.as_deref_mut().expect("just set"))
    }

    /// After a batch: a connection that failed for want of Postgres goes back to the pool (which
    /// closes it if it is broken), and the next batch takes another.
    fn after(&mut self, answers: &[Result<Sent, DomainError>]) {
        if answers
            .iter()
            .any(|a| matches!(a, Err(e) if e.code == ErrorCode::Unavailable))
        {
            self.conn = None;
        }
    }
}

/// Takes everything queued (up to [`MAX_BATCH`]) as one batch, stores it, answers, repeats.
async fn lane(store: Store, mut rx: mpsc::Receiver<Queued>) {
    let mut conn = LaneConnection {
        conn: None,
        last_used: Instant::now(),
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let span = tracing::info_span!("send_batch", size = batch.len());
        let mut messages = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (message, reply, requested) in batch.drain(..) {
            span.follows_from(&requested);
            messages.push(message);
            replies.push(reply);
        }
        let answers = match conn.get(&store).await {
            Ok(c) => store.send_batch(c, &messages).instrument(span).await,
            Err(e) => messages.iter().map(|_| Err(e.clone())).collect(),
        };
        conn.after(&answers);
        for (reply, answer) in replies.into_iter().zip(answers) {
            // The caller may have gone (deadline); the message is stored all the same.
            let _ = reply.send(answer);
        }
    }
}
