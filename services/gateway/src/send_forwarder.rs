//! Forwards this node's sends to the messages service, several per call under load.
//!
//! A call per send was most of what the messages service spent on a send (an HTTP/2 stream,
//! headers, a task and a response each); one call for whatever queued meanwhile cut its CPU
//! per send by a third and the gateways' by a tenth (docs/benchmarks §12). The forwarder keeps
//! at most `in_flight` `SendMany` calls open (`SWITCHBOARD_SENDS_IN_FLIGHT`, 2): a send that
//! finds one free goes out at once, alone, so a quiet node waits for nothing; sends that arrive
//! while all are busy queue and leave together in the next call. Each send keeps its own trace
//! (its `traceparent` rides in the item) and gets its own outcome.

use std::sync::Arc;

use prost::Message as _;

use switchboard_common::{DomainError, ErrorCode, telemetry};
use switchboard_proto::messages as pmsg;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clients::Clients;

/// The most sends one call carries.
const MAX_ITEMS_PER_CALL: usize = 256;
/// The most bytes of sends one call carries (unless its first send alone is larger): a call, and
/// its answer, which repeats each message, stay well under tonic's 4 MiB message limit.
const MAX_BYTES_PER_CALL: usize = 1 << 20;
/// Sends waiting for a call; a full queue makes senders wait.
const QUEUE: usize = 10_000;

type Outcome = Result<pmsg::SendResponse, DomainError>;

struct Queued {
    item: pmsg::SendManyItem,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Clone)]
pub struct SendForwarder {
    queue: mpsc::Sender<Queued>,
}

impl SendForwarder {
    /// Starts the forwarding task on the current runtime.
    pub fn start(clients: Clients, in_flight: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(forward(clients, rx, Arc::new(Semaphore::new(in_flight))));
        Self { queue }
    }

    /// Stores one message through the messages service, as `Send` would.
    pub async fn send(&self, request: pmsg::SendRequest) -> Outcome {
        let item = pmsg::SendManyItem {
            request: Some(request),
            traceparent: telemetry::current_traceparent(),
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || DomainError::internal("send forwarder stopped");
        self.queue
            .send(Queued { item, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn forward(clients: Clients, mut rx: mpsc::Receiver<Queued>, in_flight: Arc<Semaphore>) {
    let mut held_back = None;
    loop {
        let first = match held_back.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        // Waiting for a free call is what lets sends gather.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let batch;
        (batch, held_back) = gather(first, &mut rx);
        let clients = clients.clone();
        tokio::spawn(async move {
            let (items, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|q| (q.item, q.reply)).unzip();
            let mut messages = clients.messages.clone();
            let call = messages.send_many(pmsg::SendManyRequest { items });
            let answer = clients.call("messages", "SendMany", call).await;
            drop(permit);
            let sends = replies.len();
            for (reply, outcome) in replies.into_iter().zip(outcomes(answer, sends)) {
                let _ = reply.send(outcome);
            }
        });
    }
}

/// `first` and what queued behind it, within a call's limits; a send that would take the call
/// over its byte limit is handed back, to lead the next call.
fn gather(first: Queued, rx: &mut mpsc::Receiver<Queued>) -> (Vec<Queued>, Option<Queued>) {
    let mut bytes = first.item.encoded_len();
    let mut batch = vec![first];
    while batch.len() < MAX_ITEMS_PER_CALL {
        let Ok(q) = rx.try_recv() else {
            break;
        };
        bytes += q.item.encoded_len();
        if bytes > MAX_BYTES_PER_CALL {
            return (batch, Some(q));
        }
        batch.push(q);
    }
    (batch, None)
}

/// One outcome per send of a call: the service's own, or the call's failure for each.
fn outcomes(answer: Result<pmsg::SendManyResponse, DomainError>, sends: usize) -> Vec<Outcome> {
    match answer {
        Ok(r) if r.outcomes.len() == sends => r.outcomes.into_iter().map(outcome).collect(),
        Ok(r) => {
            tracing::error!(
                sends,
                outcomes = r.outcomes.len(),
                "SendMany answered a different number of sends"
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
        let answer = pmsg::SendManyResponse {
            outcomes: vec![
                refused(ErrorCode::NotFound),
                pmsg::SendOutcome {
                    outcome: Some(pmsg::send_outcome::Outcome::Sent(sent.clone())),
                },
                refused(ErrorCode::Validation),
            ],
        };
        let got = outcomes(Ok(answer), 3);
        assert_eq!(got[0].as_ref().unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(got[1].as_ref().unwrap(), &sent);
        assert_eq!(got[2].as_ref().unwrap_err().code, ErrorCode::Validation);
    }

    fn queued(content_bytes: usize) -> Queued {
        let item = pmsg::SendManyItem {
            request: Some(pmsg::SendRequest {
                content: "x".repeat(content_bytes),
                ..Default::default()
            }),
            traceparent: String::new(),
        };
        Queued {
            item,
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_call_takes_what_queued_within_its_limits() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        // Three sends of 0.4 MiB: two fit in a call, the third leads the next one.
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
        // Small sends: at most MAX_ITEMS_PER_CALL per call.
        for _ in 0..MAX_ITEMS_PER_CALL + 5 {
            assert!(tx.try_send(queued(10)).is_ok());
        }
        let (batch, rest) = gather(queued(10), &mut rx);
        assert_eq!((batch.len(), rest.is_none()), (MAX_ITEMS_PER_CALL, true));
        assert_eq!(rx.len(), 6);
    }

    #[test]
    fn a_failed_or_short_answer_fails_every_send() {
        let down = DomainError::new(ErrorCode::Unavailable, "down");
        let got = outcomes(Err(down.clone()), 2);
        assert!(got.iter().all(|o| o.as_ref().unwrap_err() == &down));
        let short = pmsg::SendManyResponse {
            outcomes: vec![refused(ErrorCode::NotFound)],
        };
        let got = outcomes(Ok(short), 2);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|o| o.as_ref().unwrap_err().code == ErrorCode::Internal)
        );
    }
}
