//! Memory of idle sockets: hyper parses a request head into slices of its connection's read
//! buffer (16 KiB: axum's HTTP/1-or-2 sniffing hands hyper the first 24 bytes on their own, so
//! hyper grows its 8 KiB buffer before the head is complete), and
//! engineioxide keeps a clone of the handshake's parts (headers and URI) for the socket's whole
//! life, so each open socket pinned that buffer. [`compact_engine_io_head`] copies the head of
//! every Engine.IO request into one exactly sized allocation first: the same headers in the same
//! order, the same URI. Of the extensions it keeps only what is read after routing: the peer's
//! address (the handshake reads it) and hyper's upgrade handle (engineioxide upgrades with it).
//! axum's routing state (its URL parameters: ≈ 350 bytes), its `OriginalUri` and HTTP/2's
//! protocol, which nothing reads, would otherwise stay with every socket too, each boxed in a
//! larger map (docs/benchmarks §18, §23, §26).

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderValue, Uri},
};

/// Engine.IO's request path (socketioxide's default, which the gateway keeps).
const ENGINE_IO_PATH: &str = "/socket.io";

/// Middleware: Engine.IO requests get a compact head; every other request passes untouched.
pub async fn compact_engine_io_head(req: Request) -> Request {
    if req.uri().path().starts_with(ENGINE_IO_PATH) {
        compact_head(req)
    } else {
        req
    }
}

/// Copies the URI and every header value of `req` into one buffer of exactly their size; the
/// new URI and values are slices of it, so the request no longer refers to hyper's buffer.
pub fn compact_head<B>(req: ::http::Request<B>) -> ::http::Request<B> {
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.to_string();
    let len = uri.len() + parts.headers.values().map(|v| v.len()).sum::<usize>();
    let mut buf = Vec::with_capacity(len);
    buf.extend_from_slice(uri.as_bytes());
    for value in parts.headers.values() {
        buf.extend_from_slice(value.as_bytes());
    }
    let buf = Bytes::from(buf);
    if let Ok(compact) = Uri::from_maybe_shared(buf.slice(..uri.len())) {
        parts.uri = compact;
    }
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    let mut at = uri.len();
    for (name, value) in &parts.headers {
        let end = at + value.len();
        let mut compact =
            HeaderValue::from_maybe_shared(buf.slice(at..end)).unwrap_or_else(|_| value.clone());
        compact.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), compact);
        at = end;
    }
    parts.headers = headers;
    parts.extensions = kept_extensions(&mut parts.extensions);
    ::http::Request::from_parts(parts, body)
}

/// The extensions an Engine.IO request needs after routing: the peer's address and hyper's
/// upgrade handle.
fn kept_extensions(all: &mut ::http::Extensions) -> ::http::Extensions {
    let mut kept = ::http::Extensions::new();
    if let Some(peer) = all.remove::<ConnectInfo<SocketAddr>>() {
        kept.insert(peer);
    }
    if let Some(upgrade) = all.remove::<hyper::upgrade::OnUpgrade>() {
        kept.insert(upgrade);
    }
    kept
}

#[cfg(test)]
mod tests {
    use axum::extract::OriginalUri;

    use super::*;

    #[test]
    fn compact_head_keeps_uri_headers_and_the_extensions_read_later() {
        let mut req = ::http::Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&token=a%20b")
            .header("host", "127.0.0.1:3000")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-custom", "v")
            .header("user-agent", "node")
            .body(())
            .unwrap();
        req.extensions_mut().insert(42u32);
        let peer: SocketAddr = "10.0.0.7:50123".parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let original = OriginalUri(req.uri().clone());
        req.extensions_mut().insert(original);
        let before_uri = req.uri().clone();
        let before_headers = req.headers().clone();
        let req = compact_head(req);
        assert_eq!(req.uri(), &before_uri);
        assert_eq!(
            req.uri().query(),
            Some("EIO=4&transport=websocket&token=a%20b")
        );
        assert_eq!(req.headers(), &before_headers);
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(
            req.extensions().get::<u32>(),
            None,
            "routing state is not kept"
        );
        assert_eq!(
            req.extensions().get::<ConnectInfo<SocketAddr>>().unwrap().0,
            peer
        );
        assert!(
            req.extensions().get::<OriginalUri>().is_none(),
            "nothing reads the original URI after routing"
        );
    }

    #[test]
    fn compact_head_keeps_sensitive_values_and_absolute_uris() {
        let mut value = HeaderValue::from_static("Bearer x");
        value.set_sensitive(true);
        let mut req = ::http::Request::builder()
            .uri("http://example.com:8080/socket.io/?EIO=4")
            .body(())
            .unwrap();
        req.headers_mut().insert("authorization", value);
        let req = compact_head(req);
        assert_eq!(
            req.uri().to_string(),
            "http://example.com:8080/socket.io/?EIO=4"
        );
        assert!(req.headers()["authorization"].is_sensitive());
    }
}
