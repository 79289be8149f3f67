//! What every Switchboard service shares: configuration from the environment, telemetry
//! (tracing + OpenTelemetry, trace context across gRPC), the one error-code table, time
//! formatting, the room key and id limits, the permission names, graceful-shutdown signals and (feature `jemalloc`) the services' allocator. No
//! business rules live here.

pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod error;
pub mod permission;
pub mod room;
pub mod shutdown;
pub mod telemetry;
pub mod time_fmt;

pub use error::{DomainError, ErrorCode};
pub use permission::{Permission, Permissions};
pub use room::RoomKey;

// jemalloc instead of glibc's malloc: allocation was ~12 % of a gateway's CPU under persisted
// sends, and jemalloc cut the gateway's CPU per send by 13 % (docs/benchmarks/README.md §10).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The connections a gRPC service accepts on its (already bound) listener, with Nagle's
/// algorithm off: a response written in more than one segment otherwise waits for the
/// caller's delayed ACK (up to 40 ms) before its last segment leaves (docs/benchmarks §12).
pub fn grpc_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
