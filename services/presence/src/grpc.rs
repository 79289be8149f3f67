//! The gRPC edge: converts requests to domain types (validating them), calls the store,
//! converts back.

use std::sync::Arc;

use switchboard_proto::presence::{self as pb, presence_server::Presence};
use tonic::{Request, Response, Status};

use crate::{
    domain::{NewSocket, PresenceQuery, Refresh, SocketKey, TypingChange},
    store::Store,
};

/// The `Presence` service.
pub struct PresenceService {
    store: Arc<Store>,
}

impl PresenceService {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl Presence for PresenceService {
    async fn add_socket(
        &self,
        request: Request<pb::AddSocketRequest>,
    ) -> Result<Response<pb::AddSocketResponse>, Status> {
        let socket = NewSocket::try_from(request.into_inner())?;
        let user_was_offline = self.store.add_socket(socket).await?;
        Ok(Response::new(pb::AddSocketResponse { user_was_offline }))
    }

    async fn remove_socket(
        &self,
        request: Request<pb::RemoveSocketRequest>,
    ) -> Result<Response<pb::RemoveSocketResponse>, Status> {
        let key = SocketKey::try_from(request.into_inner().socket)?;
        let user_now_offline = self.store.remove_socket(key).await?;
        Ok(Response::new(pb::RemoveSocketResponse { user_now_offline }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let refresh = Refresh::try_from(request.into_inner())?;
        self.store.refresh(refresh).await?;
        Ok(Response::new(pb::RefreshResponse {}))
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        let query = PresenceQuery::try_from(request.into_inner())?;
        let users = self.store.get_presence(query).await?;
        Ok(Response::new(pb::GetPresenceResponse {
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    async fn typing(
        &self,
        request: Request<pb::TypingRequest>,
    ) -> Result<Response<pb::TypingResponse>, Status> {
        let change = TypingChange::try_from(request.into_inner())?;
        let changed = self.store.typing(change).await?;
        Ok(Response::new(pb::TypingResponse { changed }))
    }
}
