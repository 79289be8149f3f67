//! What every Switchboard service shares: configuration from the environment, telemetry
//! (tracing + OpenTelemetry, trace context across gRPC), the one error-code table, time
//! formatting, graceful-shutdown signals and (feature `jemalloc`) the services' allocator. No
//! business rules live here.

pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod error;
pub mod shutdown;
pub mod telemetry;
pub mod time_fmt;

pub use error::{DomainError, ErrorCode};

// jemalloc instead of glibc's malloc: allocation was ~12 % of a gateway's CPU under persisted
// sends, and jemalloc cut the gateway's CPU per send by 13 % (docs/benchmarks/README.md §10).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
