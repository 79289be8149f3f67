//! The core every dialect and the integration API share: rooms, permissions, messages, read
//! cursors, typing and the rate limit, as commands over the services' gRPC APIs. Business rules
//! live here (or in the services); dialects only parse and render.

use std::{sync::Arc, time::Duration};

use fred::{interfaces::PubsubInterface, prelude::Client};
use switchboard_common::{DomainError, ErrorCode, Permission, Permissions, RoomKey};
use switchboard_presence::{
    domain::TypingChange,
    typing::{NodeTyping, TypingBoard},
};
use switchboard_proto::{common as pc, membership as pm, messages as pmsg, presence as pp};

use crate::{
    authz::{AuthzCache, Cached, Contacts},
    clients::Clients,
    config::Config,
    delivery_log::AppendTurn,
    dialect::Mount,
    fanout::{Adapter, Fanout},
    metrics::SendStage,
    rate::{RateCheck, RateWindows},
    send_forwarder::SendForwarder,
    send_stream::SendStream,
};

pub use crate::rate::RateRule;

pub use switchboard_common::room::user_room;

/// A room from a service's answer (the service validated it when it was stored).
fn room_of(r: Option<pc::RoomRef>) -> Result<RoomKey, DomainError> {
    let r = r.ok_or_else(|| DomainError::internal("service answered without a room"))?;
    Ok(RoomKey::new(r.kind, r.id))
}

/// The room every socket of one session joins, so revoking the session reaches them.
pub fn session_room(session_id: &str) -> String {
    format!("session:{session_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageEvent {
    New,
    Edited,
    Deleted,
}

impl MessageEvent {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "new" => Some(Self::New),
            "edited" => Some(Self::Edited),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: i64,
    pub room: RoomKey,
    pub seq: i64,
    pub sender_id: String,
    pub kind: String,
    pub content: String,
    pub file_id: Option<i64>,
    pub file_name: Option<String>,
    pub file_size: Option<i64>,
    pub mime_type: Option<String>,
    pub reply_to_id: Option<i64>,
    pub client_id: Option<String>,
    pub created_at_ms: i64,
    pub edited_at_ms: Option<i64>,
    pub deleted_at_ms: Option<i64>,
}

impl TryFrom<Option<pmsg::Message>> for Message {
    type Error = DomainError;
    fn try_from(m: Option<pmsg::Message>) -> Result<Self, DomainError> {
        let m = m.ok_or_else(|| DomainError::internal("service answered without a message"))?;
        Message::try_from(m)
    }
}

impl TryFrom<pmsg::Message> for Message {
    type Error = DomainError;
    fn try_from(m: pmsg::Message) -> Result<Self, DomainError> {
        Ok(Message {
            id: m.id,
            room: room_of(m.room)?,
            seq: m.seq,
            sender_id: m.sender_id,
            kind: m.r#type,
            content: m.content,
            file_id: m.file_id,
            file_name: m.file_name,
            file_size: m.file_size,
            mime_type: m.mime_type,
            reply_to_id: m.reply_to_id,
            client_id: m.client_id,
            created_at_ms: m.created_at_ms,
            edited_at_ms: m.edited_at_ms,
            deleted_at_ms: m.deleted_at_ms,
        })
    }
}

/// A room with its direct members (oldest grant first).
#[derive(Debug, Clone)]
pub struct RoomInfo {
    pub room: RoomKey,
    pub parent: Option<RoomKey>,
    pub title: Option<String>,
    pub kind_type: Option<String>,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: String,
    pub role: String,
    pub granted_at_ms: i64,
}

impl TryFrom<pm::RoomDetail> for RoomInfo {
    type Error = DomainError;
    fn try_from(d: pm::RoomDetail) -> Result<Self, DomainError> {
        let r = d
            .room
            .ok_or_else(|| DomainError::internal("room detail without room"))?;
        Ok(RoomInfo {
            room: room_of(r.room)?,
            parent: r.parent.map(|p| RoomKey::new(p.kind, p.id)),
            title: r.title,
            kind_type: r.r#type,
            created_by: r.created_by,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            members: d
                .members
                .into_iter()
                .map(|m| Member {
                    user_id: m.user_id,
                    role: m.role,
                    granted_at_ms: m.granted_at_ms,
                })
                .collect(),
        })
    }
}

impl RoomInfo {
    /// `createdBy`, falling back to the earliest-granted current member.
    pub fn creator(&self) -> Option<&str> {
        self.created_by
            .as_deref()
            .or_else(|| self.members.first().map(|m| m.user_id.as_str()))
    }
}

/// What a client asked to send.
#[derive(Debug, Clone)]
pub struct SendCommand {
    pub room: RoomKey,
    pub sender_id: String,
    pub kind: String,
    pub content: String,
    pub client_id: Option<String>,
    pub reply_to_id: Option<i64>,
    /// The socket that sent it, when a socket did (not the integration API).
    pub origin: Option<Origin>,
    /// The uploaded file an image or file message refers to (its stored metadata).
    pub file: Option<FileRef>,
}

/// An uploaded file as a message carries it.
#[derive(Debug, Clone)]
pub struct FileRef {
    pub id: i64,
    pub name: String,
    pub size: i64,
    pub mime_type: String,
}

/// A user's role in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRole {
    pub name: String,
    /// From a membership of this very room (not inherited from a parent).
    pub direct: bool,
}

/// The socket an event came from (some contracts leave it out of the broadcast).
#[derive(Debug, Clone)]
pub struct Origin {
    pub namespace: String,
    pub socket: socketioxide::socket::Sid,
}

/// Something that happened, for every mounted dialect to render in its own contract. Room
/// events reach the dialects whose room kinds include the room's; the others name their
/// namespace.
#[derive(Debug)]
pub enum CoreEvent<'a> {
    /// A stored message was created, edited or deleted.
    Message {
        event: MessageEvent,
        message: &'a Message,
        origin: Option<&'a Origin>,
    },
    /// A room's metadata or membership changed; `removed` lost their membership.
    RoomChanged {
        room: &'a RoomInfo,
        removed: Option<&'a str>,
    },
    /// A user became (`joined`) or stopped being a direct member of a room.
    MemberChanged {
        room: &'a RoomInfo,
        user_id: &'a str,
        joined: bool,
    },
    /// A user came online or went offline in a namespace; every node emits it to its own sockets.
    Presence {
        user_id: &'a str,
        online: bool,
        at_ms: i64,
    },
    /// A socket asked for its user's presence to be announced (a heartbeat).
    PresenceHeartbeat { user_id: &'a str },
    /// Typing started or stopped in a room; `local`: every node handles it for its own sockets.
    Typing {
        room: &'a RoomKey,
        user_id: &'a str,
        typing: bool,
        local: bool,
    },
    /// A user's read cursor moved forward in a room.
    Receipt {
        room: &'a RoomKey,
        user_id: &'a str,
        message_id: i64,
        read_at_ms: i64,
    },
}

impl CoreEvent<'_> {
    /// The room this event is about, for room events.
    fn room_kind(&self) -> Option<&str> {
        match self {
            CoreEvent::Message { message, .. } => Some(&message.room.kind),
            CoreEvent::RoomChanged { room, .. } | CoreEvent::MemberChanged { room, .. } => {
                Some(&room.room.kind)
            }
            _ => None,
        }
    }
}

/// The result of a send.
pub struct Sent {
    pub message: Message,
    /// False for an idempotent repeat (nothing broadcast).
    pub created: bool,
}

pub struct ReadResult {
    pub moved: bool,
    pub message_id: i64,
    pub read_at_ms: i64,
}

pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// The channel on which nodes tell each other to forget authorization decisions.
pub fn authz_channel(redis_prefix: &str) -> String {
    format!("{redis_prefix}authz:changed")
}

pub struct Core {
    pub clients: Clients,
    pub fanout: Arc<Fanout>,
    mounts: Vec<Mount>,
    redis: Client,
    config: Arc<Config>,
    confirmations: tokio::sync::mpsc::Sender<i64>,
    sends: SendForwarder,
    typing: Arc<NodeTyping>,
    pub authz: Arc<AuthzCache>,
}

impl Core {
    /// Needs a Tokio runtime: it starts the delivery-confirmation batcher.
    pub(crate) fn new(
        clients: Clients,
        fanout: Arc<Fanout>,
        mounts: Vec<Mount>,
        redis: Client,
        config: Arc<Config>,
    ) -> Self {
        let (confirmations, rx) = tokio::sync::mpsc::channel(10_000);
        tokio::spawn(confirm_deliveries(clients.clone(), rx));
        let rate_windows = RateWindows::new(redis.clone(), fanout.metrics().clone());
        let sends = SendForwarder::start(
            SendStream::start(clients.clone(), config.grpc_timeout),
            rate_windows,
            fanout.metrics().clone(),
            config.sends_in_flight,
            config.send_linger,
        );
        Self {
            sends,
            clients,
            fanout,
            mounts,
            typing: NodeTyping::start(TypingBoard::new(redis.clone(), &config.redis_prefix)),
            redis,
            authz: Arc::new(AuthzCache::new(config.authz_cache_ttl)),
            config,
            confirmations,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The mounted dialects.
    pub(crate) fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Lets every dialect concerned render `event` (those mounted on `namespace`, or for room
    /// events those whose room kinds include the room's) and emits what they render. Answers
    /// false when a publish failed (Redis away).
    pub async fn publish(&self, namespace: Option<&str>, event: CoreEvent<'_>) -> bool {
        let kind = event.room_kind();
        let mut ok = true;
        for m in &self.mounts {
            if namespace.is_some_and(|n| n != &*m.namespace) {
                continue;
            }
            if kind.is_some_and(|k| !m.dialect.room_kinds().contains(&k)) {
                continue;
            }
            for e in m.dialect.render(self, &m.namespace, &event).await {
                ok &= self.fanout.emit(e).await;
            }
        }
        ok
    }

    /// Delivers a stored event (it has outbox entry `outbox_id`) to every concerned dialect's
    /// sockets, each socket once however often it is delivered (see
    /// [`Fanout::deliver_stored`]). Answers false when it could not be published (Redis away).
    pub async fn deliver_stored(
        &self,
        event: CoreEvent<'_>,
        outbox_id: i64,
        turn: Option<AppendTurn>,
    ) -> bool {
        let kind = event.room_kind();
        let created_at_ms = match &event {
            CoreEvent::Message { message, .. } => message.created_at_ms,
            _ => 0,
        };
        let mut emissions = Vec::new();
        for m in &self.mounts {
            if kind.is_some_and(|k| !m.dialect.room_kinds().contains(&k)) {
                continue;
            }
            emissions.extend(m.dialect.render(self, &m.namespace, &event).await);
        }
        self.fanout
            .deliver_stored(outbox_id, created_at_ms, emissions, turn)
            .await
    }

    /// Disconnects every socket in a socket room (a user's, a session's) in every namespace,
    /// cluster-wide, after each dialect's notice (when its contract has one).
    pub async fn disconnect_room(&self, room: String, reason: &str) -> bool {
        let mut ok = true;
        for m in &self.mounts {
            if let Some(notice) = m.dialect.disconnect_notice(reason) {
                ok &= self
                    .fanout
                    .emit(crate::fanout::Emission::new(
                        &m.namespace,
                        vec![room.clone()],
                        notice.event,
                        notice.data,
                    ))
                    .await;
            }
            ok &= self.fanout.disconnect(&m.namespace, room.clone()).await;
        }
        ok
    }

    /// Asks the membership service whether `user_id` may do `action` in `room`, and remembers
    /// what the answer allows (see [`crate::authz`]).
    pub async fn authorize(
        &self,
        user_id: &str,
        room: &RoomKey,
        action: Permission,
    ) -> Result<pm::AuthorizeResponse, DomainError> {
        let asked = self.authz.asked();
        let d = ask_membership(&self.clients, user_id, room, action).await?;
        self.authz
            .remember(user_id, room, asked, granted(&d, action));
        Ok(d)
    }

    /// Whether a remembered answer allows it. The first use of an answer past its refresh point
    /// asks again in the background, and this event goes on with the answer it has.
    fn cached(&self, user_id: &str, room: &RoomKey, action: Permission) -> bool {
        match self.authz.lookup(user_id, room, action) {
            Cached::Unknown => false,
            Cached::Allowed => true,
            Cached::Refresh => {
                let (clients, authz) = (self.clients.clone(), self.authz.clone());
                let (user_id, room) = (user_id.to_string(), room.clone());
                tokio::spawn(async move {
                    let asked = authz.asked();
                    match ask_membership(&clients, &user_id, &room, action).await {
                        Ok(d) => {
                            authz.remember_refreshed(&user_id, &room, asked, granted(&d, action))
                        }
                        // Asked again on the first event after its TTL.
                        Err(e) => tracing::debug!(error = %e, "authorization not refreshed"),
                    }
                });
                true
            }
        }
    }

    /// Whether `user_id` may do `action` in `room` (an existing room), remembering a yes for a
    /// while (see [`crate::authz`]).
    pub async fn allowed(
        &self,
        user_id: &str,
        room: &RoomKey,
        action: Permission,
    ) -> Result<bool, DomainError> {
        if self.cached(user_id, room, action) {
            return Ok(true);
        }
        let d = self.authorize(user_id, room, action).await?;
        Ok(d.room_exists && d.allowed)
    }

    /// Fails with FORBIDDEN unless allowed. A room that does not exist is FORBIDDEN too:
    /// existence is not revealed to users (the rule unless a contract documents otherwise).
    pub async fn require(
        &self,
        user_id: &str,
        room: &RoomKey,
        action: Permission,
    ) -> Result<(), DomainError> {
        match self.check(user_id, room, action).await {
            Err(e) if e.code == ErrorCode::NotFound => Err(DomainError::forbidden()),
            other => other,
        }
    }

    /// Like [`Core::require`], but a room that does not exist is NOT_FOUND: for contracts that
    /// document a not-found error for a kind of room.
    pub async fn check(
        &self,
        user_id: &str,
        room: &RoomKey,
        action: Permission,
    ) -> Result<(), DomainError> {
        if self.cached(user_id, room, action) {
            return Ok(());
        }
        let d = self.authorize(user_id, room, action).await?;
        if !d.room_exists {
            return Err(DomainError::not_found("Room not found"));
        }
        if !d.allowed {
            return Err(DomainError::forbidden());
        }
        Ok(())
    }

    /// The user's effective role in a room (None: no role there); NOT_FOUND when the room
    /// does not exist. Never cached: a role is shown to the user.
    pub async fn role(
        &self,
        user_id: &str,
        room: &RoomKey,
    ) -> Result<Option<RoomRole>, DomainError> {
        let d = self.authorize(user_id, room, Permission::Join).await?;
        if !d.room_exists {
            return Err(DomainError::not_found("Room not found"));
        }
        Ok((!d.role.is_empty()).then_some(RoomRole {
            name: d.role,
            direct: d.direct,
        }))
    }

    /// Joins a socket to a room: the user must be allowed to join (a room that does not exist
    /// is FORBIDDEN), a room already joined is not counted again, and a socket holds at most
    /// `SWITCHBOARD_MAX_ROOMS_PER_SOCKET` rooms.
    pub async fn join(
        &self,
        socket: &socketioxide::extract::SocketRef<Adapter>,
        user_id: &str,
        room: &RoomKey,
    ) -> Result<(), DomainError> {
        self.require(user_id, room, Permission::Join).await?;
        self.join_checked(socket, room)
    }

    /// The rooms-per-socket cap and the already-joined check, for a join already authorized.
    pub fn join_checked(
        &self,
        socket: &socketioxide::extract::SocketRef<Adapter>,
        room: &RoomKey,
    ) -> Result<(), DomainError> {
        let name = room.socket_room();
        let rooms = socket.rooms();
        if !rooms.iter().any(|r| r == &name) {
            if rooms.len() >= self.config.max_rooms_per_socket {
                return Err(DomainError::validation("Too many rooms joined"));
            }
            socket.join(name);
        }
        Ok(())
    }

    /// After a change that may take a permission away from `user_id` ([`crate::authz::EVERYONE`] for
    /// all): forget here at once, and tell every node. A failed publish is logged; the other
    /// nodes' entries then expire with their TTL.
    pub async fn permissions_changed(&self, user_id: &str) {
        self.authz.forget(user_id);
        if !self.authz.enabled() {
            return;
        }
        let channel = authz_channel(&self.config.redis_prefix);
        let published: Result<i64, _> = self.redis.publish(channel, user_id).await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "authorization change not published; other nodes rely on the TTL");
        }
    }

    /// Sends a message on behalf of `cmd.sender_id`: permission, rate window (when a rule is
    /// given: sockets have one, the integration API does not), store, broadcast, confirm.
    pub async fn send(
        &self,
        cmd: SendCommand,
        rate: Option<&RateRule>,
    ) -> Result<Sent, DomainError> {
        self.require(&cmd.sender_id, &cmd.room, Permission::Send)
            .await?;
        let rate = rate.map(|rule| {
            RateCheck::new(
                &self.config.redis_prefix,
                rule,
                &cmd.sender_id,
                &cmd.room,
                cmd.client_id.as_deref(),
            )
        });
        let origin = cmd.origin;
        let file = cmd.file;
        let req = pmsg::SendRequest {
            room: Some(cmd.room.to_proto()),
            sender_id: cmd.sender_id,
            r#type: cmd.kind,
            content: cmd.content,
            client_id: cmd.client_id,
            reply_to_id: cmd.reply_to_id,
            file_id: file.as_ref().map(|f| f.id),
            file_name: file.as_ref().map(|f| f.name.clone()),
            file_size: file.as_ref().map(|f| f.size),
            mime_type: file.map(|f| f.mime_type),
        };
        let (resp, turn) = self.sends.send(req, rate).await;
        let resp = resp?;
        let message = Message::try_from(resp.message)?;
        if resp.created {
            let stored = std::time::Instant::now();
            self.broadcast_and_confirm(
                MessageEvent::New,
                &message,
                resp.outbox_id,
                origin.as_ref(),
                turn,
            )
            .await;
            self.fanout
                .metrics()
                .send_stage(SendStage::Log, stored.elapsed(), 1);
        }
        Ok(Sent {
            message,
            created: resp.created,
        })
    }

    /// Broadcasts a stored event (in its `turn` among this node's sends, when it has one),
    /// then has its outbox entry removed. When the broadcast fails (Redis away) the entry stays
    /// and a sweeper on some node delivers it later. Removals are batched off the request path:
    /// one `MarkDelivered` per burst rather than per message.
    pub async fn broadcast_and_confirm(
        &self,
        event: MessageEvent,
        message: &Message,
        outbox_id: i64,
        origin: Option<&Origin>,
        turn: Option<AppendTurn>,
    ) {
        let event = CoreEvent::Message {
            event,
            message,
            origin,
        };
        let published = if outbox_id > 0 {
            self.deliver_stored(event, outbox_id, turn).await
        } else {
            self.publish(None, event).await
        };
        if published
            && outbox_id > 0
            && self.fanout.may_confirm()
            && self.confirmations.send(outbox_id).await.is_err()
        {
            tracing::warn!(
                outbox_id,
                "confirmation batcher stopped; the sweeper will redeliver"
            );
        }
    }

    /// Edits (or soft-deletes, when `content` is None) a message as `actor_id`: its sender, or
    /// anyone who may moderate the room.
    pub async fn edit(
        &self,
        room: &RoomKey,
        message_id: i64,
        actor_id: &str,
        content: Option<String>,
        edit_window_ms: i64,
    ) -> Result<Message, DomainError> {
        let moderate = self.authorize(actor_id, room, Permission::Moderate).await?;
        if !moderate.room_exists {
            return Err(DomainError::not_found("Room not found"));
        }
        let (change, event) = match content {
            Some(content) => {
                let req = pmsg::EditRequest {
                    room: Some(room.to_proto()),
                    message_id,
                    content,
                    actor_id: actor_id.to_string(),
                    actor_may_moderate: moderate.allowed,
                    edit_window_ms,
                };
                let m = self
                    .clients
                    .call("messages", "Edit", self.clients.messages.clone().edit(req))
                    .await?;
                (m, MessageEvent::Edited)
            }
            None => {
                let req = pmsg::DeleteRequest {
                    room: Some(room.to_proto()),
                    message_id,
                    actor_id: actor_id.to_string(),
                    actor_may_moderate: moderate.allowed,
                    edit_window_ms,
                };
                let m = self
                    .clients
                    .call(
                        "messages",
                        "Delete",
                        self.clients.messages.clone().delete(req),
                    )
                    .await?;
                (m, MessageEvent::Deleted)
            }
        };
        let message = Message::try_from(change.message)?;
        self.broadcast_and_confirm(event, &message, change.outbox_id, None, None)
            .await;
        Ok(message)
    }

    /// Moves the user's read cursor forward (never back) and, when it moved, broadcasts the
    /// receipt in `namespace`.
    /// `message_id` None: the client named no valid id, so no message of the room (NOT_FOUND).
    pub async fn mark_read(
        &self,
        namespace: &str,
        user_id: &str,
        room: &RoomKey,
        message_id: Option<i64>,
    ) -> Result<ReadResult, DomainError> {
        self.require(user_id, room, Permission::Read).await?;
        let message_id = message_id.ok_or_else(|| DomainError::not_found("Message not found"))?;
        let req = pmsg::MarkReadRequest {
            room: Some(room.to_proto()),
            user_id: user_id.to_string(),
            message_id,
        };
        let r = self
            .clients
            .call(
                "messages",
                "MarkRead",
                self.clients.messages.clone().mark_read(req),
            )
            .await?;
        if r.moved {
            let event = CoreEvent::Receipt {
                room,
                user_id,
                message_id: r.message_id,
                read_at_ms: r.read_at_ms,
            };
            self.publish(Some(namespace), event).await;
        }
        Ok(ReadResult {
            moved: r.moved,
            message_id: r.message_id,
            read_at_ms: r.read_at_ms,
        })
    }

    /// A page of history. `user_id` None: the admin, who may read any existing room.
    pub async fn history(
        &self,
        user_id: Option<&str>,
        room: &RoomKey,
        before: Option<i64>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<HistoryPage, DomainError> {
        if !(1..=100).contains(&limit) {
            return Err(DomainError::validation("limit must be between 1 and 100"));
        }
        if before.is_some() && after.is_some() {
            return Err(DomainError::validation("use either before or after"));
        }
        match user_id {
            Some(user) => self.require(user, room, Permission::History).await?,
            // The admin may read any room that exists.
            None => {
                self.room(room).await?;
            }
        }
        let req = pmsg::HistoryRequest {
            room: Some(room.to_proto()),
            before,
            after,
            limit,
        };
        let r = self
            .clients
            .call(
                "messages",
                "History",
                self.clients.messages.clone().history(req),
            )
            .await?;
        let messages = r
            .messages
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<_, _>>()?;
        Ok(HistoryPage {
            messages,
            has_more: r.has_more,
        })
    }

    /// Read cursors of the room's current members.
    pub async fn receipts(
        &self,
        user_id: &str,
        room: &RoomKey,
    ) -> Result<Vec<pmsg::Receipt>, DomainError> {
        self.require(user_id, room, Permission::Read).await?;
        let info = self.room(room).await?;
        let user_ids = info
            .members
            .iter()
            .map(|m| m.user_id.clone())
            .collect::<Vec<_>>();
        if user_ids.is_empty() {
            return Ok(vec![]);
        }
        let req = pmsg::ListReceiptsRequest {
            room: Some(room.to_proto()),
            user_ids,
        };
        let r = self
            .clients
            .call(
                "messages",
                "ListReceipts",
                self.clients.messages.clone().list_receipts(req),
            )
            .await?;
        Ok(r.receipts)
    }

    pub async fn room(&self, room: &RoomKey) -> Result<RoomInfo, DomainError> {
        let d = self
            .clients
            .call(
                "membership",
                "GetRoom",
                self.clients.membership.clone().get_room(room.to_proto()),
            )
            .await?;
        RoomInfo::try_from(d)
    }

    /// Starts or stops typing and, when that changed anything (a repeated start does not),
    /// broadcasts it. A user who may not type there is FORBIDDEN, a room that does not exist
    /// NOT_FOUND (contracts that hide existence render both alike). `ttl`: how long a start
    /// lasts without another. Whether it changed anything is this node's to say (see
    /// [`NodeTyping`]: no round trip per event); the board follows, and the presence service
    /// publishes the automatic stops.
    pub async fn typing(
        &self,
        namespace: &str,
        user_id: &str,
        room: &RoomKey,
        typing: bool,
        ttl: Duration,
    ) -> Result<(), DomainError> {
        self.check(user_id, room, Permission::Typing).await?;
        let change = TypingChange::new(namespace, &room.kind, &room.id, user_id, typing)?;
        if self.typing.set(&change, ttl) {
            let event = CoreEvent::Typing {
                room,
                user_id,
                typing,
                local: false,
            };
            self.publish(Some(namespace), event).await;
        }
        Ok(())
    }

    /// The presence service stopped a typing whose deadline passed.
    pub fn typing_stopped(&self, namespace: &str, room: &RoomKey, user_id: &str) {
        self.typing
            .stopped(namespace, &room.kind, &room.id, user_id);
    }

    /// An uploaded file and the rooms where it was sent (NOT_FOUND when there is none).
    pub async fn file(&self, file_id: i64) -> Result<pmsg::File, DomainError> {
        let req = pmsg::GetFileRequest { file_id };
        self.clients
            .call(
                "messages",
                "GetFile",
                self.clients.messages.clone().get_file(req),
            )
            .await
    }

    /// The room of a message (NOT_FOUND when there is no such message).
    pub async fn locate(&self, message_id: i64) -> Result<RoomKey, DomainError> {
        let req = pmsg::LocateMessageRequest { message_id };
        let r = self
            .clients
            .call(
                "messages",
                "Locate",
                self.clients.messages.clone().locate(req),
            )
            .await?;
        Ok(RoomKey::new(r.kind, r.id))
    }

    /// One message of a room (NOT_FOUND when it is not one of the room's).
    pub async fn message(&self, room: &RoomKey, message_id: i64) -> Result<Message, DomainError> {
        let req = pmsg::GetMessageRequest {
            room: Some(room.to_proto()),
            message_id,
        };
        let m = self
            .clients
            .call("messages", "Get", self.clients.messages.clone().get(req))
            .await?;
        Message::try_from(m)
    }

    /// How many distinct users have a socket in `room` of `namespace`, across the cluster: the
    /// room's sockets (asked of every node through the adapter), matched against the presence
    /// of the users who may be there (its members and its ancestors').
    pub async fn users_in_room(
        &self,
        namespace: &str,
        room: &RoomKey,
    ) -> Result<usize, DomainError> {
        let Some(op) = self.fanout.io().of(namespace) else {
            return Ok(0);
        };
        let sockets: std::collections::HashSet<String> = op
            .within(room.socket_room())
            .fetch_sockets()
            .await
            .map_err(DomainError::unavailable)?
            .iter()
            .map(|s| s.data().id.to_string())
            .collect();
        if sockets.is_empty() {
            return Ok(0);
        }
        let mut candidates = Vec::new();
        let mut next = Some(room.clone());
        // A room's chain of parents is short (a study's project); bounded all the same.
        for _ in 0..8 {
            let Some(r) = next.take() else { break };
            let info = self.room(&r).await?;
            candidates.extend(info.members.into_iter().map(|m| m.user_id));
            next = info.parent;
        }
        candidates.sort();
        candidates.dedup();
        let mut count = 0;
        for chunk in candidates.chunks(1_000) {
            count += self
                .presence_of(namespace, chunk.to_vec())
                .await?
                .iter()
                .filter(|p| p.sockets.iter().any(|s| sockets.contains(&s.socket_id)))
                .count();
        }
        Ok(count)
    }

    /// Fails with NOT_JOINED unless the socket has joined `room` (contracts that require a
    /// prior join to act in a room).
    pub fn require_joined(
        &self,
        socket: &socketioxide::extract::SocketRef<Adapter>,
        room: &RoomKey,
    ) -> Result<(), DomainError> {
        let name = room.socket_room();
        if socket.rooms().iter().any(|r| r == &name) {
            Ok(())
        } else {
            Err(DomainError::of(ErrorCode::NotJoined))
        }
    }

    /// A user by id (NOT_FOUND when the application never described them).
    pub async fn user(&self, user_id: &str) -> Result<pm::User, DomainError> {
        let req = pm::GetUserRequest {
            id: user_id.to_string(),
        };
        self.clients
            .call(
                "membership",
                "GetUser",
                self.clients.membership.clone().get_user(req),
            )
            .await
    }

    /// The rooms of `kind` where `user_id` is a direct member.
    pub async fn user_rooms(&self, user_id: &str, kind: &str) -> Result<Vec<RoomKey>, DomainError> {
        let req = pm::ListUserRoomsRequest {
            user_id: user_id.to_string(),
            kind: kind.to_string(),
        };
        let r = self
            .clients
            .call(
                "membership",
                "ListUserRooms",
                self.clients.membership.clone().list_user_rooms(req),
            )
            .await?;
        Ok(r.rooms
            .into_iter()
            .map(|r| RoomKey::new(r.kind, r.id))
            .collect())
    }

    /// The presence of `user_ids` in `namespace`, with each user's sockets.
    pub async fn presence_of(
        &self,
        namespace: &str,
        user_ids: Vec<String>,
    ) -> Result<Vec<pp::UserPresence>, DomainError> {
        let req = pp::GetPresenceRequest {
            namespace: namespace.to_string(),
            user_ids,
        };
        let r = self
            .clients
            .call(
                "presence",
                "GetPresence",
                self.clients.presence.clone().get_presence(req),
            )
            .await?;
        Ok(r.users)
    }

    /// The users who share a room with `user_id` (remembered for a while, see [`crate::authz`]).
    pub async fn contacts(&self, user_id: &str) -> Result<Contacts, DomainError> {
        if let Some(known) = self.authz.contacts(user_id) {
            return Ok(known);
        }
        let req = pm::ListContactsRequest {
            user_id: user_id.to_string(),
        };
        let r = self
            .clients
            .call(
                "membership",
                "ListContacts",
                self.clients.membership.clone().list_contacts(req),
            )
            .await?;
        let contacts = r.user_ids.into_iter().collect::<Contacts>();
        self.authz.remember_contacts(user_id, contacts.clone());
        Ok(contacts)
    }
}

async fn ask_membership(
    clients: &Clients,
    user_id: &str,
    room: &RoomKey,
    action: Permission,
) -> Result<pm::AuthorizeResponse, DomainError> {
    let req = pm::AuthorizeRequest {
        user_id: user_id.to_string(),
        room: Some(room.to_proto()),
        action: action.as_str().to_string(),
    };
    clients
        .call(
            "membership",
            "Authorize",
            clients.membership.clone().authorize(req),
        )
        .await
}

/// What an answer allows: the permissions it names as granted (from a membership service that
/// names none, the asked action alone when allowed).
fn granted(d: &pm::AuthorizeResponse, action: Permission) -> Permissions {
    if !d.room_exists {
        return Permissions::NONE;
    }
    let named = Permissions::named(d.granted.iter().map(String::as_str));
    if d.allowed {
        named.with(action)
    } else {
        named.without(action)
    }
}

/// Collects delivered outbox ids and confirms them in batches. An id that is never confirmed
/// (the node dies, the call fails) is broadcast once more by a sweeper: at-least-once.
async fn confirm_deliveries(clients: Clients, mut rx: tokio::sync::mpsc::Receiver<i64>) {
    const MAX_BATCH: usize = 1000;
    /// At most one confirmation per this interval: each is a Postgres commit, and confirming
    /// at once cost a commit for every few messages under load. Far below the sweeper's
    /// redelivery delay (`SWITCHBOARD_OUTBOX_REDELIVER_AFTER_MS`, 3 s by default).
    const EVERY: std::time::Duration = std::time::Duration::from_millis(100);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let next = tokio::time::Instant::now() + EVERY;
        let req = pmsg::MarkDeliveredRequest {
            outbox_ids: std::mem::take(&mut batch),
        };
        if let Err(e) = clients
            .call(
                "messages",
                "MarkDelivered",
                clients.messages.clone().mark_delivered(req),
            )
            .await
        {
            tracing::warn!(error = %e, "could not confirm deliveries (they will be redelivered)");
        }
        tokio::time::sleep_until(next).await;
    }
}
