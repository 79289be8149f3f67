//! Connection state recovery, cluster-wide: a client that lost its connection and reconnects
//! within the recovery window, to any node, gets its session back: the same `socket.id`, its
//! rooms, and the stored events of those rooms it missed, in order, each once.
//!
//! The protocol is socket.io's own (client ≥ 4.6): the CONNECT packet carries `{ sid, pid }`;
//! the client keeps the last argument of each event when it is a string (its offset: the
//! delivery log id every stored event carries, `crate::delivery_log`), and on reconnecting sends
//! `auth.pid` and `auth.offset`. A recovered CONNECT carries the same `pid` again, which the
//! client reads as `socket.recovered`.
//!
//! A session lives in Redis as a hash, `<prefix>recovery:<pid>`: `meta` (the public id, the
//! socket's current id, user, namespace, the log position it started at) and one field per room
//! it joined, with the log position at which it joined. The hash exists for as long as the
//! socket is connected (its node refreshes it) and for the recovery window after it closed, so
//! it also survives its node's death. Recovering takes it (the first node to delete it wins);
//! the user must be the same (the handshake authenticates as usual: a pid is not a credential),
//! every room is authorized again, and the log must still hold every entry after the offset.
//! Otherwise the client gets a new session, as after the window.

use std::{collections::HashMap, sync::Arc, time::Duration};

use fred::{
    prelude::{Client, HashesInterface, KeysInterface, TransactionInterface},
    types::scripts::Script,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::{extract::SocketRef, socket::ConnectSession};
use switchboard_common::{Permission, RoomKey};

use crate::{
    Gateway,
    auth::Identity,
    delivery_log::{LogId, LoggedEmission},
    fanout::Adapter,
    personal_rooms,
};

/// What a session remembers besides its rooms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionMeta {
    /// The id its client knows (`socket.id`): the first socket's.
    pub sid: String,
    /// The id of its latest socket (the one that sent what it must not receive back).
    pub socket: String,
    pub user: String,
    pub namespace: String,
    /// The log position when it started: with no offset from the client, replay from here.
    pub start: String,
}

/// A session taken for recovery.
pub(crate) struct Session {
    pub meta: SessionMeta,
    /// Rooms joined through the dialect (personal rooms are the handshake's), with the log
    /// position at which each was joined.
    pub rooms: Vec<(String, LogId)>,
}

/// What a reconnecting client presents.
pub(crate) struct Claim {
    pub pid: String,
    /// The last offset it received; `None` when it received none.
    pub offset: Option<String>,
}

impl Claim {
    /// `auth.pid` (and `auth.offset`) of a handshake, when the client asks to recover.
    pub fn of(auth: Option<&Value>) -> Option<Claim> {
        let auth = auth?;
        let pid = auth.get("pid")?.as_str()?;
        // A pid is ours only if it looks like one (32 hex digits): anything else is not looked up.
        if pid.len() != 32 || !pid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Claim {
            pid: pid.to_string(),
            offset: auth
                .get("offset")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// The sessions of connection state recovery.
pub(crate) struct Recovery {
    prefix: String,
    window: Duration,
    /// How long a connected socket's session lives without a refresh (see [`Recovery::new`]).
    live_ttl: Duration,
    keep_script: Script,
}

/// Extends the TTL of every session in KEYS to ARGV[1] ms.
const KEEP_LUA: &str = r#"
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[1]) end
return #KEYS
"#;

const META: &str = "meta";
const ROOM: &str = "r:";

impl Recovery {
    /// `refresh`: how often this node refreshes its sockets' sessions. A session of a node that
    /// died lives on for the window plus two to three refreshes.
    pub fn new(redis_prefix: &str, window: Duration, refresh: Duration) -> Self {
        Recovery {
            prefix: format!("{redis_prefix}recovery:"),
            window,
            live_ttl: window + refresh * 3,
            keep_script: Script::from_lua(KEEP_LUA),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }

    fn key(&self, pid: &str) -> String {
        format!("{}{pid}", self.prefix)
    }

    /// A new private id: 128 random bits as 32 hex digits.
    pub fn new_pid() -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    /// Records a session (new, or recovered with its rooms).
    pub async fn open(
        &self,
        redis: &Client,
        pid: &str,
        meta: &SessionMeta,
        rooms: &[(String, LogId)],
    ) -> anyhow::Result<()> {
        let key = self.key(pid);
        let mut fields: Vec<(String, String)> =
            vec![(META.to_string(), serde_json::to_string(meta)?)];
        fields.extend(
            rooms
                .iter()
                .map(|(room, at)| (format!("{ROOM}{room}"), at.to_string())),
        );
        let tx = redis.multi();
        let _: () = tx.hset(&key, fields).await?;
        let _: () = tx
            .pexpire(&key, self.live_ttl.as_millis() as i64, None)
            .await?;
        let _: () = tx.exec(true).await?;
        Ok(())
    }

    /// The session's socket joined `room` when the log was at `at`.
    pub async fn joined(&self, redis: &Client, pid: &str, room: &str, at: LogId) {
        let set: Result<(), _> = redis
            .hset(self.key(pid), (format!("{ROOM}{room}"), at.to_string()))
            .await;
        if let Err(e) = set {
            tracing::debug!(error = %e, "recovery session not updated (join)");
        }
    }

    /// The session's socket left `room`.
    pub async fn left(&self, redis: &Client, pid: &str, room: &str) {
        let del: Result<(), _> = redis.hdel(self.key(pid), format!("{ROOM}{room}")).await;
        if let Err(e) = del {
            tracing::debug!(error = %e, "recovery session not updated (leave)");
        }
    }

    /// Keeps the sessions of this node's connected sockets: one script call per chunk (a
    /// pipeline of one `PEXPIRE` each cost a command's allocations per socket per refresh).
    pub async fn keep(&self, redis: &Client, pids: &[Arc<str>]) {
        let keys: Vec<String> = pids.iter().map(|pid| self.key(pid)).collect();
        let kept: Result<i64, _> = self
            .keep_script
            .evalsha_with_reload(redis, keys, vec![self.live_ttl.as_millis().to_string()])
            .await;
        if let Err(e) = kept {
            tracing::debug!(error = %e, "recovery sessions not refreshed");
        }
    }

    /// The socket closed: its session stays for the window when its client may come back (a
    /// lost connection, the node draining), and goes when it left on purpose or was put out.
    pub async fn closed(&self, redis: &Client, pid: &str, recoverable: bool) {
        let done: Result<(), _> = if recoverable {
            redis
                .pexpire(self.key(pid), self.window.as_millis() as i64, None)
                .await
        } else {
            redis.del(self.key(pid)).await
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "recovery session not closed (it expires)");
        }
    }

    /// Takes a session for recovery: `None` when there is none (window passed, never existed,
    /// or another handshake took it first).
    pub async fn take(&self, redis: &Client, pid: &str) -> anyhow::Result<Option<Session>> {
        let key = self.key(pid);
        let fields: HashMap<String, String> = redis.hgetall(&key).await?;
        let Some(meta) = fields.get(META) else {
            return Ok(None);
        };
        let meta: SessionMeta = serde_json::from_str(meta)?;
        let deleted: i64 = redis.del(&key).await?;
        if deleted == 0 {
            return Ok(None);
        }
        let rooms = fields
            .iter()
            .filter_map(|(field, at)| {
                Some((field.strip_prefix(ROOM)?.to_string(), at.parse().ok()?))
            })
            .collect();
        Ok(Some(Session { meta, rooms }))
    }
}

/// Which of a log entry's emissions a recovering socket would have received live.
pub(crate) struct ReplayFilter<'a> {
    pub namespace: &'a str,
    /// The socket that sent, in its previous life.
    pub previous_socket: &'a str,
    /// Every room of the session (personal ones too) with the position it was joined at.
    pub rooms: &'a [(String, LogId)],
}

impl ReplayFilter<'_> {
    pub fn wants(&self, id: LogId, e: &LoggedEmission) -> bool {
        if e.namespace != self.namespace || e.except_socket.as_deref() == Some(self.previous_socket)
        {
            return false;
        }
        let member = |room: &String| self.rooms.iter().any(|(r, _)| r == room);
        if e.except.iter().any(member) {
            return false;
        }
        e.everyone
            || e.rooms
                .iter()
                .any(|room| self.rooms.iter().any(|(r, at)| r == room && id > *at))
    }
}

/// A session being recovered, between the handshake (which found it and read what it missed
/// from the log) and the connect handler (which replays that and joins its rooms).
pub(crate) struct Replay {
    /// The rooms it had joined through its dialect (still allowed), with the log position at
    /// which it joined each.
    rooms: Vec<(String, LogId)>,
    /// Its personal rooms, joined when its session started (at `start`).
    personal: Vec<String>,
    start: LogId,
    /// The entries (their emissions for this socket) after the client's offset, read so far.
    entries: Vec<(LogId, Vec<LoggedEmission>)>,
    /// The last entry read.
    read_to: LogId,
    namespace: String,
    previous_socket: String,
}

/// How many log entries one recovery reads at most; a client that missed more than that gets a
/// new session (what it missed is in the history).
const MAX_REPLAY_SCAN: usize = 20_000;
const REPLAY_PAGE: u64 = 1_000;

impl Gateway {
    /// Looks up the session a reconnecting client claims and reads what it missed: `None` (a
    /// new session) when there is none, it is another user's or namespace's, the offset is not
    /// one of ours, or the log no longer holds everything after it.
    pub(crate) async fn recover(
        &self,
        namespace: &str,
        identity: &Identity,
        claim: &Claim,
    ) -> Option<(SessionMeta, Replay)> {
        let session = match self.recovery.take(&self.redis, &claim.pid).await {
            Ok(Some(session)) => session,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "recovery session unreadable");
                return None;
            }
        };
        let meta = session.meta;
        if meta.user != identity.user_id || meta.namespace != namespace {
            tracing::info!("recovery refused: the session is another user's or namespace's");
            return None;
        }
        let start: LogId = meta.start.parse().ok()?;
        let from = match &claim.offset {
            Some(offset) => offset.parse::<LogId>().ok()?.max(start),
            None => start,
        };
        let log = &self.core.fanout.log;
        match log.retains_after(&self.redis, from).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "recovery: delivery log unreadable");
                return None;
            }
        }
        // Rooms are authorized again: the user may have lost one meanwhile.
        let mut rooms = Vec::with_capacity(session.rooms.len() + 2);
        for (room, at) in session.rooms {
            let Some((kind, id)) = room.split_once(':') else {
                continue;
            };
            let Ok(key) = RoomKey::parse("room", kind, id) else {
                continue;
            };
            if matches!(
                self.core
                    .allowed(&identity.user_id, &key, Permission::Join)
                    .await,
                Ok(true)
            ) {
                rooms.push((room, at));
            }
        }
        let mut replay = Replay {
            rooms,
            personal: personal_rooms(identity),
            start,
            entries: Vec::new(),
            read_to: from,
            namespace: namespace.to_string(),
            previous_socket: meta.socket.clone(),
        };
        let mut scanned = 0;
        loop {
            match self.read_missed(&mut replay).await {
                Ok(0) => break,
                Ok(n) => scanned += n,
                Err(e) => {
                    tracing::warn!(error = %e, "recovery: delivery log unreadable");
                    return None;
                }
            }
            if scanned > MAX_REPLAY_SCAN {
                tracing::info!(scanned, "recovery refused: too much was missed");
                return None;
            }
        }
        Some((meta, replay))
    }

    /// Reads the next page of the log after `replay.read_to`, keeping what the socket would
    /// have received; answers how many entries it read.
    async fn read_missed(&self, replay: &mut Replay) -> anyhow::Result<usize> {
        let page = self
            .core
            .fanout
            .log
            .range(&self.redis, replay.read_to, REPLAY_PAGE)
            .await?;
        let mut rooms = replay.rooms.clone();
        rooms.extend(replay.personal.iter().map(|r| (r.clone(), replay.start)));
        let filter = ReplayFilter {
            namespace: &replay.namespace,
            previous_socket: &replay.previous_socket,
            rooms: &rooms,
        };
        let read = page.len();
        let mut kept = Vec::new();
        for (id, event) in page {
            replay.read_to = id;
            let emissions: Vec<_> = event
                .emissions
                .into_iter()
                .filter(|e| filter.wants(id, e))
                .collect();
            if !emissions.is_empty() {
                kept.push((id, emissions));
            }
        }
        replay.entries.extend(kept);
        Ok(read)
    }

    /// Records this socket's recovery session (a new one, or the recovered one with its rooms)
    /// and tells the client in the CONNECT packet; answers its private id.
    pub(crate) async fn open_session(
        &self,
        namespace: &str,
        s: &SocketRef<Adapter>,
        identity: &Identity,
        recovered: Option<(String, SessionMeta, Replay)>,
    ) -> Arc<str> {
        let (pid, sid, start, rooms) = match recovered {
            Some((pid, meta, replay)) => {
                let rooms = replay.rooms.clone();
                self.replays.lock().expect("replays").insert(s.id, replay);
                (pid, meta.sid, meta.start, rooms)
            }
            None => (
                Recovery::new_pid(),
                s.id.to_string(),
                self.core.fanout.position().to_string(),
                Vec::new(),
            ),
        };
        let meta = SessionMeta {
            sid: sid.clone(),
            socket: s.id.to_string(),
            user: identity.user_id.clone(),
            namespace: namespace.to_string(),
            start,
        };
        if let Err(e) = self.recovery.open(&self.redis, &pid, &meta, &rooms).await {
            tracing::warn!(error = %e, "recovery session not recorded (this socket cannot recover)");
        }
        s.set_connect_session(ConnectSession {
            sid,
            pid: pid.clone(),
        });
        Arc::from(pid)
    }

    /// Right after a recovered socket's CONNECT: replays what it missed, then joins its rooms,
    /// holding the log reader back meanwhile, so that every entry reaches it once and in order
    /// (those up to the reader's position from the replay, later ones live).
    pub(crate) async fn replay(&self, s: &SocketRef<Adapter>, mut replay: Replay) {
        let fanout = &self.core.fanout;
        let _emitting = fanout.emitting.lock().await;
        let position = fanout.position();
        // The reader got ahead of what the handshake read: read up to it.
        while replay.read_to < position {
            match self.read_missed(&mut replay).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recovery: delivery log unreadable; the replay is incomplete");
                    break;
                }
            }
        }
        let mut replayed = 0;
        for (id, emissions) in &replay.entries {
            if *id > position {
                break;
            }
            let offset = id.to_string();
            for e in emissions {
                replayed += 1;
                if let Err(err) = s.emit(e.event.as_str(), &(&e.data, &offset)) {
                    tracing::debug!(error = %err, "replay not sent");
                }
            }
        }
        for room in replay.personal {
            s.join(room);
        }
        for (room, _) in replay.rooms {
            s.join(room);
        }
        tracing::debug!(replayed, "session recovered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> LogId {
        s.parse().unwrap()
    }

    fn emission(rooms: &[&str]) -> LoggedEmission {
        LoggedEmission {
            namespace: "/".into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            except: vec![],
            event: "message:new".into(),
            data: Value::Null,
            everyone: false,
            except_socket: None,
        }
    }

    #[test]
    fn replay_takes_what_the_socket_would_have_had_live() {
        let rooms = vec![
            ("room:a".to_string(), id("10-0")),
            ("user:u1".to_string(), id("5-0")),
        ];
        let filter = ReplayFilter {
            namespace: "/",
            previous_socket: "old",
            rooms: &rooms,
        };
        assert!(filter.wants(id("11-0"), &emission(&["room:a"])));
        // Said in the room before the socket joined it: history, not a missed event.
        assert!(!filter.wants(id("9-0"), &emission(&["room:a"])));
        assert!(!filter.wants(id("11-0"), &emission(&["room:b"])));
        assert!(filter.wants(id("6-0"), &emission(&["room:b", "user:u1"])));
        let mut own = emission(&["room:a"]);
        own.except_socket = Some("old".into());
        assert!(!filter.wants(id("11-0"), &own));
        let mut excepted = emission(&["room:a"]);
        excepted.except = vec!["user:u1".into()];
        assert!(!filter.wants(id("11-0"), &excepted));
        let mut elsewhere = emission(&["room:a"]);
        elsewhere.namespace = "/other".into();
        assert!(!filter.wants(id("11-0"), &elsewhere));
    }

    #[test]
    fn only_a_well_formed_pid_is_a_claim() {
        let pid = Recovery::new_pid();
        let claim = Claim::of(Some(
            &serde_json::json!({ "pid": pid, "offset": "1-0", "token": "t" }),
        ))
        .expect("a claim");
        assert_eq!(claim.offset.as_deref(), Some("1-0"));
        assert!(Claim::of(Some(&serde_json::json!({ "pid": "short" }))).is_none());
        assert!(Claim::of(Some(&serde_json::json!({ "token": "t" }))).is_none());
        assert!(Claim::of(None).is_none());
    }
}
