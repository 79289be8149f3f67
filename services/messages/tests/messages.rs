//! Integration tests: a fresh migrated Postgres database per test, the service started with
//! `run` on a port-0 listener, called through the generated client. Rooms are inserted with SQL
//! (the membership service owns them).

use std::collections::HashSet;

use sqlx::PgPool;
use switchboard_common::{DomainError, ErrorCode};
use switchboard_messages::{Config, model::NewMessage, run};
use switchboard_proto::{
    common::RoomRef,
    messages::{self as pb, messages_client::MessagesClient},
};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

const MAX_CONTENT_CHARS: usize = 1000;

struct Harness {
    client: MessagesClient<Channel>,
    pool: PgPool,
    /// Dropped or sent: the service shuts down.
    stop: Option<oneshot::Sender<()>>,
}

async fn start() -> Harness {
    let base = std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let url = switchboard_migrate::create_test_database(&base)
        .await
        .expect("test database");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("test pool");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = Config {
        database_url: url,
        db_max_connections: 20,
        max_content_chars: MAX_CONTENT_CHARS,
        // One lane, so concurrent sends queue up and form real batches.
        send_lanes: 1,
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = run(listener, config, shutdown).await {
            panic!("service failed: {e:#}");
        }
    });
    let client = MessagesClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Harness {
        client,
        pool,
        stop: Some(stop),
    }
}

impl Harness {
    async fn room(&self, kind: &str, id: &str) -> RoomRef {
        sqlx::query("INSERT INTO rooms (kind, id) VALUES ($1, $2)")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("insert room");
        RoomRef {
            kind: kind.into(),
            id: id.into(),
        }
    }

    async fn send(&self, req: pb::SendRequest) -> Result<pb::SendResponse, DomainError> {
        self.client
            .clone()
            .send(req)
            .await
            .map(|r| r.into_inner())
            .map_err(DomainError::from)
    }

    async fn text(&self, room: &RoomRef, sender: &str, content: &str) -> pb::Message {
        self.send(text(room, sender, content))
            .await
            .expect("send")
            .message
            .expect("message")
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn edit(
        &self,
        room: &RoomRef,
        id: i64,
        content: &str,
        actor: &str,
        moderate: bool,
        window: i64,
    ) -> Result<pb::Message, DomainError> {
        self.client
            .clone()
            .edit(pb::EditRequest {
                room: Some(room.clone()),
                message_id: id,
                content: content.into(),
                actor_id: actor.into(),
                actor_may_moderate: moderate,
                edit_window_ms: window,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                assert!(r.outbox_id > 0, "a change writes an outbox entry");
                r.message.expect("message")
            })
            .map_err(DomainError::from)
    }

    async fn delete(
        &self,
        room: &RoomRef,
        id: i64,
        actor: &str,
        moderate: bool,
        window: i64,
    ) -> Result<pb::Message, DomainError> {
        self.client
            .clone()
            .delete(pb::DeleteRequest {
                room: Some(room.clone()),
                message_id: id,
                actor_id: actor.into(),
                actor_may_moderate: moderate,
                edit_window_ms: window,
            })
            .await
            .map(|r| {
                let r = r.into_inner();
                assert!(r.outbox_id > 0, "a change writes an outbox entry");
                r.message.expect("message")
            })
            .map_err(DomainError::from)
    }

    async fn get(&self, room: &RoomRef, id: i64) -> Result<pb::Message, DomainError> {
        self.client
            .clone()
            .get(pb::GetMessageRequest {
                room: Some(room.clone()),
                message_id: id,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(DomainError::from)
    }

    async fn mark_read(
        &self,
        room: &RoomRef,
        user: &str,
        id: i64,
    ) -> Result<pb::MarkReadResponse, DomainError> {
        self.client
            .clone()
            .mark_read(pb::MarkReadRequest {
                room: Some(room.clone()),
                user_id: user.into(),
                message_id: id,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(DomainError::from)
    }

    async fn history(
        &self,
        room: &RoomRef,
        before: Option<i64>,
        after: Option<i64>,
        limit: u32,
    ) -> Result<pb::HistoryResponse, DomainError> {
        self.client
            .clone()
            .history(pb::HistoryRequest {
                room: Some(room.clone()),
                before,
                after,
                limit,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(DomainError::from)
    }

    async fn claim(
        &self,
        older_than_ms: i64,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<pb::OutboxEvent>, DomainError> {
        self.client
            .clone()
            .claim_undelivered(pb::ClaimUndeliveredRequest {
                older_than_ms,
                limit,
                lease_ms,
            })
            .await
            .map(|r| r.into_inner().events)
            .map_err(DomainError::from)
    }
}

fn text(room: &RoomRef, sender: &str, content: &str) -> pb::SendRequest {
    pb::SendRequest {
        room: Some(room.clone()),
        sender_id: sender.into(),
        r#type: "text".into(),
        content: content.into(),
        ..Default::default()
    }
}

/// A room no test inserts.
fn missing_room() -> RoomRef {
    RoomRef {
        kind: "chat".into(),
        id: "nowhere".into(),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, DomainError>) -> ErrorCode {
    r.expect_err("expected an error").code
}

fn ids(messages: &[pb::Message]) -> Vec<i64> {
    messages.iter().map(|m| m.id).collect()
}

#[tokio::test]
async fn send_assigns_per_room_sequence_and_writes_outbox() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("chat", "b").await;
    let m1 = h.text(&a, "u1", "one").await;
    let other = h.text(&b, "u1", "elsewhere").await;
    let m2 = h.text(&a, "u2", "two").await;
    let r3 = h.send(text(&a, "u1", "three")).await.unwrap();
    let m3 = r3.message.clone().unwrap();
    assert_eq!((m1.seq, m2.seq, m3.seq), (1, 2, 3));
    assert_eq!(other.seq, 1);
    assert!(m1.id < m2.id && m2.id < m3.id);
    assert!(r3.created);
    assert!(r3.outbox_id > 0);
    assert_eq!(m3.room, Some(a.clone()));
    assert_eq!(m3.sender_id, "u1");
    assert_eq!(m3.r#type, "text");
    assert_eq!(m3.content, "three");
    assert!(m3.created_at_ms > 0);
    assert_eq!((m3.edited_at_ms, m3.deleted_at_ms), (None, None));
    assert_eq!(
        h.count("SELECT last_seq FROM rooms WHERE kind = 'chat' AND id = 'a'")
            .await,
        3
    );
    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event = 'new'")
            .await,
        4
    );
    let got = h.get(&a, m2.id).await.unwrap();
    assert_eq!(got, m2);
}

#[tokio::test]
async fn files_and_replies() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("chat", "b").await;
    let file_id: i64 = sqlx::query_scalar(
        "INSERT INTO files (uploader_id, file_name, file_size, mime_type) VALUES ('u1', 'p.png', 10, 'image/png') RETURNING id",
    )
    .fetch_one(&h.pool)
    .await
    .unwrap();
    let img = h
        .send(pb::SendRequest {
            room: Some(a.clone()),
            sender_id: "u1".into(),
            r#type: "image".into(),
            content: String::new(),
            file_id: Some(file_id),
            file_name: Some("p.png".into()),
            file_size: Some(10),
            mime_type: Some("image/png".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .message
        .unwrap();
    assert_eq!((img.file_id, img.file_size), (Some(file_id), Some(10)));
    assert_eq!(img.file_name.as_deref(), Some("p.png"));

    let unknown_file = pb::SendRequest {
        room: Some(a.clone()),
        sender_id: "u1".into(),
        r#type: "file".into(),
        file_id: Some(file_id + 1000),
        ..Default::default()
    };
    assert_eq!(code(h.send(unknown_file).await), ErrorCode::NotFound);

    let reply = h
        .send(pb::SendRequest {
            reply_to_id: Some(img.id),
            ..text(&a, "u2", "nice")
        })
        .await
        .unwrap();
    assert_eq!(reply.message.unwrap().reply_to_id, Some(img.id));

    let elsewhere = h.text(&b, "u1", "in b").await;
    let cross = h
        .send(pb::SendRequest {
            reply_to_id: Some(elsewhere.id),
            ..text(&a, "u2", "x")
        })
        .await;
    assert_eq!(code(cross), ErrorCode::NotFound);
    let missing = h
        .send(pb::SendRequest {
            reply_to_id: Some(999_999),
            ..text(&a, "u2", "x")
        })
        .await;
    assert_eq!(code(missing), ErrorCode::NotFound);
    // Refused sends consume no sequence number.
    assert_eq!(h.text(&a, "u1", "after").await.seq, 3);
}

#[tokio::test]
async fn idempotent_repeat_returns_the_original() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let first = h
        .send(pb::SendRequest {
            client_id: Some("c-1".into()),
            ..text(&a, "u1", "hello")
        })
        .await
        .unwrap();
    assert!(first.created);
    let repeat = h
        .send(pb::SendRequest {
            client_id: Some("c-1".into()),
            ..text(&a, "u1", "different")
        })
        .await
        .unwrap();
    assert!(!repeat.created);
    assert_eq!(repeat.outbox_id, 0);
    assert_eq!(repeat.message, first.message);
    assert_eq!(repeat.message.as_ref().unwrap().content, "hello");
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(h.count("SELECT count(*) FROM outbox").await, 1);
    assert_eq!(h.count("SELECT last_seq FROM rooms").await, 1);

    // The same client_id from another sender, or in another room, is another message.
    let other_sender = h
        .send(pb::SendRequest {
            client_id: Some("c-1".into()),
            ..text(&a, "u2", "hi")
        })
        .await
        .unwrap();
    assert!(other_sender.created);
    let b = h.room("chat", "b").await;
    let other_room = h
        .send(pb::SendRequest {
            client_id: Some("c-1".into()),
            ..text(&b, "u1", "hi")
        })
        .await
        .unwrap();
    assert!(other_room.created);
}

#[tokio::test]
async fn concurrent_duplicate_sends_store_one_message() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10 {
        let mut client = h.client.clone();
        let req = pb::SendRequest {
            client_id: Some("same".into()),
            ..text(&a, "u1", &format!("attempt {i}"))
        };
        tasks.spawn(async move { client.send(req).await.map(|r| r.into_inner()) });
    }
    let mut answers = Vec::new();
    while let Some(r) = tasks.join_next().await {
        answers.push(r.unwrap().expect("send"));
    }
    assert_eq!(answers.iter().filter(|r| r.created).count(), 1);
    let distinct: HashSet<i64> = answers
        .iter()
        .map(|r| r.message.as_ref().unwrap().id)
        .collect();
    assert_eq!(distinct.len(), 1);
    assert!(
        answers
            .iter()
            .filter(|r| !r.created)
            .all(|r| r.outbox_id == 0)
    );
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(h.count("SELECT count(*) FROM outbox").await, 1);
    assert_eq!(h.count("SELECT last_seq FROM rooms").await, 1);
    assert_eq!(h.text(&a, "u1", "next").await.seq, 2);
}

#[tokio::test]
async fn concurrent_sends_are_committed_in_batches_with_per_room_order() {
    let h = start().await;
    let rooms = [
        h.room("chat", "b1").await,
        h.room("chat", "b2").await,
        h.room("chat", "b3").await,
    ];
    let earlier = h
        .send(pb::SendRequest {
            client_id: Some("c-0".into()),
            ..text(&rooms[0], "u0", "earlier")
        })
        .await
        .expect("send");
    let missing = RoomRef {
        kind: "chat".into(),
        id: "missing".into(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..150 {
        let mut client = h.client.clone();
        // Every 50th is a repeat of the message sent above; every 30th names no room.
        let room = if i % 30 == 29 {
            missing.clone()
        } else if i % 50 == 0 {
            rooms[0].clone()
        } else {
            rooms[i % 3].clone()
        };
        let req = pb::SendRequest {
            client_id: Some(format!("c-{}", if i % 50 == 0 { 0 } else { i })),
            ..text(&room, &format!("u{}", i % 50), &format!("m{i}"))
        };
        tasks.spawn(async move { (i, client.send(req).await.map(|r| r.into_inner())) });
    }
    let mut created = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, answer) = r.unwrap();
        if i % 30 == 29 {
            assert_eq!(code(answer.map_err(DomainError::from)), ErrorCode::NotFound);
        } else if i % 50 == 0 {
            let a = answer.expect("repeat");
            assert!(!a.created);
            assert_eq!(a.outbox_id, 0);
            assert_eq!(a.message, earlier.message);
        } else {
            let a = answer.expect("send");
            assert!(a.created && a.outbox_id > 0);
            assert_eq!(a.message.unwrap().content, format!("m{i}"));
            created += 1;
        }
    }
    assert_eq!(created, 150 - 5 - 3);
    // Each room's seqs are 1..=n with no gap, and ids grow with seqs.
    for room in &rooms {
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT seq, id FROM messages WHERE room_id = $1 ORDER BY seq")
                .bind(&room.id)
                .fetch_all(&h.pool)
                .await
                .unwrap();
        let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=rows.len() as i64).collect::<Vec<_>>());
        assert!(rows.windows(2).all(|w| w[0].1 < w[1].1));
        let last: i64 = sqlx::query_scalar("SELECT last_seq FROM rooms WHERE id = $1")
            .bind(&room.id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
        assert_eq!(last, rows.len() as i64);
    }
    assert_eq!(h.count("SELECT count(*) FROM messages").await, created + 1);
    assert_eq!(h.count("SELECT count(*) FROM outbox").await, created + 1);
    assert_eq!(
        h.count("SELECT count(*) FROM outbox o JOIN messages m ON m.id = o.message_id")
            .await,
        created + 1
    );
}

/// A send lane keeps its connection between batches. When Postgres closed it while the lane was
/// idle (a restart, an administrator), the next send is stored on a fresh one, not refused.
#[tokio::test]
async fn a_send_after_postgres_closed_the_lanes_connection_is_stored() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    h.text(&a, "u1", "first").await;
    // Every session of this database but the one running the query: the lane's among them.
    let closed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM ( \
             SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() OFFSET 0 \
         ) others",
    )
    .fetch_one(&h.pool)
    .await
    .expect("terminate");
    assert!(closed >= 1, "the lane's connection was open");
    tokio::time::sleep(
        switchboard_messages::CHECK_AFTER_IDLE + std::time::Duration::from_millis(200),
    )
    .await;
    let after = h.text(&a, "u1", "after").await;
    assert_eq!(after.seq, 2);
}

#[tokio::test]
async fn a_batch_with_a_repeat_inside_is_stored_one_by_one() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let store = switchboard_messages::Store::new(h.pool.clone());
    let batch: Vec<NewMessage> = [("x", "first"), ("y", "other"), ("x", "again")]
        .into_iter()
        .map(|(client_id, content)| {
            NewMessage::try_from(pb::SendRequest {
                client_id: Some(client_id.into()),
                ..text(&a, "u1", content)
            })
            .unwrap()
        })
        .collect();
    let mut conn = h.pool.acquire().await.unwrap();
    let answers: Vec<_> = store
        .send_batch(&mut conn, &batch)
        .await
        .into_iter()
        .map(|r| r.expect("stored"))
        .collect();
    assert!(answers[0].created && answers[1].created && !answers[2].created);
    assert_eq!(answers[2].message, answers[0].message);
    assert_eq!(answers[2].message.content, "first");
    assert_eq!(
        answers.iter().map(|s| s.message.seq).collect::<Vec<_>>(),
        [1, 2, 1]
    );
    assert_eq!(h.count("SELECT count(*) FROM outbox").await, 2);
}

/// A send stream for tests: batches go in through the sender (dropping it closes the
/// stream's request side), answers come out of the `Streaming`.
async fn open_send_stream(
    h: &Harness,
) -> (
    mpsc::Sender<pb::SendBatch>,
    tonic::Streaming<pb::SendBatchOutcomes>,
) {
    let (batches, rx) = mpsc::channel(16);
    let request = tokio_stream::wrappers::ReceiverStream::new(rx);
    let answers = h
        .client
        .clone()
        .send_stream(request)
        .await
        .expect("SendStream")
        .into_inner();
    (batches, answers)
}

/// The stream's next answer (a hang guard, not a timing assertion: the service answers at once).
async fn next_answer(
    answers: &mut tonic::Streaming<pb::SendBatchOutcomes>,
) -> Option<pb::SendBatchOutcomes> {
    tokio::time::timeout(std::time::Duration::from_secs(20), answers.message())
        .await
        .expect("the send stream answered")
        .expect("the send stream is healthy")
}

fn batched(request: Option<pb::SendRequest>) -> pb::BatchedSend {
    pb::BatchedSend {
        request,
        traceparent: String::new(),
    }
}

fn sent(o: &pb::SendOutcome) -> pb::SendResponse {
    match &o.outcome {
        Some(pb::send_outcome::Outcome::Sent(s)) => s.clone(),
        other => panic!("expected a stored message, got {other:?}"),
    }
}

fn refused(o: &pb::SendOutcome) -> Option<ErrorCode> {
    match &o.outcome {
        Some(pb::send_outcome::Outcome::Error(e)) => ErrorCode::from_name(&e.code),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn send_stream_answers_each_send_of_each_batch_in_order() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let nowhere = missing_room();
    let with_id = |content: &str, client_id: &str| pb::SendRequest {
        client_id: Some(client_id.into()),
        ..text(&a, "u1", content)
    };
    let (batches, mut answers) = open_send_stream(&h).await;
    let batch = |batch_id, sends| pb::SendBatch { batch_id, sends };
    batches
        .send(batch(
            7,
            vec![
                batched(Some(with_id("one", "c1"))),
                batched(Some(text(&nowhere, "u1", "lost"))),
                batched(None),
                batched(Some(text(&a, "u1", ""))),
                batched(Some(with_id("two", "c2"))),
            ],
        ))
        .await
        .unwrap();
    let answer = next_answer(&mut answers).await.expect("an answer");
    assert_eq!((answer.batch_id, answer.draining), (7, false));
    let outcomes = answer.outcomes;
    assert_eq!(outcomes.len(), 5);
    let one = sent(&outcomes[0]);
    assert!(one.created && one.outbox_id > 0);
    assert_eq!(one.message.as_ref().unwrap().content, "one");
    assert_eq!(refused(&outcomes[1]), Some(ErrorCode::NotFound));
    assert_eq!(refused(&outcomes[2]), Some(ErrorCode::Validation));
    assert_eq!(refused(&outcomes[3]), Some(ErrorCode::Validation));
    let two = sent(&outcomes[4]);
    assert_eq!(two.message.as_ref().unwrap().content, "two");
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 2);

    // A repeat in a later batch is answered with the stored message and stores nothing.
    batches
        .send(batch(8, vec![batched(Some(with_id("one", "c1")))]))
        .await
        .unwrap();
    let answer = next_answer(&mut answers).await.expect("an answer");
    assert_eq!(answer.batch_id, 8);
    let again = sent(&answer.outcomes[0]);
    assert!(!again.created);
    assert_eq!(again.message.unwrap().id, one.message.unwrap().id);
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 2);

    // Too many sends in one batch: each is refused, nothing is stored, the stream goes on.
    let too_many = (0..=switchboard_messages::MAX_SENDS_PER_BATCH)
        .map(|i| batched(Some(text(&a, "u1", &format!("m{i}")))))
        .collect();
    batches.send(batch(9, too_many)).await.unwrap();
    let answer = next_answer(&mut answers).await.expect("an answer");
    assert_eq!(answer.batch_id, 9);
    assert_eq!(
        answer.outcomes.len(),
        switchboard_messages::MAX_SENDS_PER_BATCH + 1
    );
    assert!(
        answer
            .outcomes
            .iter()
            .all(|o| refused(o) == Some(ErrorCode::Validation))
    );
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 2);
    batches
        .send(batch(10, vec![batched(Some(with_id("three", "c3")))]))
        .await
        .unwrap();
    let answer = next_answer(&mut answers).await.expect("an answer");
    assert!(sent(&answer.outcomes[0]).created);

    // Closing the request side ends the stream once everything is answered.
    drop(batches);
    assert!(next_answer(&mut answers).await.is_none());
}

/// Shutting down, the service tells the stream to drain, still answers what the gateway sends
/// before closing its side, and then ends the stream: a rolling restart answers every batch.
#[tokio::test]
async fn a_draining_send_stream_answers_what_was_sent_before_it_closed() {
    let mut h = start().await;
    let a = h.room("chat", "a").await;
    let (batches, mut answers) = open_send_stream(&h).await;
    let batch = |batch_id, content: &str| pb::SendBatch {
        batch_id,
        sends: vec![batched(Some(text(&a, "u1", content)))],
    };
    batches.send(batch(1, "before")).await.unwrap();
    let answer = next_answer(&mut answers).await.expect("an answer");
    assert!(sent(&answer.outcomes[0]).created);

    let _ = h.stop.take().expect("running").send(());
    let notice = next_answer(&mut answers).await.expect("a notice");
    assert!(
        notice.draining,
        "the first answer after shutdown is the notice"
    );
    assert!(notice.outcomes.is_empty());

    // Sent after the notice (as a gateway's batch in flight would be): still stored, answered.
    batches.send(batch(2, "during")).await.unwrap();
    let answer = next_answer(&mut answers).await.expect("an answer");
    assert_eq!(answer.batch_id, 2);
    assert!(sent(&answer.outcomes[0]).created);
    drop(batches);
    assert!(next_answer(&mut answers).await.is_none());
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 2);
}

#[tokio::test]
async fn send_refuses_unknown_rooms_and_bad_input() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let nowhere = missing_room();
    assert_eq!(
        code(h.send(text(&nowhere, "u1", "hi")).await),
        ErrorCode::NotFound
    );

    let bad_type = pb::SendRequest {
        r#type: "video".into(),
        ..text(&a, "u1", "hi")
    };
    assert_eq!(code(h.send(bad_type).await), ErrorCode::Validation);
    assert_eq!(
        code(h.send(text(&a, "u1", "")).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(h.send(text(&a, "", "hi")).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(h.send(text(&a, &"u".repeat(257), "hi")).await),
        ErrorCode::Validation
    );
    let no_room = pb::SendRequest {
        room: None,
        ..text(&a, "u1", "hi")
    };
    assert_eq!(code(h.send(no_room).await), ErrorCode::Validation);
    let empty_kind = text(
        &RoomRef {
            kind: String::new(),
            id: "a".into(),
        },
        "u1",
        "hi",
    );
    assert_eq!(code(h.send(empty_kind).await), ErrorCode::Validation);

    // Content is counted in code points: MAX_CONTENT_CHARS multi-byte characters fit.
    assert!(
        h.send(text(&a, "u1", &"é".repeat(MAX_CONTENT_CHARS)))
            .await
            .is_ok()
    );
    let too_long = text(&a, "u1", &"a".repeat(MAX_CONTENT_CHARS + 1));
    assert_eq!(code(h.send(too_long).await), ErrorCode::Validation);

    let long_client_id = pb::SendRequest {
        client_id: Some("c".repeat(129)),
        ..text(&a, "u1", "hi")
    };
    assert_eq!(code(h.send(long_client_id).await), ErrorCode::Validation);
    let empty_client_id = pb::SendRequest {
        client_id: Some(String::new()),
        ..text(&a, "u1", "hi")
    };
    assert_eq!(code(h.send(empty_client_id).await), ErrorCode::Validation);
    let max_client_id = pb::SendRequest {
        client_id: Some("c".repeat(128)),
        ..text(&a, "u1", "hi")
    };
    assert!(h.send(max_client_id).await.unwrap().created);

    let text_with_file = pb::SendRequest {
        file_name: Some("x.txt".into()),
        ..text(&a, "u1", "hi")
    };
    assert_eq!(code(h.send(text_with_file).await), ErrorCode::Validation);

    assert_eq!(h.count("SELECT count(*) FROM messages").await, 2);
}

#[tokio::test]
async fn edit_rules() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("chat", "b").await;
    let m = h.text(&a, "author", "original").await;

    let edited = h
        .edit(&a, m.id, "by author", "author", false, 0)
        .await
        .unwrap();
    assert_eq!(edited.content, "by author");
    assert!(edited.edited_at_ms.is_some());
    assert_eq!((edited.id, edited.seq), (m.id, m.seq));

    assert_eq!(
        code(h.edit(&a, m.id, "hijack", "other", false, 0).await),
        ErrorCode::Forbidden
    );
    let moderated = h
        .edit(&a, m.id, "by moderator", "moderator", true, 0)
        .await
        .unwrap();
    assert_eq!(moderated.content, "by moderator");
    assert_eq!(h.get(&a, m.id).await.unwrap().content, "by moderator");

    // Wrong room, unknown message, bad content.
    assert_eq!(
        code(h.edit(&b, m.id, "x", "author", false, 0).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(h.edit(&a, m.id + 100, "x", "author", false, 0).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(h.edit(&a, m.id, "", "author", false, 0).await),
        ErrorCode::Validation
    );
    let too_long = "a".repeat(MAX_CONTENT_CHARS + 1);
    assert_eq!(
        code(h.edit(&a, m.id, &too_long, "author", false, 0).await),
        ErrorCode::Validation
    );

    // Within the window, then after it (for moderators too).
    assert!(
        h.edit(&a, m.id, "in time", "author", false, 60_000)
            .await
            .is_ok()
    );
    sqlx::query("UPDATE messages SET created_at = now() - interval '1 hour' WHERE id = $1")
        .bind(m.id)
        .execute(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        code(h.edit(&a, m.id, "late", "author", false, 60_000).await),
        ErrorCode::EditWindowExpired
    );
    assert_eq!(
        code(h.edit(&a, m.id, "late", "moderator", true, 60_000).await),
        ErrorCode::EditWindowExpired
    );
    assert!(
        h.edit(&a, m.id, "no window", "author", false, 0)
            .await
            .is_ok()
    );

    assert_eq!(
        h.count("SELECT count(*) FROM outbox WHERE event = 'edited'")
            .await,
        4
    );
}

#[tokio::test]
async fn delete_is_soft_and_hides_content() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let m = h.text(&a, "author", "secret").await;
    let img = h
        .send(pb::SendRequest {
            room: Some(a.clone()),
            sender_id: "author".into(),
            r#type: "image".into(),
            content: "caption".into(),
            file_name: Some("p.png".into()),
            file_size: Some(3),
            mime_type: Some("image/png".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .message
        .unwrap();

    assert_eq!(
        code(h.delete(&a, m.id, "other", false, 0).await),
        ErrorCode::Forbidden
    );
    let deleted = h.delete(&a, m.id, "author", false, 0).await.unwrap();
    assert_eq!(deleted.content, "");
    assert!(deleted.deleted_at_ms.is_some());
    assert_eq!(
        code(h.delete(&a, m.id, "author", false, 0).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(h.edit(&a, m.id, "revive", "author", false, 0).await),
        ErrorCode::NotFound
    );

    let got = h.get(&a, m.id).await.unwrap();
    assert_eq!(got.content, "");
    assert!(got.deleted_at_ms.is_some());
    let stored: String = sqlx::query_scalar("SELECT content FROM messages WHERE id = $1")
        .bind(m.id)
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(stored, "secret");

    let img_deleted = h.delete(&a, img.id, "moderator", true, 0).await.unwrap();
    assert_eq!(img_deleted.content, "");
    assert_eq!(
        (
            img_deleted.file_id,
            img_deleted.file_name,
            img_deleted.file_size,
            img_deleted.mime_type
        ),
        (None, None, None, None)
    );

    let page = h.history(&a, None, None, 0).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    assert!(
        page.messages
            .iter()
            .all(|m| m.content.is_empty() && m.deleted_at_ms.is_some())
    );

    // The repeat of a deleted message's send is a tombstone too.
    let c = h
        .send(pb::SendRequest {
            client_id: Some("k".into()),
            ..text(&a, "author", "keep")
        })
        .await
        .unwrap();
    h.delete(&a, c.message.unwrap().id, "author", false, 0)
        .await
        .unwrap();
    let repeat = h
        .send(pb::SendRequest {
            client_id: Some("k".into()),
            ..text(&a, "author", "keep")
        })
        .await
        .unwrap();
    assert!(!repeat.created);
    assert_eq!(repeat.message.unwrap().content, "");

    let events = h.claim(0, 0, 0).await.unwrap();
    let deleted_events = events.iter().filter(|e| e.event == "deleted").count();
    assert_eq!(deleted_events, 3);
    assert!(
        events
            .iter()
            .all(|e| e.message.as_ref().unwrap().content.is_empty())
    );

    // Delete window.
    let late = h.text(&a, "author", "old").await;
    sqlx::query("UPDATE messages SET created_at = now() - interval '1 hour' WHERE id = $1")
        .bind(late.id)
        .execute(&h.pool)
        .await
        .unwrap();
    assert_eq!(
        code(h.delete(&a, late.id, "author", false, 60_000).await),
        ErrorCode::EditWindowExpired
    );
}

#[tokio::test]
async fn get_is_scoped_to_the_room() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("channel", "a").await;
    let m = h.text(&a, "u1", "hi").await;
    assert_eq!(h.get(&a, m.id).await.unwrap().content, "hi");
    assert_eq!(code(h.get(&b, m.id).await), ErrorCode::NotFound);
    assert_eq!(code(h.get(&a, m.id + 1).await), ErrorCode::NotFound);
    assert_eq!(code(h.get(&a, 0).await), ErrorCode::Validation);
}

#[tokio::test]
async fn locate_answers_a_messages_room() {
    let h = start().await;
    let a = h.room("study", "s1").await;
    let m = h.text(&a, "u1", "hi").await;
    let locate = |id| {
        let mut client = h.client.clone();
        async move {
            client
                .locate(pb::LocateMessageRequest { message_id: id })
                .await
                .map(|r| r.into_inner())
                .map_err(DomainError::from)
        }
    };
    assert_eq!(locate(m.id).await.unwrap(), a);
    assert_eq!(code(locate(m.id + 1000).await), ErrorCode::NotFound);
    assert_eq!(code(locate(0).await), ErrorCode::Validation);
}

#[tokio::test]
async fn mark_read_only_moves_forward() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("chat", "b").await;
    let m1 = h.text(&a, "u1", "1").await;
    let m2 = h.text(&a, "u1", "2").await;
    let m3 = h.text(&a, "u1", "3").await;
    let elsewhere = h.text(&b, "u1", "b").await;

    let r = h.mark_read(&a, "reader", m2.id).await.unwrap();
    assert!(r.moved);
    assert_eq!(r.message_id, m2.id);
    assert!(r.read_at_ms > 0);

    let back = h.mark_read(&a, "reader", m1.id).await.unwrap();
    assert!(!back.moved);
    assert_eq!((back.message_id, back.read_at_ms), (m2.id, r.read_at_ms));
    let same = h.mark_read(&a, "reader", m2.id).await.unwrap();
    assert!(!same.moved);
    assert_eq!(same.message_id, m2.id);

    let fwd = h.mark_read(&a, "reader", m3.id).await.unwrap();
    assert!(fwd.moved);
    assert_eq!(fwd.message_id, m3.id);
    assert!(fwd.read_at_ms >= r.read_at_ms);

    assert_eq!(
        code(h.mark_read(&a, "reader", elsewhere.id).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(h.mark_read(&a, "reader", 999_999).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(h.mark_read(&a, "", m1.id).await),
        ErrorCode::Validation
    );

    // Concurrent marks end at the furthest message.
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(h.text(&a, "u1", &format!("m{i}")).await.id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for id in ids.iter().copied() {
        let mut client = h.client.clone();
        let room = a.clone();
        tasks.spawn(async move {
            client
                .mark_read(pb::MarkReadRequest {
                    room: Some(room),
                    user_id: "racer".into(),
                    message_id: id,
                })
                .await
                .map(|r| r.into_inner())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().expect("mark read");
    }
    let last = *ids.last().unwrap();
    let end = h.mark_read(&a, "racer", ids[0]).await.unwrap();
    assert!(!end.moved);
    assert_eq!(end.message_id, last);
}

#[tokio::test]
async fn history_pages_both_ways() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("chat", "b").await;
    let mut m = Vec::new();
    for i in 0..7 {
        m.push(h.text(&a, "u1", &format!("m{i}")).await.id);
        h.text(&b, "u1", "noise").await;
    }

    let latest = h.history(&a, None, None, 3).await.unwrap();
    assert_eq!(ids(&latest.messages), vec![m[6], m[5], m[4]]);
    assert!(latest.has_more);
    let older = h.history(&a, Some(m[4]), None, 3).await.unwrap();
    assert_eq!(ids(&older.messages), vec![m[3], m[2], m[1]]);
    assert!(older.has_more);
    let oldest = h.history(&a, Some(m[1]), None, 3).await.unwrap();
    assert_eq!(ids(&oldest.messages), vec![m[0]]);
    assert!(!oldest.has_more);
    let exact = h.history(&a, Some(m[3]), None, 3).await.unwrap();
    assert_eq!(ids(&exact.messages), vec![m[2], m[1], m[0]]);
    assert!(!exact.has_more);

    let newer = h.history(&a, None, Some(m[0]), 3).await.unwrap();
    assert_eq!(ids(&newer.messages), vec![m[1], m[2], m[3]]);
    assert!(newer.has_more);
    let newest = h.history(&a, None, Some(m[3]), 3).await.unwrap();
    assert_eq!(ids(&newest.messages), vec![m[4], m[5], m[6]]);
    assert!(!newest.has_more);
    let from_start = h.history(&a, None, Some(0), 0).await.unwrap();
    assert_eq!(ids(&from_start.messages), m);
    assert!(!from_start.has_more);

    let all = h.history(&a, None, None, 0).await.unwrap();
    assert_eq!(all.messages.len(), 7);
    assert!(!all.has_more);
    assert!(h.history(&a, None, None, 100).await.is_ok());
    assert!(h.history(&a, None, None, 1).await.unwrap().has_more);
    assert_eq!(
        code(h.history(&a, None, None, 101).await),
        ErrorCode::Validation
    );
    assert_eq!(
        code(h.history(&a, Some(m[3]), Some(m[1]), 3).await),
        ErrorCode::Validation
    );
    let nowhere = missing_room();
    assert_eq!(
        code(h.history(&nowhere, None, None, 0).await),
        ErrorCode::NotFound
    );

    let empty = h.room("chat", "empty").await;
    let none = h.history(&empty, None, None, 0).await.unwrap();
    assert!(none.messages.is_empty() && !none.has_more);
}

#[tokio::test]
async fn receipts_list_cursors_sorted_by_user() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let b = h.room("chat", "b").await;
    let m1 = h.text(&a, "u1", "1").await;
    let m2 = h.text(&a, "u1", "2").await;
    let mb = h.text(&b, "u1", "b").await;
    h.mark_read(&a, "carol", m1.id).await.unwrap();
    h.mark_read(&a, "alice", m2.id).await.unwrap();
    h.mark_read(&a, "bob", m1.id).await.unwrap();
    h.mark_read(&b, "dave", mb.id).await.unwrap();

    let list = |users: Vec<&str>| {
        let mut client = h.client.clone();
        let room = a.clone();
        let user_ids = users.into_iter().map(String::from).collect();
        async move {
            client
                .list_receipts(pb::ListReceiptsRequest {
                    room: Some(room),
                    user_ids,
                })
                .await
                .map(|r| r.into_inner().receipts)
                .map_err(DomainError::from)
        }
    };
    let all = list(vec![]).await.unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.user_id.as_str()).collect();
    assert_eq!(names, vec!["alice", "bob", "carol"]);
    assert_eq!(all[0].message_id, m2.id);
    assert_eq!(all[1].message_id, m1.id);
    assert!(all.iter().all(|r| r.read_at_ms > 0));

    let some = list(vec!["carol", "alice", "nobody"]).await.unwrap();
    let names: Vec<&str> = some.iter().map(|r| r.user_id.as_str()).collect();
    assert_eq!(names, vec!["alice", "carol"]);
    assert_eq!(code(list(vec![""]).await), ErrorCode::Validation);
}

#[tokio::test]
async fn outbox_claim_lease_and_delivery() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    let m1 = h.send(text(&a, "u1", "one")).await.unwrap();
    let m2 = h.send(text(&a, "u1", "two")).await.unwrap();
    let id1 = m1.message.as_ref().unwrap().id;
    h.edit(&a, id1, "one!", "u1", false, 0).await.unwrap();

    // Too recent for a one-hour threshold.
    assert!(h.claim(3_600_000, 0, 0).await.unwrap().is_empty());

    let claimed = h.claim(0, 2, 60_000).await.unwrap();
    assert_eq!(
        claimed.iter().map(|e| e.outbox_id).collect::<Vec<_>>(),
        vec![m1.outbox_id, m2.outbox_id]
    );
    assert_eq!(claimed[0].event, "new");
    // The message as it is now (edited), not as it was.
    assert_eq!(claimed[0].message.as_ref().unwrap().content, "one!");
    assert_eq!(claimed[1].message, m2.message);

    // Leased: the next claimer gets only what is left.
    let rest = h.claim(0, 0, 60_000).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event, "edited");
    assert_eq!(rest[0].message.as_ref().unwrap().id, id1);
    assert!(h.claim(0, 0, 0).await.unwrap().is_empty());

    // An expired lease makes the entry claimable again.
    sqlx::query("UPDATE outbox SET claimed_until = now() - interval '1 second' WHERE id = $1")
        .bind(m1.outbox_id)
        .execute(&h.pool)
        .await
        .unwrap();
    let again = h.claim(0, 0, 0).await.unwrap();
    assert_eq!(
        again.iter().map(|e| e.outbox_id).collect::<Vec<_>>(),
        vec![m1.outbox_id]
    );

    let delivered: Vec<i64> = claimed
        .iter()
        .chain(rest.iter())
        .map(|e| e.outbox_id)
        .collect();
    h.client
        .clone()
        .mark_delivered(pb::MarkDeliveredRequest {
            outbox_ids: delivered,
        })
        .await
        .unwrap();
    assert_eq!(h.count("SELECT count(*) FROM outbox").await, 0);
    assert_eq!(h.count("SELECT count(*) FROM messages").await, 2);

    assert_eq!(code(h.claim(-1, 0, 0).await), ErrorCode::Validation);
    assert_eq!(code(h.claim(0, 1001, 0).await), ErrorCode::Validation);
    assert_eq!(code(h.claim(0, 0, -1).await), ErrorCode::Validation);
    assert!(h.claim(0, 1000, 0).await.is_ok());
}

#[tokio::test]
async fn concurrent_claimers_get_disjoint_entries() {
    let h = start().await;
    let a = h.room("chat", "a").await;
    for i in 0..60 {
        h.text(&a, "u1", &format!("m{i}")).await;
    }
    for _round in 0..2 {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2 {
            let mut client = h.client.clone();
            tasks.spawn(async move {
                client
                    .claim_undelivered(pb::ClaimUndeliveredRequest {
                        older_than_ms: 0,
                        limit: 20,
                        lease_ms: 60_000,
                    })
                    .await
                    .map(|r| r.into_inner().events)
            });
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        while let Some(r) = tasks.join_next().await {
            let events = r.unwrap().expect("claim");
            assert!(events.len() <= 20);
            total += events.len();
            for e in events {
                assert!(
                    seen.insert(e.outbox_id),
                    "outbox entry {} claimed twice",
                    e.outbox_id
                );
            }
        }
        assert_eq!(total, 40);
        // Nothing claimed in this round may be claimed again in the next.
        let claimed: Vec<i64> = seen.into_iter().collect();
        let still_leased: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox WHERE id = ANY($1) AND claimed_until > now()",
        )
        .bind(&claimed)
        .fetch_one(&h.pool)
        .await
        .unwrap();
        assert_eq!(still_leased, 40);
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&claimed)
            .execute(&h.pool)
            .await
            .unwrap();
        for i in 0..20 {
            h.text(&a, "u1", &format!("more {i}")).await;
        }
    }
}
