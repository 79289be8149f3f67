//! Forwards this node's sends to the messages service, several per call under load.
//!
//! A call per send was most of what the messages service spent on a send (an HTTP/2 stream,
//! headers, a task and a response each); one batch for whatever queued meanwhile cut its CPU
//! per send by a third and the gateways' by a tenth (docs/benchmarks §12), and carrying the
//! batches on one stream ([`SendStream`]) cut the cost per batch again (§31). The forwarder
//! keeps at most `in_flight` batches out (`SWITCHBOARD_SENDS_IN_FLIGHT`, 1) and sends at most
//! one per `linger` (`SWITCHBOARD_SEND_LINGER_MS`): a send after a quiet spell goes out at
//! once, alone, so a quiet node waits for nothing; sends that keep coming queue and leave
//! together in the next batch, which the messages service then commits together. Each send
//! keeps its own trace (its `traceparent` rides in the item) and gets its own outcome, with its
//! turn to append its event to the delivery log: sends are logged in the order they were
//! forwarded, which is the order the messages service stored them in (`AppendTurn`).
//!
//! Before a batch leaves, its sends' rate windows are checked together, in one Redis script
//! call ([`RateWindows`]): a refused send is answered as such and left out of the batch.

use std::{sync::Arc, time::Duration};

use prost::Message as _;

use switchboard_common::{DomainError, ErrorCode, telemetry};
use switchboard_proto::messages as pmsg;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    time::Instant,
};

use crate::{
    batch,
    delivery_log::AppendTurn,
    metrics::{Metrics, SendStage},
    rate::{RateCheck, RateWindows},
    send_stream::SendStream,
};

/// The most sends one batch carries.
const MAX_ITEMS_PER_BATCH: usize = 256;
/// The most bytes of sends one batch carries (unless its first send alone is larger): a batch,
/// and its answer, which repeats each message, stay well under tonic's 4 MiB message limit.
const MAX_BYTES_PER_BATCH: usize = 1 << 20;
/// Sends waiting for a batch; a full queue makes senders wait.
const QUEUE: usize = 10_000;

type Outcome = Result<pmsg::SendResponse, DomainError>;

struct Queued {
    item: pmsg::BatchedSend,
    /// The sender's rate window, when the send is counted against one.
    rate: Option<RateCheck>,
    reply: oneshot::Sender<(Outcome, AppendTurn)>,
    /// When it reached the forwarder.
    since: Instant,
}

#[derive(Clone)]
pub struct SendForwarder {
    queue: mpsc::Sender<Queued>,
}

impl SendForwarder {
    /// Starts the forwarding task on the current runtime.
    pub fn start(
        stream: SendStream,
        rate_windows: RateWindows,
        metrics: Arc<Metrics>,
        in_flight: usize,
        linger: Duration,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let in_flight = Arc::new(Semaphore::new(in_flight));
        tokio::spawn(forward(
            stream,
            rate_windows,
            metrics,
            rx,
            in_flight,
            linger,
        ));
        Self { queue }
    }

    /// Stores one message through the messages service, as `Send` would, unless `rate` refuses
    /// it; answers with the send's turn to append its event to the delivery log.
    pub async fn send(
        &self,
        request: pmsg::SendRequest,
        rate: Option<RateCheck>,
    ) -> (Outcome, Option<AppendTurn>) {
        let item = pmsg::BatchedSend {
            request: Some(request),
            traceparent: telemetry::current_traceparent(),
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || Err(DomainError::internal("send forwarder stopped"));
        let queued = Queued {
            item,
            rate,
            reply,
            since: Instant::now(),
        };
        if self.queue.send(queued).await.is_err() {
            return (stopped(), None);
        }
        match answer.await {
            Ok((outcome, turn)) => (outcome, Some(turn)),
            Err(_) => (stopped(), None),
        }
    }
}

async fn forward(
    stream: SendStream,
    rate_windows: RateWindows,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Queued>,
    in_flight: Arc<Semaphore>,
    linger: Duration,
) {
    let mut held_back = None;
    let mut next_call = Instant::now();
    // The end of the line of append turns: each batch's sends queue behind the previous one's.
    let mut last_turn = None;
    loop {
        let Some(first) = batch::first(&mut held_back, &mut rx).await else {
            return;
        };
        // Waiting for the pace and for a free place is what lets sends gather.
        if next_call > Instant::now() {
            tokio::time::sleep_until(next_call).await;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        next_call = Instant::now() + linger;
        let batch;
        (batch, held_back) = gather(first, &mut rx);
        let leaves = Instant::now();
        for q in &batch {
            metrics.send_stage(SendStage::Queued, leaves - q.since, 1);
        }
        let turns = AppendTurn::line(&mut last_turn, batch.len());
        let stream = stream.clone();
        let rate_windows = rate_windows.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let verdicts = rate_windows
                .check(batch.iter().map(|q| q.rate.as_ref()))
                .await;
            let checked = Instant::now();
            metrics.send_stage(SendStage::RateCheck, checked - leaves, batch.len());
            let mut items = Vec::with_capacity(batch.len());
            let mut replies = Vec::with_capacity(batch.len());
            for ((q, verdict), turn) in batch.into_iter().zip(verdicts).zip(turns) {
                match verdict {
                    Ok(()) => {
                        items.push(q.item);
                        replies.push((q.reply, turn));
                    }
                    // Its turn goes with it, unused: the next send's comes at once.
                    Err(refused) => {
                        let _ = q.reply.send((Err(refused), turn));
                    }
                }
            }
            if items.is_empty() {
                return;
            }
            let answer = stream.send(items).await;
            drop(permit);
            let sends = replies.len();
            let stored = Instant::now();
            metrics.send_stage(SendStage::Store, stored - checked, sends);
            for ((reply, turn), outcome) in replies.into_iter().zip(outcomes(answer, sends)) {
                let _ = reply.send((outcome, turn));
            }
        });
    }
}

/// `first` and what queued behind it, within a batch's limits; a send that would take the batch
/// over its byte limit is handed back, to lead the next batch.
fn gather(first: Queued, rx: &mut mpsc::Receiver<Queued>) -> (Vec<Queued>, Option<Queued>) {
    batch::gather(first, rx, MAX_ITEMS_PER_BATCH, MAX_BYTES_PER_BATCH, |q| {
        q.item.encoded_len()
    })
}

/// One outcome per send of a batch: the service's own, or the batch's failure for each.
fn outcomes(answer: Result<Vec<pmsg::SendOutcome>, DomainError>, sends: usize) -> Vec<Outcome> {
    match answer {
        Ok(r) if r.len() == sends => r.into_iter().map(outcome).collect(),
        Ok(r) => {
            tracing::error!(
                sends,
                outcomes = r.len(),
                "the messages service answered a batch with a different number of sends"
            );
            vec![
                Err(DomainError::internal(
                    "messages service answered out of step"
                ));
                sends
            ]
        }
        Err(e) => vec![Err(e); sends],
    }
}

fn outcome(o: pmsg::SendOutcome) -> Outcome {
    match o.outcome {
        Some(pmsg::send_outcome::Outcome::Sent(sent)) => Ok(sent),
        Some(pmsg::send_outcome::Outcome::Error(e)) => Err(DomainError::new(
            ErrorCode::from_name(&e.code).unwrap_or(ErrorCode::Internal),
            e.message,
        )),
        None => Err(DomainError::internal(
            "messages service sent an empty outcome",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: ErrorCode) -> pmsg::SendOutcome {
        pmsg::SendOutcome {
            outcome: Some(pmsg::send_outcome::Outcome::Error(pmsg::SendError {
                code: code.name().to_string(),
                message: "no".into(),
            })),
        }
    }

    #[test]
    fn each_send_gets_its_own_outcome_in_order() {
        let sent = pmsg::SendResponse {
            created: true,
            outbox_id: 7,
            ..Default::default()
        };
        let answer = vec![
            refused(ErrorCode::NotFound),
            pmsg::SendOutcome {
                outcome: Some(pmsg::send_outcome::Outcome::Sent(sent.clone())),
            },
            refused(ErrorCode::Validation),
        ];
        let got = outcomes(Ok(answer), 3);
        assert_eq!(got[0].as_ref().unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(got[1].as_ref().unwrap(), &sent);
        assert_eq!(got[2].as_ref().unwrap_err().code, ErrorCode::Validation);
    }

    fn queued(content_bytes: usize) -> Queued {
        let item = pmsg::BatchedSend {
            request: Some(pmsg::SendRequest {
                content: "x".repeat(content_bytes),
                ..Default::default()
            }),
            traceparent: String::new(),
        };
        Queued {
            item,
            rate: None,
            reply: oneshot::channel().0,
            since: Instant::now(),
        }
    }

    #[test]
    fn a_batch_takes_what_queued_within_its_limits() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        // Three sends of 0.4 MiB: two fit in a batch, the third leads the next one.
        for _ in 0..3 {
            assert!(tx.try_send(queued(400 << 10)).is_ok());
        }
        let (batch, held_back) = gather(queued(1), &mut rx);
        assert_eq!(batch.len(), 3);
        let held_back = held_back.expect("the third large send waits");
        let (batch, rest) = gather(held_back, &mut rx);
        assert_eq!((batch.len(), rest.is_none()), (1, true));
        // A send larger than the limit still goes, alone.
        let (batch, rest) = gather(queued(2 << 20), &mut rx);
        assert_eq!((batch.len(), rest.is_none()), (1, true));
        // Small sends: at most MAX_ITEMS_PER_BATCH per batch.
        for _ in 0..MAX_ITEMS_PER_BATCH + 5 {
            assert!(tx.try_send(queued(10)).is_ok());
        }
        let (batch, rest) = gather(queued(10), &mut rx);
        assert_eq!((batch.len(), rest.is_none()), (MAX_ITEMS_PER_BATCH, true));
        assert_eq!(rx.len(), 6);
    }

    #[test]
    fn a_failed_or_short_answer_fails_every_send() {
        let down = DomainError::new(ErrorCode::Unavailable, "down");
        let got = outcomes(Err(down.clone()), 2);
        assert!(got.iter().all(|o| o.as_ref().unwrap_err() == &down));
        let short = vec![refused(ErrorCode::NotFound)];
        let got = outcomes(Ok(short), 2);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|o| o.as_ref().unwrap_err().code == ErrorCode::Internal)
        );
    }
}
