//! Switchboard patch (SWITCHBOARD.md): what a socket's CONNECT packet announces.

mod fixture;

use std::time::Duration;

use futures_util::StreamExt;
use socketioxide::{
    extract::SocketRef,
    handler::ConnectHandler,
    socket::ConnectSession,
};
use tokio_tungstenite::tungstenite::Message;

use crate::fixture::{create_server, create_ws_connection};

/// The first socket.io packet (`4…`) the server sends on `ws`.
async fn connect_packet<S>(ws: &mut S) -> String
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(Duration::from_millis(200), ws.next())
            .await
            .expect("a packet")
            .expect("an open connection")
            .expect("a frame");
        if let Message::Text(text) = msg
            && text.starts_with("40")
        {
            return text.to_string();
        }
    }
}

#[tokio::test]
async fn a_middleware_sets_the_session_the_connect_packet_announces() {
    let (svc, io) = create_server().await;
    io.ns(
        "/",
        { async || () }.with(async |s: SocketRef| {
            s.set_connect_session(ConnectSession {
                sid: "the-first-id".into(),
                pid: "private".into(),
            });
            Ok::<(), std::io::Error>(())
        }),
    );
    let mut ws = create_ws_connection(&svc).await;
    assert_eq!(
        connect_packet(&mut ws).await,
        r#"40{"sid":"the-first-id","pid":"private"}"#
    );
}

#[tokio::test]
async fn without_a_session_the_connect_packet_carries_the_socket_id() {
    let (svc, io) = create_server().await;
    io.ns("/", async || ());
    let mut ws = create_ws_connection(&svc).await;
    let packet = connect_packet(&mut ws).await;
    assert!(packet.starts_with(r#"40{"sid":""#), "{packet}");
    assert!(!packet.contains("pid"), "{packet}");
}
