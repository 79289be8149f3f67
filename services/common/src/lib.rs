//! What every Switchboard service shares: configuration from the environment, telemetry
//! (tracing + OpenTelemetry, trace context across gRPC), the one error-code table, time
//! formatting and graceful-shutdown signals. No business rules live here.

pub mod config;
#[cfg(feature = "postgres")]
pub mod db;
pub mod error;
pub mod shutdown;
pub mod telemetry;
pub mod time_fmt;

pub use error::{DomainError, ErrorCode};
