//! The one error-code table. Each domain error has one row: its gRPC code (between services) and
//! its HTTP status (integration API). Each dialect maps these codes to its own contract's codes
//! and shapes, in its own folder of the gateway.
//!
//! Across gRPC, the exact domain code travels in the `x-switchboard-error` metadata entry, so
//! a code that shares a gRPC code with another (e.g. `EditWindowExpired` and `Conflict`) comes
//! back as itself.

use std::fmt;

/// Every error a client or an operator can be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Malformed or out-of-range input.
    Validation,
    /// No valid credential.
    Unauthorized,
    /// A credential that was valid but has expired.
    TokenExpired,
    /// Authenticated, but not allowed (includes rooms that do not exist: existence is not revealed).
    Forbidden,
    /// The resource does not exist (where revealing that is harmless).
    NotFound,
    /// The request conflicts with the current state.
    Conflict,
    /// Too many requests in the window.
    RateLimited,
    /// The payload exceeds the configured size.
    PayloadTooLarge,
    /// An edit or delete after the allowed window.
    EditWindowExpired,
    /// The socket has not joined the room it acts in (contracts that require a prior join).
    NotJoined,
    /// A dependency (database, Redis, a service) is unreachable.
    Unavailable,
    /// Anything else: a bug or an unexpected failure. Never carries details to clients.
    Internal,
}

/// One row of the table.
pub struct ErrorRow {
    pub code: ErrorCode,
    /// Stable name, used in logs, metrics and the integration API's `error` field.
    pub name: &'static str,
    pub grpc: tonic::Code,
    pub http: u16,
}

/// The table itself.
pub const TABLE: &[ErrorRow] = &[
    row(
        ErrorCode::Validation,
        "VALIDATION_ERROR",
        tonic::Code::InvalidArgument,
        400,
    ),
    row(
        ErrorCode::Unauthorized,
        "UNAUTHORIZED",
        tonic::Code::Unauthenticated,
        401,
    ),
    row(
        ErrorCode::TokenExpired,
        "TOKEN_EXPIRED",
        tonic::Code::Unauthenticated,
        401,
    ),
    row(
        ErrorCode::Forbidden,
        "FORBIDDEN",
        tonic::Code::PermissionDenied,
        403,
    ),
    row(ErrorCode::NotFound, "NOT_FOUND", tonic::Code::NotFound, 404),
    row(
        ErrorCode::Conflict,
        "CONFLICT",
        tonic::Code::AlreadyExists,
        409,
    ),
    row(
        ErrorCode::RateLimited,
        "RATE_LIMITED",
        tonic::Code::ResourceExhausted,
        429,
    ),
    row(
        ErrorCode::PayloadTooLarge,
        "PAYLOAD_TOO_LARGE",
        tonic::Code::InvalidArgument,
        413,
    ),
    row(
        ErrorCode::EditWindowExpired,
        "EDIT_WINDOW_EXPIRED",
        tonic::Code::FailedPrecondition,
        403,
    ),
    row(
        ErrorCode::NotJoined,
        "NOT_JOINED",
        tonic::Code::FailedPrecondition,
        409,
    ),
    row(
        ErrorCode::Unavailable,
        "UNAVAILABLE",
        tonic::Code::Unavailable,
        503,
    ),
    row(ErrorCode::Internal, "INTERNAL", tonic::Code::Internal, 500),
];

const fn row(code: ErrorCode, name: &'static str, grpc: tonic::Code, http: u16) -> ErrorRow {
    ErrorRow {
        code,
        name,
        grpc,
        http,
    }
}

impl ErrorCode {
    pub fn row(self) -> &'static ErrorRow {
        TABLE
            .iter()
            .find(|r| r.code == self)
            .expect("every ErrorCode has a row in TABLE")
    }
    pub fn name(self) -> &'static str {
        self.row().name
    }
    pub fn http_status(self) -> u16 {
        self.row().http
    }
    pub fn grpc_code(self) -> tonic::Code {
        self.row().grpc
    }
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|r| r.name == name).map(|r| r.code)
    }
    /// The message shown to clients when no more specific one is given.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorCode::Validation => "Invalid request",
            ErrorCode::Unauthorized => "Authentication required",
            ErrorCode::TokenExpired => "Token expired",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "Not found",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::PayloadTooLarge => "Payload too large",
            ErrorCode::EditWindowExpired => "Edit window expired",
            ErrorCode::NotJoined => "Join the room first",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::Internal => "Internal error",
        }
    }
}

/// A domain error: a code from the table and a message safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainError {
    pub code: ErrorCode,
    pub message: String,
}

impl DomainError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn of(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Validation, message)
    }
    pub fn forbidden() -> Self {
        Self::of(ErrorCode::Forbidden)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    /// An unexpected failure: logged here with its cause, shown to clients without it.
    pub fn internal(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::of(ErrorCode::Internal)
    }
    /// A dependency is unreachable: logged here, shown to clients without details.
    pub fn unavailable(cause: impl fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::of(ErrorCode::Unavailable)
    }
}

impl fmt::Display for DomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for DomainError {}

const ERROR_METADATA: &str = "x-switchboard-error";

impl From<DomainError> for tonic::Status {
    fn from(e: DomainError) -> Self {
        let mut status = tonic::Status::new(e.code.grpc_code(), e.message);
        if let Ok(v) = e.code.name().parse() {
            status.metadata_mut().insert(ERROR_METADATA, v);
        }
        status
    }
}

impl From<tonic::Status> for DomainError {
    fn from(s: tonic::Status) -> Self {
        let exact = s
            .metadata()
            .get(ERROR_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_name);
        let code = exact.unwrap_or(match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::Validation,
            tonic::Code::Unauthenticated => ErrorCode::Unauthorized,
            tonic::Code::PermissionDenied => ErrorCode::Forbidden,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists | tonic::Code::Aborted => ErrorCode::Conflict,
            tonic::Code::ResourceExhausted => ErrorCode::RateLimited,
            tonic::Code::FailedPrecondition => ErrorCode::Conflict,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        });
        match code {
            // Another service's internals stay in that service's logs.
            ErrorCode::Internal | ErrorCode::Unavailable => {
                tracing::warn!(grpc_code = ?s.code(), message = s.message(), "gRPC call failed");
                DomainError::of(code)
            }
            _ => DomainError::new(code, s.message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc() {
        for r in TABLE {
            let e = DomainError::new(r.code, "m");
            let back = DomainError::from(tonic::Status::from(e));
            assert_eq!(back.code, r.code, "{}", r.name);
        }
    }

    #[test]
    fn names_are_unique() {
        for r in TABLE {
            assert_eq!(ErrorCode::from_name(r.name), Some(r.code));
        }
    }
}
