//! Dialects: one per client contract. A dialect parses its contract's payloads into core
//! commands and renders core events and errors into its contract's shapes. No business rule
//! lives here.

pub mod chat;

use serde_json::{Map, Value};
use switchboard_common::DomainError;

/// The payload as an object, or the contract's validation error.
pub fn object(v: &Value) -> Result<&Map<String, Value>, DomainError> {
    v.as_object()
        .ok_or_else(|| DomainError::validation("Payload must be an object"))
}

/// A required string field of 1..=`max_chars` Unicode code points (only "" is empty).
pub fn string_field<'a>(
    o: &'a Map<String, Value>,
    name: &str,
    max_chars: usize,
) -> Result<&'a str, DomainError> {
    match o.get(name) {
        Some(Value::String(s)) if s.is_empty() => {
            Err(DomainError::validation(format!("{name} must not be empty")))
        }
        Some(Value::String(s)) if exceeds_chars(s, max_chars) => Err(DomainError::validation(
            format!("{name} must be at most {max_chars} characters"),
        )),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DomainError::validation(format!("{name} must be a string"))),
        None => Err(DomainError::validation(format!("{name} is required"))),
    }
}

/// True when `s` has more than `max` code points (without counting past `max`).
pub fn exceeds_chars(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().nth(max).is_some()
}
