//! The node's end of the messages service's `SendStream`: one long-lived stream carries the
//! send forwarder's batches, each answered by its id.
//!
//! A `SendMany` call per batch cost an HTTP/2 stream, headers, a task and a response on both
//! sides (docs/benchmarks §31); on the stream a batch is one message each way. The stream is
//! opened with the first batch and again, with the next batch, after it ends: the service
//! ended it (it was told to drain, and every batch sent before that was answered), or the
//! connection failed (every batch still waiting gets `UNAVAILABLE`, as a failed call would).

use std::{collections::HashMap, time::Duration};

use futures_util::StreamExt as _;
use switchboard_common::DomainError;
use switchboard_proto::messages as pmsg;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::clients::Clients;

/// The most batches one node may have waiting for answers (`SWITCHBOARD_SENDS_IN_FLIGHT` is
/// checked against it at start-up).
pub(crate) const MAX_BATCHES_IN_FLIGHT: usize = 64;

/// Answers kept for batches whose sender stopped waiting (its deadline passed) are dropped when
/// this many are waiting.
const PRUNE_AT: usize = 1_024;

type Outcomes = Result<Vec<pmsg::SendOutcome>, DomainError>;
type Reply = oneshot::Sender<Outcomes>;

/// A handle to the stream's task; cloned into each batch's task.
#[derive(Clone)]
pub(crate) struct SendStream {
    batches: mpsc::Sender<(Vec<pmsg::BatchedSend>, Reply)>,
    clients: Clients,
    timeout: Duration,
}

impl SendStream {
    /// Starts the stream's task on the current runtime; a batch waits at most `timeout`.
    pub(crate) fn start(clients: Clients, timeout: Duration) -> Self {
        let (batches, rx) = mpsc::channel(MAX_BATCHES_IN_FLIGHT);
        tokio::spawn(carry(clients.clone(), rx));
        Self {
            batches,
            clients,
            timeout,
        }
    }

    /// Stores a batch of sends: an outcome for each, in order, or the error that befell them
    /// all. Timed as a `SendStream` call in the gRPC client metrics.
    pub(crate) async fn send(&self, sends: Vec<pmsg::BatchedSend>) -> Outcomes {
        let started = std::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        let outcomes = if self.batches.send((sends, reply)).await.is_err() {
            Err(DomainError::internal("send stream stopped"))
        } else {
            match tokio::time::timeout(self.timeout, answer).await {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(_)) => Err(DomainError::internal("send stream dropped a batch")),
                Err(_) => Err(DomainError::unavailable(
                    "messages service: no answer to a batch in time",
                )),
            }
        };
        self.clients.observe(
            "messages",
            "SendStream",
            outcomes.is_ok(),
            started.elapsed(),
        );
        outcomes
    }
}

/// Carries batches on one stream after another until the node stops.
async fn carry(clients: Clients, mut batches: mpsc::Receiver<(Vec<pmsg::BatchedSend>, Reply)>) {
    let mut next_id = 0;
    loop {
        // A stream is opened only when there is something to send.
        let Some(first) = batches.recv().await else {
            return;
        };
        let mut waiting = Waiting::default();
        let (outgoing, to_send) = mpsc::channel(MAX_BATCHES_IN_FLIGHT);
        // The first batch leaves with the stream's headers.
        waiting.send(&outgoing, &mut next_id, first);
        let request = ReceiverStream::new(to_send);
        let mut answers = match clients.messages.clone().send_stream(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                waiting.fail_all(DomainError::from(status));
                continue;
            }
        };
        // `None` once the service asked to drain: nothing more goes on this stream.
        let mut outgoing = Some(outgoing);
        loop {
            tokio::select! {
                batch = batches.recv(), if outgoing.is_some() => {
                    let Some(batch) = batch else {
                        return;
                    };
                    if let Some(out) = &outgoing {
                        waiting.send(out, &mut next_id, batch);
                    }
                }
                answer = answers.next() => match answer {
                    Some(Ok(answer)) if answer.draining => outgoing = None,
                    Some(Ok(answer)) => waiting.answer(answer),
                    Some(Err(status)) => {
                        waiting.fail_all(DomainError::from(status));
                        break;
                    }
                    None => {
                        if !waiting.is_empty() {
                            waiting.fail_all(DomainError::unavailable(
                                "messages service ended the send stream with batches unanswered",
                            ));
                        }
                        break;
                    }
                },
            }
        }
    }
}

/// The batches sent on a stream and not yet answered.
#[derive(Default)]
struct Waiting(HashMap<u64, Reply>);

impl Waiting {
    fn send(
        &mut self,
        out: &mpsc::Sender<pmsg::SendBatch>,
        next_id: &mut u64,
        (sends, reply): (Vec<pmsg::BatchedSend>, Reply),
    ) {
        *next_id += 1;
        let batch = pmsg::SendBatch {
            batch_id: *next_id,
            sends,
        };
        // Room for it: a node has at most `MAX_BATCHES_IN_FLIGHT` batches out.
        if out.try_send(batch).is_err() {
            let _ = reply.send(Err(DomainError::unavailable("send stream closed or full")));
            return;
        }
        if self.0.len() >= PRUNE_AT {
            self.0.retain(|_, reply| !reply.is_closed());
        }
        self.0.insert(*next_id, reply);
    }

    fn answer(&mut self, answer: pmsg::SendBatchOutcomes) {
        match self.0.remove(&answer.batch_id) {
            Some(reply) => {
                let _ = reply.send(Ok(answer.outcomes));
            }
            None => tracing::debug!(
                batch_id = answer.batch_id,
                "answer to a batch nobody waits for"
            ),
        }
    }

    /// `error` (logged once, where it was made) for every batch still waiting.
    fn fail_all(&mut self, error: DomainError) {
        for (_, reply) in self.0.drain() {
            let _ = reply.send(Err(error.clone()));
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc};

    use switchboard_common::ErrorCode;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::{config::Config, metrics::Metrics};

    /// A messages service on `addr` (port 0: any), over a fresh database, stopped by the sender.
    async fn messages_service(
        addr: SocketAddr,
        database_url: &str,
    ) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let config = switchboard_messages::Config {
            database_url: database_url.to_string(),
            ..Default::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            switchboard_messages::run(listener, config, shutdown)
                .await
                .expect("the messages service runs");
        });
        (addr, stop, served)
    }

    fn send(room: &str, content: &str) -> pmsg::BatchedSend {
        pmsg::BatchedSend {
            request: Some(pmsg::SendRequest {
                room: Some(switchboard_proto::common::RoomRef {
                    kind: "chat".into(),
                    id: room.into(),
                }),
                sender_id: "u1".into(),
                content: content.into(),
                r#type: "text".into(),
                ..Default::default()
            }),
            traceparent: String::new(),
        }
    }

    fn stored(outcomes: Outcomes) -> bool {
        match outcomes.expect("answered").as_slice() {
            [
                pmsg::SendOutcome {
                    outcome: Some(pmsg::send_outcome::Outcome::Sent(sent)),
                },
            ] => sent.created,
            other => panic!("expected one stored message, got {other:?}"),
        }
    }

    /// The service restarts (a rolling update): the stream drains, the node's next batch finds
    /// nobody and fails as a call would, and once the service is back the next batch opens a
    /// new stream and is stored.
    #[tokio::test]
    async fn batches_flow_again_after_the_service_restarts() {
        let base = std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let database_url = switchboard_migrate::create_test_database(&base)
            .await
            .expect("a test database");
        let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
        sqlx::query("INSERT INTO rooms (kind, id) VALUES ('chat', 'c1')")
            .execute(&pool)
            .await
            .unwrap();

        let (addr, stop, served) =
            messages_service(([127, 0, 0, 1], 0).into(), &database_url).await;
        let mut config = Config::development();
        config.messages_url = format!("http://{addr}");
        let clients = Clients::new(&config, Arc::new(Metrics::new())).unwrap();
        let stream = SendStream::start(clients, Duration::from_secs(10));
        assert!(stored(stream.send(vec![send("c1", "first")]).await));

        // Shut down: the server's graceful shutdown ends only once the stream has drained.
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("the service stopped (a hang guard)")
            .unwrap();
        let refused = stream.send(vec![send("c1", "while away")]).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::Unavailable);

        let (_, _stop, _served) = messages_service(addr, &database_url).await;
        assert!(stored(stream.send(vec![send("c1", "after")]).await));
        let contents: Vec<String> = sqlx::query_scalar("SELECT content FROM messages ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(contents, ["first", "after"]);
    }
}
