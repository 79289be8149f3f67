//! The Redis adapter's driver: how socketioxide-redis reaches Redis pub/sub (sharded channels,
//! through fred), with a node's publishes gathered while they keep coming.
//!
//! The adapter publishes every broadcast that leaves the node (typing, presence, room changes)
//! as its own `SPUBLISH`, and every node reads each one. One command per broadcast was the
//! largest cost of a typing event after the WebSocket frames themselves: the write to Redis,
//! Redis's write to every node, and each node's wake-up to read it (docs/benchmarks §24). This
//! driver sends one publish at a time and starts at most one per `linger`
//! (`SWITCHBOARD_PUBLISH_LINGER_MS`); whatever queues meanwhile leaves as one message per
//! channel, which every node's reader splits back into the adapter's messages, in order. A
//! publish after a quiet spell leaves at once, alone, in the adapter's own format.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
    time::Duration,
};

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    types::Message,
};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    time::Instant,
};

use crate::batch;

/// Marks a message that carries several of the adapter's messages. The adapter's messages are
/// MessagePack, and 0xc1 is the one byte MessagePack never uses.
const BATCH_MARK: u8 = 0xc1;
/// The most adapter messages one publish carries.
const MAX_ITEMS_PER_PUBLISH: usize = 256;
/// The most bytes one publish carries (unless its first message alone is larger).
const MAX_BYTES_PER_PUBLISH: usize = 1 << 20;
/// Publishes waiting to leave; a full queue makes broadcasters wait.
const QUEUE: usize = 10_000;

/// A driver error: Redis's, as text (one failed publish answers every broadcast it carried).
#[derive(Debug, Clone)]
pub struct PubsubError(String);

impl fmt::Display for PubsubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PubsubError {}

impl From<fred::error::Error> for PubsubError {
    fn from(e: fred::error::Error) -> Self {
        Self(e.to_string())
    }
}

/// Where a queued message's publish is answered.
type Answer = oneshot::Sender<Result<(), PubsubError>>;

struct Queued {
    channel: String,
    payload: Vec<u8>,
    published: Answer,
}

type Readers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// The adapter's driver over one fred subscriber connection.
#[derive(Clone)]
pub struct PacedDriver {
    conn: SubscriberClient,
    readers: Readers,
    queue: mpsc::Sender<Queued>,
}

impl PacedDriver {
    /// Connects `conn` and starts its reading and publishing tasks on the current runtime.
    pub async fn start(conn: SubscriberClient, linger: Duration) -> Result<Self, PubsubError> {
        let readers = Readers::default();
        tokio::spawn(read(conn.message_rx(), readers.clone()));
        conn.init().await?;
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(publish(conn.clone(), rx, linger));
        Ok(Self {
            conn,
            readers,
            queue,
        })
    }
}

impl Driver for PacedDriver {
    type Error = PubsubError;

    async fn publish(&self, channel: String, payload: Vec<u8>) -> Result<(), PubsubError> {
        let (published, answer) = oneshot::channel();
        let stopped = || PubsubError("the publishing task stopped".to_string());
        self.queue
            .send(Queued {
                channel,
                payload,
                published,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn subscribe(
        &self,
        channel: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, PubsubError> {
        self.conn.ssubscribe(channel.as_str()).await?;
        let (tx, rx) = mpsc::channel(size);
        self.readers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel, tx);
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, channel: String) -> Result<(), PubsubError> {
        self.readers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&channel);
        self.conn.sunsubscribe(channel).await?;
        Ok(())
    }

    async fn num_serv(&self, channel: &str) -> Result<u16, PubsubError> {
        let (_, subscribers): (String, u16) = self.conn.pubsub_shardnumsub(channel).await?;
        Ok(subscribers)
    }
}

/// Publishes what queues, one publish at a time and at most one started per `linger`; each
/// run of queued messages for one channel leaves as one message.
async fn publish(conn: SubscriberClient, mut rx: mpsc::Receiver<Queued>, linger: Duration) {
    let mut held_back = None;
    let mut next_publish = Instant::now();
    loop {
        let Some(first) = batch::first(&mut held_back, &mut rx).await else {
            return;
        };
        if next_publish > Instant::now() {
            tokio::time::sleep_until(next_publish).await;
        }
        next_publish = Instant::now() + linger;
        let queued;
        (queued, held_back) = batch::gather(
            first,
            &mut rx,
            MAX_ITEMS_PER_PUBLISH,
            MAX_BYTES_PER_PUBLISH,
            |q| q.payload.len(),
        );
        let mut queued = queued.into_iter().peekable();
        while let Some(first) = queued.next() {
            let mut behind = Vec::new();
            while let Some(next) = queued.next_if(|q| q.channel == first.channel) {
                behind.push(next);
            }
            let (channel, message, answers) = into_message(first, behind);
            let result = conn
                .spublish::<u16, _, _>(channel, message)
                .await
                .map(drop)
                .map_err(PubsubError::from);
            for answer in answers {
                let _ = answer.send(result.clone());
            }
        }
    }
}

/// One message for `first` and the messages queued right behind it for the same channel:
/// `first`'s own payload when it is alone.
fn into_message(first: Queued, behind: Vec<Queued>) -> (String, Vec<u8>, Vec<Answer>) {
    if behind.is_empty() {
        return (first.channel, first.payload, vec![first.published]);
    }
    let mut payloads = Vec::with_capacity(1 + behind.len());
    let mut answers = Vec::with_capacity(1 + behind.len());
    payloads.push(first.payload);
    answers.push(first.published);
    for q in behind {
        payloads.push(q.payload);
        answers.push(q.published);
    }
    (first.channel, encode_batch(&payloads), answers)
}

/// `BATCH_MARK`, then each payload as its length (4 bytes, big-endian) and its bytes.
fn encode_batch(payloads: &[Vec<u8>]) -> Vec<u8> {
    let len = 1 + payloads.iter().map(|p| 4 + p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(BATCH_MARK);
    for p in payloads {
        let p_len =
            u32::try_from(p.len()).expect("a batched payload is at most MAX_BYTES_PER_PUBLISH");
        out.extend_from_slice(&p_len.to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// The adapter's messages in one received message, in order; `None` for a malformed batch.
fn decode_batch(message: Vec<u8>) -> Option<Vec<Vec<u8>>> {
    if message.first() != Some(&BATCH_MARK) {
        return Some(vec![message]);
    }
    let mut rest = &message[1..];
    let mut payloads = Vec::new();
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        let (payload, tail) = tail.split_at(len);
        payloads.push(payload.to_vec());
        rest = tail;
    }
    Some(payloads)
}

/// Hands each received message to its channel's reader (the adapter), a batch split back into
/// the adapter's messages.
async fn read(mut messages: broadcast::Receiver<Message>, readers: Readers) {
    loop {
        let message = match messages.recv().await {
            Ok(message) => message,
            // fred keeps the sender while the client lives, across reconnects.
            Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    messages = n,
                    "adapter messages lost: the reader fell behind"
                );
                continue;
            }
        };
        let channel = message.channel.to_string();
        let Some(payload) = message.value.into_owned_bytes() else {
            continue;
        };
        let Some(payloads) = decode_batch(payload) else {
            tracing::warn!(channel, "malformed adapter batch dropped");
            continue;
        };
        let readers = readers.read().unwrap_or_else(|e| e.into_inner());
        let Some(reader) = readers.get(&channel) else {
            tracing::warn!(channel, "adapter message on a channel nobody reads");
            continue;
        };
        for payload in payloads {
            if let Err(e) = reader.try_send((channel.clone(), payload)) {
                tracing::warn!(channel, error = %e, "adapter message dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn a_batch_splits_back_into_its_messages_and_a_plain_message_stays_whole() {
        let payloads = vec![vec![0x93, 1, 2, 3], vec![], vec![0x80; 300]];
        assert_eq!(decode_batch(encode_batch(&payloads)), Some(payloads));
        assert_eq!(decode_batch(vec![0x92, 1, 2]), Some(vec![vec![0x92, 1, 2]]));
        let mut truncated = encode_batch(&[vec![1, 2, 3]]);
        truncated.pop();
        assert_eq!(decode_batch(truncated), None);
    }

    async fn driver(linger: Duration) -> PacedDriver {
        let conn = crate::redis::subscriber_client(&crate::redis::test_url()).unwrap();
        PacedDriver::start(conn, linger).await.unwrap()
    }

    /// Publishes that queue behind one another leave together, and every node reads each of
    /// them once, in order.
    #[tokio::test]
    async fn publishes_that_keep_coming_leave_together_and_arrive_in_order() {
        let channel = format!("test:pubsub:{}", uuid::Uuid::new_v4());
        let sender = driver(Duration::from_millis(500)).await;
        let receiver = driver(Duration::ZERO).await;
        let mut received = receiver.subscribe(channel.clone(), 64).await.unwrap();
        // What goes over Redis, read by a plain subscriber.
        let raw = crate::redis::subscriber_client(&crate::redis::test_url()).unwrap();
        raw.init().await.unwrap();
        let mut raw_messages = raw.message_rx();
        raw.ssubscribe(channel.as_str()).await.unwrap();

        sender.publish(channel.clone(), vec![0x90]).await.unwrap();
        let rest = (1..=4u8).map(|i| sender.publish(channel.clone(), vec![0x91, i]));
        for published in futures_util::future::join_all(rest).await {
            published.unwrap();
        }

        let mut payloads = Vec::new();
        for _ in 0..5 {
            let (from, payload) = received.next().await.unwrap();
            assert_eq!(from, channel);
            payloads.push(payload);
        }
        let expected = [
            vec![0x90],
            vec![0x91, 1],
            vec![0x91, 2],
            vec![0x91, 3],
            vec![0x91, 4],
        ];
        assert_eq!(payloads, expected);

        let first = raw_messages.recv().await.unwrap();
        assert_eq!(
            first.value.into_owned_bytes(),
            Some(vec![0x90]),
            "a publish after a quiet spell leaves alone, in the adapter's own format"
        );
        let second = raw_messages.recv().await.unwrap();
        let second = second.value.into_owned_bytes().unwrap();
        assert_eq!(
            decode_batch(second).map(|p| p.len()),
            Some(4),
            "the four that queued meanwhile leave as one message"
        );
    }
}
