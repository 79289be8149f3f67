//! Dialects: one per client contract, each in its own folder. A dialect parses its contract's
//! payloads into core commands and renders core events and errors into its contract's shapes;
//! no business rule lives here (who may do what, limits, what is broadcast: [`crate::core`]).
//!
//! # The interface
//! A dialect is a value implementing [`Dialect`]: its name and default namespace, its room kinds,
//! the credentials its handshake accepts and how a refusal looks, its events (payload → core
//! command, [`Dialect::handle`]), how an error looks in it ([`Dialect::error`]), how the core's
//! events render for it ([`Dialect::render`]), and optionally what a socket hears right after
//! connecting or right before an administrative disconnect, an inbound size cap and HTTP routes
//! of its own. The generic plumbing (in-order dispatch, acknowledgements, spans, metrics, the
//! inbound cap) is [`crate::events`].
//!
//! # Adding a dialect
//! A folder here with a type implementing [`Dialect`], and one line in [`REGISTRY`]. Which
//! namespace it serves is configuration (`SWITCHBOARD_DIALECTS=name=/namespace,…`).

mod app;
mod chat;
mod guild;
mod tasks;
mod vault;

use std::{future::Future, pin::Pin, sync::Arc};

use serde_json::{Map, Value};
use switchboard_common::{DomainError, room::exceeds_chars};

use crate::{
    Gateway,
    auth::{AuthFailure, Credentials},
    core::{Core, CoreEvent},
    events::EventCx,
    fanout::Emission,
};

/// Every dialect the gateway can mount: its name and how it is built (reading its own
/// `SWITCHBOARD_<NAME>_*` configuration, validated at start-up).
const REGISTRY: &[(&str, Constructor)] = &[
    ("chat", chat::build),
    ("app", app::build),
    ("guild", guild::build),
    ("vault", vault::build),
    ("tasks", tasks::build),
];

type Constructor = fn() -> anyhow::Result<Arc<dyn Dialect>>;

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an event's handler answers.
pub(crate) type HandlerFuture = BoxFuture<'static, Result<Reply, DomainError>>;

/// One emit to the socket that sent an event (or that just connected).
#[derive(Debug, Clone)]
pub(crate) struct Emit {
    pub event: &'static str,
    pub data: Value,
}

/// What a socket gets back for one of its events: an acknowledgement (sent only when the
/// client asked for one) and emits to it.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    pub ack: Option<Value>,
    pub emits: Vec<Emit>,
}

impl Reply {
    pub fn ack(data: Value) -> Self {
        Reply {
            ack: Some(data),
            emits: vec![],
        }
    }
    pub fn emit(event: &'static str, data: Value) -> Self {
        Reply {
            ack: None,
            emits: vec![Emit { event, data }],
        }
    }
    pub fn with_ack(mut self, data: Value) -> Self {
        self.ack = Some(data);
        self
    }
}

/// One client contract.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// Its name in `SWITCHBOARD_DIALECTS`, logs and metrics.
    fn name(&self) -> &'static str;
    /// The namespace it serves unless configured otherwise.
    fn default_namespace(&self) -> &'static str;
    /// The room kinds its rooms are: room events (messages, membership changes) of these kinds
    /// are rendered by it.
    fn room_kinds(&self) -> &'static [&'static str];
    /// The handshake credentials it accepts.
    fn credentials(&self) -> Credentials;
    /// The `connect_error` message of a refused handshake (also its metrics code).
    fn refusal(&self, why: AuthFailure) -> &'static str;
    /// For contracts that refuse a handshake with an event instead: the connection is accepted,
    /// the socket hears this, then the server disconnects it.
    fn refusal_after_connect(&self, _why: AuthFailure) -> Option<Emit> {
        None
    }
    /// Events whose JSON arguments exceed this many bytes are dropped and answered with
    /// [`Dialect::error`] of [`switchboard_common::ErrorCode::PayloadTooLarge`].
    fn inbound_cap(&self) -> Option<usize> {
        None
    }
    /// How long a socket of this namespace stays present without a refresh (None: the presence
    /// service's default).
    fn presence_ttl(&self) -> Option<std::time::Duration> {
        None
    }
    /// Emits to a socket right after it connected (may look the user up through the core).
    fn connected<'a>(&'a self, _core: &'a Core, _user_id: &'a str) -> BoxFuture<'a, Vec<Emit>> {
        Box::pin(async { vec![] })
    }
    /// The handler of `event`, or None when the contract has no such client event (the event
    /// then gets no answer at all).
    fn handle(&self, cx: EventCx, event: &str, data: Value) -> Option<HandlerFuture>;
    /// How a refused event is answered. `correlation_id` is the event's trace id.
    fn error(&self, event: &str, error: &DomainError, correlation_id: &str) -> Reply;
    /// The emissions of a core event in this dialect's namespace (none when the contract has
    /// no such event). May look things up through the core (names, members, presence).
    fn render<'a>(
        &'a self,
        core: &'a Core,
        namespace: &'a str,
        event: &'a CoreEvent<'a>,
    ) -> BoxFuture<'a, Vec<Emission>>;
    /// What each socket hears right before an administrative disconnect.
    fn disconnect_notice(&self, _reason: &str) -> Option<Emit> {
        None
    }
    /// HTTP routes of its own (merged into the gateway's router).
    fn routes(&self) -> Option<axum::Router<Arc<Gateway>>> {
        None
    }
}

/// A dialect serving one namespace.
#[derive(Clone)]
pub(crate) struct Mount {
    /// Shared by the mount's sockets (one copy, not one each).
    pub namespace: Arc<str>,
    pub dialect: Arc<dyn Dialect>,
}

/// Builds the dialects named in `config` (`(name, namespace)` pairs; empty: every registered
/// dialect on its default namespace).
pub(crate) fn mount(config: &[(String, String)]) -> anyhow::Result<Vec<Mount>> {
    let mut mounts: Vec<Mount> = Vec::new();
    if config.is_empty() {
        for (_, build) in REGISTRY {
            let dialect = build()?;
            mounts.push(Mount {
                namespace: dialect.default_namespace().into(),
                dialect,
            });
        }
        return Ok(mounts);
    }
    for (name, namespace) in config {
        let Some((_, build)) = REGISTRY.iter().find(|(n, _)| n == name) else {
            anyhow::bail!(
                "SWITCHBOARD_DIALECTS: unknown dialect {name:?} (known: {})",
                REGISTRY
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !namespace.starts_with('/') {
            anyhow::bail!("SWITCHBOARD_DIALECTS: namespace {namespace:?} must start with '/'");
        }
        if mounts.iter().any(|m| *m.namespace == **namespace) {
            anyhow::bail!("SWITCHBOARD_DIALECTS: namespace {namespace:?} is mounted twice");
        }
        mounts.push(Mount {
            namespace: namespace.as_str().into(),
            dialect: build()?,
        });
    }
    Ok(mounts)
}

// ---- parsing helpers shared by dialects ----

/// The payload as an object, or the contract's validation error.
pub(crate) fn object(v: &Value) -> Result<&Map<String, Value>, DomainError> {
    v.as_object()
        .ok_or_else(|| DomainError::validation("Payload must be an object"))
}

/// A required string field of 1..=`max_chars` Unicode code points (only "" is empty).
pub(crate) fn string_field<'a>(
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
        Some(Value::String(s)) if s.contains('\0') => Err(DomainError::validation(format!(
            "{name} must not contain NUL"
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DomainError::validation(format!("{name} must be a string"))),
        None => Err(DomainError::validation(format!("{name} is required"))),
    }
}

/// A required id (the field `name`'s value `v`) given as a non-negative integer or a string of
/// decimal digits (contracts whose documents show numeric ids); answers its decimal text, the
/// core's opaque id.
pub(crate) fn numeric_id(v: Option<&Value>, name: &str) -> Result<String, DomainError> {
    let invalid = || DomainError::validation(format!("{name} must be a positive integer"));
    let text = match v {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(invalid)?.to_string(),
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            return Err(DomainError::validation(format!("{name} is required")));
        }
        Some(_) => return Err(invalid()),
    };
    // At most 18 digits: every such id fits an i64 when rendered back as a number.
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    // "007" and 7 are the same id.
    let canonical = text.trim_start_matches('0');
    Ok(if canonical.is_empty() { "0" } else { canonical }.to_string())
}

/// A required id the core mints (a message's, a file's): a positive integer, given as a number or
/// a numeric string.
pub(crate) fn positive_id(v: Option<&Value>, name: &str) -> Result<i64, DomainError> {
    numeric_id(v, name)?
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| DomainError::validation(format!("{name} must be a positive integer")))
}

/// An opaque id rendered as a JSON number where it is one (numeric contracts), else as a string.
pub(crate) fn numeric_json(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(n) if n.to_string() == id => Value::from(n),
        _ => Value::from(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_ids_accept_numbers_and_digit_strings() {
        assert_eq!(numeric_id(Some(&json!(7)), "id").unwrap(), "7");
        assert_eq!(numeric_id(Some(&json!("7")), "id").unwrap(), "7");
        assert_eq!(numeric_id(Some(&json!("007")), "id").unwrap(), "7");
        for bad in [
            json!(-1),
            json!(1.5),
            json!("abc"),
            json!(""),
            json!("1e3"),
            json!(null),
            json!({}),
            json!("1234567890123456789"),
        ] {
            assert!(numeric_id(Some(&bad), "id").is_err(), "{bad}");
        }
        assert!(numeric_id(None, "id").is_err());
    }

    #[test]
    fn numeric_json_renders_numbers_where_ids_are_numbers() {
        assert_eq!(numeric_json("42"), json!(42));
        assert_eq!(numeric_json("u-1"), json!("u-1"));
        assert_eq!(numeric_json("007"), json!("007"));
    }

    #[test]
    fn every_dialect_builds_and_namespaces_differ() {
        let mounts = mount(&[]).unwrap();
        assert_eq!(mounts.len(), REGISTRY.len());
        let mut namespaces: Vec<_> = mounts.iter().map(|m| m.namespace.to_string()).collect();
        namespaces.sort();
        namespaces.dedup();
        assert_eq!(namespaces.len(), REGISTRY.len());
    }

    #[test]
    fn mounts_are_validated() {
        let m = |pairs: &[(&str, &str)]| {
            mount(
                &pairs
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect::<Vec<_>>(),
            )
        };
        assert!(m(&[("guild", "/")]).is_ok());
        assert!(m(&[("nope", "/")]).is_err());
        assert!(m(&[("chat", "/"), ("app", "/")]).is_err());
        assert!(m(&[("chat", "x")]).is_err());
    }

    /// Any JSON value: scalars at the leaves (huge and fractional numbers, any string), arrays
    /// and objects nested a few levels, keys that are the fields dialects read.
    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            any::<String>().prop_map(Value::from),
            "[0-9]{0,25}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("(id|chatId|content|[a-z]{1,8})", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The field decoders every dialect parses payloads with: any JSON gives a value that
        /// obeys the rule or a validation error, never a panic.
        #[test]
        fn field_decoders_take_any_json(v in any_json()) {
            if let Ok(o) = object(&v) {
                if let Ok(s) = string_field(o, "content", 16) {
                    proptest::prop_assert!(!s.is_empty() && s.chars().count() <= 16 && !s.contains('\0'));
                }
                for name in ["id", "chatId"] {
                    if let Ok(id) = numeric_id(o.get(name), name) {
                        proptest::prop_assert!(id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit()));
                        proptest::prop_assert_eq!(numeric_json(&id), Value::from(id.parse::<i64>().unwrap()));
                    }
                    if let Ok(id) = positive_id(o.get(name), name) {
                        proptest::prop_assert!(id > 0);
                    }
                }
            }
            for e in [numeric_id(Some(&v), "id").err(), positive_id(Some(&v), "id").err()].into_iter().flatten() {
                proptest::prop_assert_eq!(e.code, switchboard_common::ErrorCode::Validation);
            }
        }
    }
}
