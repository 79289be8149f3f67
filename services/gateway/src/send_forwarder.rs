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

use switchboard_common::{DomainError, ErrorCode, telemetry};
use switchboard_proto::messages as pmsg;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clients::Clients;

/// The most sends one call carries.
const MAX_ITEMS_PER_CALL: usize = 256;
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
    while let Some(first) = rx.recv().await {
        // Waiting for a free call is what lets sends gather.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_ITEMS_PER_CALL {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
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
