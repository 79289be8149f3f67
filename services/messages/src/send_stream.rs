//! Serves one gateway's `SendStream`: batches of sends arrive as messages on one long-lived
//! stream, each is stored like a `Send` per item (its plain sends joining the same group
//! commit), and its outcomes go back under its id as soon as they are known.
//!
//! A call per batch cost the service an HTTP/2 stream, its headers, a task, a span and a
//! response each; on a stream a batch is one message each way, and the service spends a third
//! fewer instructions per send (docs/benchmarks §31).
//!
//! On shutdown the service tells the gateway (`draining`), keeps answering whatever it still
//! sends until the gateway closes its side (or [`DRAIN_GRACE`] passes), and then ends the
//! stream. So a rolling restart answers every batch, and the gateway opens its next stream on
//! another replica.

use std::time::Duration;

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use switchboard_proto::messages as pb;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::grpc::MessagesService;

/// The most batches of one stream stored at once; beyond it the stream is not read, so HTTP/2's
/// flow control holds the gateway back.
const BATCHES_IN_FLIGHT: usize = 64;

/// How long a draining stream waits for the gateway to close its side.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Answers sent but not yet taken by the connection.
const ANSWERS_QUEUED: usize = 64;

/// A send stream's answers, as tonic takes them.
pub(crate) type Answers = ReceiverStream<Result<pb::SendBatchOutcomes, Status>>;

/// Starts serving `batches` on the current runtime; the answers come out of what it returns.
pub(crate) fn start(
    service: MessagesService,
    batches: Streaming<pb::SendBatch>,
    stopping: watch::Receiver<bool>,
) -> Answers {
    let (answers, rx) = mpsc::channel(ANSWERS_QUEUED);
    tokio::spawn(serve(service, batches, stopping, answers));
    ReceiverStream::new(rx)
}

async fn serve(
    service: MessagesService,
    mut batches: Streaming<pb::SendBatch>,
    mut stopping: watch::Receiver<bool>,
    answers: mpsc::Sender<Result<pb::SendBatchOutcomes, Status>>,
) {
    let mut running = FuturesUnordered::new();
    // Whether the gateway may still send (its side open, and the drain's grace not over).
    let mut reading = true;
    let mut drain_deadline = None;
    loop {
        tokio::select! {
            // Answers first: a finished batch frees its place before another is read.
            biased;
            Some(outcomes) = running.next() => {
                if answers.send(Ok(outcomes)).await.is_err() {
                    return; // the gateway has gone: its batches are stored, unanswered
                }
            }
            batch = batches.message(), if reading && running.len() < BATCHES_IN_FLIGHT => {
                match batch {
                    Ok(Some(batch)) => running.push(service.send_batch(batch)),
                    Ok(None) => reading = false,
                    Err(status) => {
                        tracing::debug!(%status, "send stream broken by the gateway");
                        reading = false;
                    }
                }
            }
            signalled = async { stopping.wait_for(|stop| *stop).await.is_ok() },
                if drain_deadline.is_none() =>
            {
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                if !signalled {
                    continue; // the service is gone without a signal: drain all the same
                }
                let notice = pb::SendBatchOutcomes {
                    draining: true,
                    ..Default::default()
                };
                if answers.send(Ok(notice)).await.is_err() {
                    return;
                }
            }
            () = sleep_until(drain_deadline), if reading && drain_deadline.is_some() => {
                tracing::warn!("gateway kept its send stream open past the drain's grace");
                reading = false;
            }
            else => break,
        }
        if !reading && running.is_empty() {
            break;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
