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

use std::{collections::HashMap, time::Duration};

use fred::prelude::{Client, HashesInterface, KeysInterface, TransactionInterface};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::delivery_log::{LogId, LoggedEmission};

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
}

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

    /// Keeps the sessions of this node's connected sockets.
    pub async fn keep(&self, redis: &Client, pids: &[String]) {
        let pipeline = redis.pipeline();
        for pid in pids {
            let _: Result<(), _> = pipeline
                .pexpire(self.key(pid), self.live_ttl.as_millis() as i64, None)
                .await;
        }
        let done: Result<Vec<fred::types::Value>, _> = pipeline.all().await;
        if let Err(e) = done {
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
