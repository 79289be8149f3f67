//! The membership service end to end: a fresh migrated database per test, the server started
//! with `run` on a port-0 listener, called through the generated client.

use switchboard_common::{DomainError, ErrorCode};
use switchboard_membership::{Config, RoleTable, run};
use switchboard_proto::{
    common::RoomRef,
    membership::{
        AuthorizeRequest, AuthorizeResponse, GetUserRequest, GrantMemberRequest,
        ListContactsRequest, ListUserRoomsRequest, RevokeMemberRequest, UpsertRoomRequest, User,
        membership_client::MembershipClient,
    },
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

struct Server {
    client: MembershipClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(RoleTable::default()).await
    }

    async fn start_with(roles: RoleTable) -> Server {
        let base = std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let url = switchboard_migrate::create_test_database(&base)
            .await
            .expect("test database");
        let config = Config {
            db_max_connections: 4,
            roles,
            ..Config::new(url)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async {
            let _ = stopped.await;
        }));
        let client = MembershipClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        Server {
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }

    async fn room(&mut self, kind: &str, id: &str, parent: Option<(&str, &str)>) {
        self.client
            .upsert_room(UpsertRoomRequest {
                room: Some(rr(kind, id)),
                parent: parent.map(|(k, i)| rr(k, i)),
                ..Default::default()
            })
            .await
            .expect("upsert room");
    }

    async fn grant(&mut self, kind: &str, id: &str, user: &str, role: &str) {
        self.client
            .grant_member(GrantMemberRequest {
                room: Some(rr(kind, id)),
                user_id: user.into(),
                role: role.into(),
            })
            .await
            .expect("grant");
    }

    async fn authorize(
        &mut self,
        user: &str,
        kind: &str,
        id: &str,
        action: &str,
    ) -> AuthorizeResponse {
        self.client
            .authorize(AuthorizeRequest {
                user_id: user.into(),
                room: Some(rr(kind, id)),
                action: action.into(),
            })
            .await
            .expect("authorize")
            .into_inner()
    }
}

fn rr(kind: &str, id: &str) -> RoomRef {
    RoomRef {
        kind: kind.into(),
        id: id.into(),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> ErrorCode {
    DomainError::from(r.expect_err("expected an error")).code
}

#[tokio::test]
async fn users_round_trip() {
    let mut s = Server::start().await;
    let alice = User {
        id: "u1".into(),
        username: "alice".into(),
        first_name: Some("Alice".into()),
        last_name: Some("Liddell".into()),
        role: Some("admin".into()),
    };
    let back = s
        .client
        .upsert_user(alice.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back, alice);
    let got = s
        .client
        .get_user(GetUserRequest { id: "u1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, alice);

    // Present fields overwrite, absent ones are kept.
    let update = User {
        id: "u1".into(),
        username: "alice2".into(),
        first_name: Some("Al".into()),
        last_name: None,
        role: None,
    };
    let back = s.client.upsert_user(update).await.unwrap().into_inner();
    assert_eq!(
        back,
        User {
            username: "alice2".into(),
            first_name: Some("Al".into()),
            ..alice.clone()
        }
    );
    let got = s
        .client
        .get_user(GetUserRequest { id: "u1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, back);

    assert_eq!(
        code(
            s.client
                .get_user(GetUserRequest {
                    id: "nobody".into()
                })
                .await
        ),
        ErrorCode::NotFound
    );
    s.stop().await;
}

#[tokio::test]
async fn rooms_with_parents() {
    let mut s = Server::start().await;
    let p = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("project", "p1")),
            title: Some("Project".into()),
            r#type: Some("research".into()),
            created_by: Some("u1".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.room, Some(rr("project", "p1")));
    assert_eq!(p.parent, None);
    assert_eq!(p.title.as_deref(), Some("Project"));
    assert!(p.created_at_ms > 0 && p.updated_at_ms >= p.created_at_ms);

    let st = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("study", "s1")),
            parent: Some(rr("project", "p1")),
            title: Some("Study".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.parent, Some(rr("project", "p1")));

    // Absent fields are kept, and a no-op upsert leaves updated_at alone.
    let again = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("study", "s1")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, st);
    let retitled = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("study", "s1")),
            title: Some("Renamed".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retitled.title.as_deref(), Some("Renamed"));
    assert_eq!(retitled.parent, Some(rr("project", "p1")));
    assert_eq!(retitled.created_at_ms, st.created_at_ms);
    assert!(retitled.updated_at_ms >= st.updated_at_ms);

    // A parent that does not exist.
    let missing = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("study", "s2")),
            parent: Some(rr("project", "nope")),
            ..Default::default()
        })
        .await
        .expect_err("missing parent");
    let missing = DomainError::from(missing);
    assert_eq!(missing.code, ErrorCode::NotFound);
    assert_eq!(missing.message, "parent room not found");
    assert_eq!(
        code(s.client.get_room(rr("study", "s2")).await),
        ErrorCode::NotFound,
        "the refused room was not created"
    );

    // Cycles: the room itself, a child, a grandchild.
    s.room("study", "s3", Some(("study", "s1"))).await;
    for parent in [rr("project", "p1"), rr("study", "s1"), rr("study", "s3")] {
        let r = s
            .client
            .upsert_room(UpsertRoomRequest {
                room: Some(rr("project", "p1")),
                parent: Some(parent.clone()),
                ..Default::default()
            })
            .await;
        assert_eq!(code(r), ErrorCode::Validation, "p1 under {parent:?}");
    }
    // Moving a room under an unrelated one is fine.
    s.room("project", "p2", None).await;
    s.room("study", "s3", Some(("project", "p2"))).await;
    let detail = s
        .client
        .get_room(rr("study", "s3"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.room.unwrap().parent, Some(rr("project", "p2")));
    s.stop().await;
}

#[tokio::test]
async fn grants_and_room_members() {
    let mut s = Server::start().await;
    s.room("chat", "c1", None).await;
    let before = s
        .client
        .get_room(rr("chat", "c1"))
        .await
        .unwrap()
        .into_inner();
    assert!(before.members.is_empty());

    let first = s
        .client
        .grant_member(GrantMemberRequest {
            room: Some(rr("chat", "c1")),
            user_id: "zed".into(),
            role: "member".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (first.user_id.as_str(), first.role.as_str()),
        ("zed", "member")
    );
    s.grant("chat", "c1", "amy", "viewer").await;
    s.grant("chat", "c1", "max", "owner").await;

    // A role change keeps granted_at, hence the order.
    let changed = s
        .client
        .grant_member(GrantMemberRequest {
            room: Some(rr("chat", "c1")),
            user_id: "zed".into(),
            role: "manager".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.role, "manager");
    assert_eq!(changed.granted_at_ms, first.granted_at_ms);
    // Granting the same role again is a no-op that answers the member.
    let same = s
        .client
        .grant_member(GrantMemberRequest {
            room: Some(rr("chat", "c1")),
            user_id: "zed".into(),
            role: "manager".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(same, changed);

    let detail = s
        .client
        .get_room(rr("chat", "c1"))
        .await
        .unwrap()
        .into_inner();
    let members: Vec<(&str, &str)> = detail
        .members
        .iter()
        .map(|m| (m.user_id.as_str(), m.role.as_str()))
        .collect();
    assert_eq!(
        members,
        vec![("zed", "manager"), ("amy", "viewer"), ("max", "owner")]
    );
    assert!(
        detail
            .members
            .windows(2)
            .all(|w| w[0].granted_at_ms <= w[1].granted_at_ms)
    );
    assert!(detail.room.unwrap().updated_at_ms >= before.room.unwrap().updated_at_ms);

    let r = s
        .client
        .grant_member(GrantMemberRequest {
            room: Some(rr("chat", "nope")),
            user_id: "zed".into(),
            role: "member".into(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::NotFound);
    assert_eq!(
        code(s.client.get_room(rr("chat", "nope")).await),
        ErrorCode::NotFound
    );
    s.stop().await;
}

#[tokio::test]
async fn authorize_direct_inherited_and_missing() {
    let mut s = Server::start().await;
    s.room("project", "p", None).await;
    s.room("study", "s", Some(("project", "p"))).await;
    s.grant("project", "p", "alice", "member").await;
    s.grant("study", "s", "bob", "viewer").await;

    // Direct.
    let a = s.authorize("alice", "project", "p", "send").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: true,
            allowed: true,
            role: "member".into(),
            direct: true,
            granted: ["join", "send", "read", "typing", "history"]
                .map(String::from)
                .into()
        }
    );
    // Inherited through the parent.
    let a = s.authorize("alice", "study", "s", "send").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: true,
            allowed: true,
            role: "member".into(),
            direct: false,
            granted: ["join", "send", "read", "typing", "history"]
                .map(String::from)
                .into()
        }
    );
    // A role without the permission.
    let a = s.authorize("bob", "study", "s", "send").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: true,
            allowed: false,
            role: "viewer".into(),
            direct: true,
            granted: ["join", "read", "history"].map(String::from).into()
        }
    );
    assert!(s.authorize("bob", "study", "s", "read").await.allowed);
    // Membership does not flow upwards.
    let a = s.authorize("bob", "project", "p", "read").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: true,
            allowed: false,
            role: String::new(),
            direct: false,
            granted: vec![]
        }
    );
    // Missing room.
    let a = s.authorize("alice", "study", "nope", "read").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: false,
            allowed: false,
            role: String::new(),
            direct: false,
            granted: vec![]
        }
    );

    // The nearest role is reported; any held role may grant.
    s.grant("study", "s", "alice", "viewer").await;
    let a = s.authorize("alice", "study", "s", "send").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: true,
            allowed: true,
            role: "viewer".into(),
            direct: true,
            // The inherited member role's permissions with the viewer's.
            granted: ["join", "send", "read", "typing", "history"]
                .map(String::from)
                .into()
        }
    );
    assert!(!s.authorize("alice", "study", "s", "moderate").await.allowed);

    // An unknown role grants nothing.
    s.grant("study", "s", "carol", "wizard").await;
    let a = s.authorize("carol", "study", "s", "read").await;
    assert_eq!(
        a,
        AuthorizeResponse {
            room_exists: true,
            allowed: false,
            role: "wizard".into(),
            direct: true,
            granted: vec![]
        }
    );
    s.stop().await;
}

#[tokio::test]
async fn authorize_with_a_custom_role_table() {
    let roles: RoleTable = "guest=read;member=read,send".parse().unwrap();
    let mut s = Server::start_with(roles).await;
    s.room("chat", "c", None).await;
    s.grant("chat", "c", "g", "guest").await;
    s.grant("chat", "c", "o", "owner").await;
    assert!(s.authorize("g", "chat", "c", "read").await.allowed);
    assert!(!s.authorize("g", "chat", "c", "send").await.allowed);
    // The default table is replaced: owner is unknown now.
    let a = s.authorize("o", "chat", "c", "read").await;
    assert!(!a.allowed);
    assert_eq!(a.role, "owner");
    s.stop().await;
}

#[tokio::test]
async fn revoke_answers_the_rooms_lost() {
    let mut s = Server::start().await;
    // p ── s1 ── s3
    //   └─ s2 (u also a direct member)
    s.room("project", "p", None).await;
    s.room("study", "s1", Some(("project", "p"))).await;
    s.room("study", "s2", Some(("project", "p"))).await;
    s.room("study", "s3", Some(("study", "s1"))).await;
    s.grant("project", "p", "u", "member").await;
    s.grant("study", "s2", "u", "viewer").await;
    s.grant("study", "s1", "other", "member").await;

    // Revoking s2 while p still grants it: nothing is lost.
    let r = s
        .client
        .revoke_member(RevokeMemberRequest {
            room: Some(rr("study", "s2")),
            user_id: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.removed);
    assert!(r.lost_rooms.is_empty());
    s.grant("study", "s2", "u", "viewer").await;

    let before = s
        .client
        .get_room(rr("project", "p"))
        .await
        .unwrap()
        .into_inner();
    let r = s
        .client
        .revoke_member(RevokeMemberRequest {
            room: Some(rr("project", "p")),
            user_id: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.removed);
    assert_eq!(
        r.lost_rooms,
        vec![rr("project", "p"), rr("study", "s1"), rr("study", "s3")]
    );
    let after = s
        .client
        .get_room(rr("project", "p"))
        .await
        .unwrap()
        .into_inner();
    assert!(after.members.is_empty());
    assert!(after.room.unwrap().updated_at_ms >= before.room.unwrap().updated_at_ms);

    assert!(!s.authorize("u", "study", "s3", "read").await.allowed);
    assert!(s.authorize("u", "study", "s2", "read").await.allowed);
    assert!(s.authorize("other", "study", "s3", "read").await.allowed);

    // Nothing left to remove.
    let r = s
        .client
        .revoke_member(RevokeMemberRequest {
            room: Some(rr("project", "p")),
            user_id: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.removed);
    assert!(r.lost_rooms.is_empty());
    // Nor on a room that does not exist.
    let r = s
        .client
        .revoke_member(RevokeMemberRequest {
            room: Some(rr("chat", "nope")),
            user_id: "u".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.removed && r.lost_rooms.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn contacts_share_a_room() {
    let mut s = Server::start().await;
    s.room("chat", "r1", None).await;
    s.room("chat", "r2", None).await;
    s.room("chat", "r3", None).await;
    for u in ["c", "a", "b"] {
        s.grant("chat", "r1", u, "member").await;
    }
    s.grant("chat", "r2", "a", "member").await;
    s.grant("chat", "r2", "d", "member").await;
    s.grant("chat", "r2", "b", "member").await;
    s.grant("chat", "r3", "e", "member").await;

    let contacts = |s: &mut Server, u: &str| {
        let mut client = s.client.clone();
        let u = u.to_string();
        async move {
            client
                .list_contacts(ListContactsRequest { user_id: u })
                .await
                .unwrap()
                .into_inner()
                .user_ids
        }
    };
    assert_eq!(contacts(&mut s, "a").await, vec!["b", "c", "d"]);
    assert_eq!(contacts(&mut s, "d").await, vec!["a", "b"]);
    assert!(contacts(&mut s, "e").await.is_empty());
    assert!(contacts(&mut s, "stranger").await.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn user_rooms_of_one_kind_are_the_direct_memberships() {
    let mut s = Server::start().await;
    s.room("server", "s1", None).await;
    s.room("server", "s2", None).await;
    s.room("channel", "c1", Some(("server", "s1"))).await;
    s.grant("server", "s2", "u", "member").await;
    s.grant("server", "s1", "u", "owner").await;
    s.grant("channel", "c1", "u", "member").await;
    s.grant("server", "s2", "other", "member").await;

    let rooms = |s: &mut Server, user: &str, kind: &str| {
        let mut client = s.client.clone();
        let req = ListUserRoomsRequest {
            user_id: user.to_string(),
            kind: kind.to_string(),
        };
        async move {
            client.list_user_rooms(req).await.map(|r| {
                r.into_inner()
                    .rooms
                    .into_iter()
                    .map(|r| format!("{}:{}", r.kind, r.id))
                    .collect::<Vec<_>>()
            })
        }
    };
    assert_eq!(
        rooms(&mut s, "u", "server").await.unwrap(),
        ["server:s1", "server:s2"]
    );
    assert_eq!(rooms(&mut s, "u", "channel").await.unwrap(), ["channel:c1"]);
    assert!(
        rooms(&mut s, "stranger", "server")
            .await
            .unwrap()
            .is_empty()
    );
    let bad = rooms(&mut s, "u", "lobby").await.unwrap_err();
    assert_eq!(DomainError::from(bad).code, ErrorCode::Validation);
    s.stop().await;
}

#[tokio::test]
async fn validation_errors() {
    let mut s = Server::start().await;
    s.room("chat", "c", None).await;
    let long = "x".repeat(257);

    let user = |id: &str, username: &str| User {
        id: id.into(),
        username: username.into(),
        ..Default::default()
    };
    assert_eq!(
        code(s.client.upsert_user(user("", "n")).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(s.client.upsert_user(user("u", "")).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(s.client.upsert_user(user("u", &long)).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(s.client.get_user(GetUserRequest { id: long.clone() }).await),
        ErrorCode::Validation
    );

    let r = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("team", "t")),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), ErrorCode::Validation);
    let r = s.client.upsert_room(UpsertRoomRequest::default()).await;
    assert_eq!(code(r), ErrorCode::Validation);
    let r = s
        .client
        .upsert_room(UpsertRoomRequest {
            room: Some(rr("chat", "x")),
            parent: Some(rr("bogus", "c")),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), ErrorCode::Validation);
    assert_eq!(
        code(s.client.get_room(rr("chat", "")).await),
        ErrorCode::Validation
    );

    let grant = |role: &str| GrantMemberRequest {
        room: Some(rr("chat", "c")),
        user_id: "u".into(),
        role: role.into(),
    };
    assert_eq!(
        code(s.client.grant_member(grant("")).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(s.client.grant_member(grant(&"r".repeat(65))).await),
        ErrorCode::Validation
    );
    assert!(s.client.grant_member(grant(&"r".repeat(64))).await.is_ok());

    let r = s
        .client
        .revoke_member(RevokeMemberRequest {
            room: Some(rr("chat", "c")),
            user_id: String::new(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::Validation);

    let r = s
        .client
        .authorize(AuthorizeRequest {
            user_id: "u".into(),
            room: Some(rr("chat", "c")),
            action: "fly".into(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::Validation);
    let r = s
        .client
        .authorize(AuthorizeRequest {
            user_id: "u".into(),
            room: None,
            action: "read".into(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::Validation);

    let r = s
        .client
        .list_contacts(ListContactsRequest {
            user_id: String::new(),
        })
        .await;
    assert_eq!(code(r), ErrorCode::Validation);
    s.stop().await;
}
