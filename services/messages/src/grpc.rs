//! The `Messages` gRPC service: converts requests to domain types (validating them), calls the
//! [`Store`], converts answers back.

use switchboard_common::{DomainError, telemetry, time_fmt::to_ms};
use switchboard_proto::messages::{self as pb, messages_server::Messages};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::{
    batch::SendBatcher,
    model::{
        self, Claim, HistoryQuery, MarkRead, MessageDelete, MessageEdit, MessageGet, NewMessage,
        ReceiptsQuery,
    },
    send_stream,
    store::{self, Store},
};

/// The service implementation.
#[derive(Debug, Clone)]
pub struct MessagesService {
    store: Store,
    batcher: SendBatcher,
    max_content_chars: usize,
    /// Becomes true when the service starts shutting down: send streams then drain.
    stopping: watch::Receiver<bool>,
}

impl MessagesService {
    /// Starts the send batcher (see [`crate::batch`]) on the current runtime.
    pub fn new(
        store: Store,
        max_content_chars: usize,
        send_lanes: usize,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            batcher: SendBatcher::start(store.clone(), send_lanes),
            store,
            max_content_chars,
            stopping,
        }
    }

    async fn send_one(&self, request: pb::SendRequest) -> Result<pb::SendResponse, DomainError> {
        let m = NewMessage::try_from(request)?;
        m.check(self.max_content_chars)?;
        let sent = if store::batchable(&m) {
            self.batcher.send(m).await
        } else {
            self.store.send(&m).await
        }?;
        Ok(pb::SendResponse {
            message: Some(sent.message.into()),
            created: sent.created,
            outbox_id: sent.outbox_id,
        })
    }

    /// Stores one batch of a send stream: each send as `Send` would, concurrently, so that its
    /// plain sends land in the same group commit; an outcome per send, in order.
    pub(crate) async fn send_batch(&self, batch: pb::SendBatch) -> pb::SendBatchOutcomes {
        let outcomes = if batch.sends.len() > MAX_SENDS_PER_BATCH {
            let refused =
                DomainError::validation(format!("at most {MAX_SENDS_PER_BATCH} sends per batch"));
            vec![Err(refused); batch.sends.len()]
        } else {
            futures_util::future::join_all(batch.sends.into_iter().map(|send| {
                // Each send is a span of its sender's trace.
                let span = tracing::info_span!("send");
                telemetry::set_parent_traceparent(&span, &send.traceparent);
                async move {
                    let request = send
                        .request
                        .ok_or_else(|| DomainError::validation("missing request"))?;
                    self.send_one(request).await
                }
                .instrument(span)
            }))
            .await
        };
        let outcomes = outcomes
            .into_iter()
            .map(|r| pb::SendOutcome {
                outcome: Some(match r {
                    Ok(sent) => pb::send_outcome::Outcome::Sent(sent),
                    Err(e) => pb::send_outcome::Outcome::Error(pb::SendError {
                        code: e.code.name().to_string(),
                        message: e.message,
                    }),
                }),
            })
            .collect();
        pb::SendBatchOutcomes {
            batch_id: batch.batch_id,
            outcomes,
            draining: false,
        }
    }
}

fn status(e: DomainError) -> Status {
    e.into()
}

/// The most sends one batch of a send stream may carry; every send of a larger one is refused.
pub const MAX_SENDS_PER_BATCH: usize = 1024;

#[tonic::async_trait]
impl Messages for MessagesService {
    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        self.send_one(request.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    type SendStreamStream = send_stream::Answers;

    async fn send_stream(
        &self,
        request: Request<Streaming<pb::SendBatch>>,
    ) -> Result<Response<Self::SendStreamStream>, Status> {
        let answers = send_stream::start(self.clone(), request.into_inner(), self.stopping.clone());
        Ok(Response::new(answers))
    }

    async fn edit(
        &self,
        request: Request<pb::EditRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let e = MessageEdit::try_from(request.into_inner()).map_err(status)?;
        e.check(self.max_content_chars).map_err(status)?;
        let (m, outbox_id) = self.store.edit(&e).await.map_err(status)?;
        Ok(Response::new(pb::ChangeResponse {
            message: Some(m.into()),
            outbox_id,
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let d = MessageDelete::try_from(request.into_inner()).map_err(status)?;
        let (m, outbox_id) = self.store.delete(&d).await.map_err(status)?;
        Ok(Response::new(pb::ChangeResponse {
            message: Some(m.into()),
            outbox_id,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetMessageRequest>,
    ) -> Result<Response<pb::Message>, Status> {
        let g = MessageGet::try_from(request.into_inner()).map_err(status)?;
        let m = self.store.get(&g).await.map_err(status)?;
        Ok(Response::new(m.into()))
    }

    async fn locate(
        &self,
        request: Request<pb::LocateMessageRequest>,
    ) -> Result<Response<switchboard_proto::common::RoomRef>, Status> {
        let id = request.into_inner().message_id;
        if id <= 0 {
            return Err(status(DomainError::validation(
                "message_id must be a positive id",
            )));
        }
        let room = self.store.locate(id).await.map_err(status)?;
        Ok(Response::new(room.into()))
    }

    async fn create_file(
        &self,
        request: Request<pb::CreateFileRequest>,
    ) -> Result<Response<pb::File>, Status> {
        let r = request.into_inner();
        switchboard_common::room::check_id("uploader_id", &r.uploader_id).map_err(status)?;
        let text = |what: &str, v: &str| {
            if v.is_empty() || switchboard_common::room::exceeds_chars(v, 1024) || v.contains('\0')
            {
                Err(status(DomainError::validation(format!(
                    "{what} must be 1-1024 characters"
                ))))
            } else {
                Ok(())
            }
        };
        text("file_name", &r.file_name)?;
        text("mime_type", &r.mime_type)?;
        text("storage_key", &r.storage_key)?;
        if r.file_size < 0 {
            return Err(status(DomainError::validation(
                "file_size must not be negative",
            )));
        }
        let f = crate::store::NewFile {
            uploader_id: r.uploader_id,
            file_name: r.file_name,
            file_size: r.file_size,
            mime_type: r.mime_type,
            storage_key: r.storage_key,
        };
        let f = self.store.create_file(&f).await.map_err(status)?;
        Ok(Response::new(file_proto(f)))
    }

    async fn get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> Result<Response<pb::File>, Status> {
        let id = request.into_inner().file_id;
        if id <= 0 {
            return Err(status(DomainError::not_found("File not found")));
        }
        let f = self.store.get_file(id).await.map_err(status)?;
        Ok(Response::new(file_proto(f)))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let r = MarkRead::try_from(request.into_inner()).map_err(status)?;
        let (moved, cursor) = self.store.mark_read(&r).await.map_err(status)?;
        Ok(Response::new(pb::MarkReadResponse {
            moved,
            message_id: cursor.message_id,
            read_at_ms: to_ms(cursor.read_at),
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let h = HistoryQuery::try_from(request.into_inner()).map_err(status)?;
        let (messages, has_more) = self.store.history(&h).await.map_err(status)?;
        Ok(Response::new(pb::HistoryResponse {
            messages: messages.into_iter().map(Into::into).collect(),
            has_more,
        }))
    }

    async fn list_receipts(
        &self,
        request: Request<pb::ListReceiptsRequest>,
    ) -> Result<Response<pb::ListReceiptsResponse>, Status> {
        let q = ReceiptsQuery::try_from(request.into_inner()).map_err(status)?;
        let cursors = self.store.receipts(&q).await.map_err(status)?;
        Ok(Response::new(pb::ListReceiptsResponse {
            receipts: cursors
                .into_iter()
                .map(|c| pb::Receipt {
                    user_id: c.user_id,
                    message_id: c.message_id,
                    read_at_ms: to_ms(c.read_at),
                })
                .collect(),
        }))
    }

    async fn claim_undelivered(
        &self,
        request: Request<pb::ClaimUndeliveredRequest>,
    ) -> Result<Response<pb::ClaimUndeliveredResponse>, Status> {
        let c = Claim::try_from(request.into_inner()).map_err(status)?;
        let entries = self.store.claim_undelivered(&c).await.map_err(status)?;
        Ok(Response::new(pb::ClaimUndeliveredResponse {
            events: entries
                .into_iter()
                .map(|e| pb::OutboxEvent {
                    outbox_id: e.outbox_id,
                    event: e.event,
                    message: Some(e.message.into()),
                })
                .collect(),
        }))
    }

    async fn mark_delivered(
        &self,
        request: Request<pb::MarkDeliveredRequest>,
    ) -> Result<Response<pb::MarkDeliveredResponse>, Status> {
        let ids = model::delivered_ids(request.into_inner()).map_err(status)?;
        self.store.mark_delivered(&ids).await.map_err(status)?;
        Ok(Response::new(pb::MarkDeliveredResponse {}))
    }
}

fn file_proto(f: crate::store::StoredFile) -> pb::File {
    pb::File {
        id: f.id,
        uploader_id: f.file.uploader_id,
        file_name: f.file.file_name,
        file_size: f.file.file_size,
        mime_type: f.file.mime_type,
        storage_key: f.file.storage_key,
        created_at_ms: to_ms(f.created_at),
        rooms: f.rooms.into_iter().map(Into::into).collect(),
    }
}
