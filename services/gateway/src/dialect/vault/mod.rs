//! The `vault` dialect (contract 003, `/vault`): NextAuth's session cookie or `auth.token`,
//! `vault:<id>` rooms joined with `vault:join` (answered `vault:joined { vaultId, role }`),
//! `vault:leave` that never answers, and `source:created|updated|deleted` relayed to the whole
//! room with the actor and time set by the server. Errors are `error { message, code, details }`.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use switchboard_common::{DomainError, ErrorCode, RoomKey, room::exceeds_chars, time_fmt};

use super::{BoxFuture, Dialect, HandlerFuture, Reply};
use crate::{
    auth::{AuthFailure, Credentials},
    core::{Core, CoreEvent, RoomRole},
    events::EventCx,
    fanout::Emission,
};

const ROOM_KIND: &str = "vault";
/// The roles whose direct members may emit source events.
const PUBLISHERS: [&str; 2] = ["owner", "contributor"];
/// Bounds of a relayed source's text fields.
const MAX_TEXT_CHARS: usize = 2_048;
const DEFAULT_MIME_TYPE: &str = "application/pdf";

pub(super) fn build() -> anyhow::Result<Arc<dyn Dialect>> {
    Ok(Arc::new(Vault))
}

struct Vault;

/// Why an event was refused, in the document's words.
fn refused(code: ErrorCode, message: &str) -> DomainError {
    DomainError::new(code, message)
}

fn invalid_payload() -> DomainError {
    refused(ErrorCode::Validation, "Invalid payload")
}

/// A vault id as decided: lowercase letters and digits, starting with a letter, 8–32 characters.
fn is_vault_id(s: &str) -> bool {
    (8..=32).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `vault:join`'s and `vault:leave`'s payload: a bare string or `{ vaultId }`.
fn vault_of(v: &Value) -> Result<RoomKey, DomainError> {
    let id = match v {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("vaultId").and_then(Value::as_str).unwrap_or(""),
        _ => "",
    };
    if !is_vault_id(id) {
        return Err(refused(ErrorCode::Validation, "Invalid vault ID"));
    }
    Ok(RoomKey::new(ROOM_KIND, id))
}

impl Dialect for Vault {
    fn name(&self) -> &'static str {
        "vault"
    }

    fn default_namespace(&self) -> &'static str {
        "/vault"
    }

    fn room_kinds(&self) -> &'static [&'static str] {
        &[ROOM_KIND]
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            tokens: true,
            session_tokens: true,
            cookie: false,
            // NextAuth names its cookie with the `__Secure-` prefix when served over HTTPS.
            token_cookies: &[
                "next-auth.session-token",
                "__Secure-next-auth.session-token",
            ],
        }
    }

    fn refusal(&self, why: AuthFailure) -> &'static str {
        match why {
            // The contract's rate-limit code: the credentials were fine.
            AuthFailure::TooManyConnections => "RATE_LIMITED",
            _ => "UNAUTHORIZED",
        }
    }

    fn handle(&self, cx: EventCx, event: &str, data: Value) -> Option<HandlerFuture> {
        let handler: HandlerFuture = match event {
            "vault:join" => Box::pin(vault_join(cx, data)),
            "vault:leave" => Box::pin(vault_leave(cx, data)),
            "source:created" => Box::pin(source_event(cx, data, SourceEvent::Created)),
            "source:updated" => Box::pin(source_event(cx, data, SourceEvent::Updated)),
            "source:deleted" => Box::pin(source_event(cx, data, SourceEvent::Deleted)),
            _ => return None,
        };
        Some(handler)
    }

    fn error(&self, event: &str, e: &DomainError, correlation_id: &str) -> Reply {
        // `vault:leave` never answers, whatever its payload.
        if event == "vault:leave" {
            return Reply::default();
        }
        let (code, message) = match e.code {
            ErrorCode::Validation if e.message == "Invalid vault ID" => {
                ("INVALID_VAULT_ID", e.message.as_str())
            }
            ErrorCode::Validation
            | ErrorCode::Conflict
            | ErrorCode::PayloadTooLarge
            | ErrorCode::NotJoined => ("VALIDATION_ERROR", "Invalid payload"),
            ErrorCode::Forbidden | ErrorCode::NotFound
                if e.message == "Insufficient permissions" =>
            {
                ("FORBIDDEN", "Insufficient permissions")
            }
            ErrorCode::Forbidden | ErrorCode::NotFound => ("FORBIDDEN", "Access denied to vault"),
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => ("UNAUTHORIZED", "UNAUTHORIZED"),
            ErrorCode::RateLimited => ("RATE_LIMITED", e.message.as_str()),
            ErrorCode::EditWindowExpired | ErrorCode::Unavailable | ErrorCode::Internal => {
                ("INTERNAL", "Internal error")
            }
        };
        Reply::emit(
            "error",
            json!({ "message": message, "code": code, "details": { "correlationId": correlation_id } }),
        )
    }

    fn render<'a>(
        &'a self,
        _core: &'a Core,
        _namespace: &'a str,
        _event: &'a CoreEvent<'a>,
    ) -> BoxFuture<'a, Vec<Emission>> {
        // No core event has a shape in this contract: sources are the application's, relayed as
        // they are published (the integration API's room events, or `source:*` from owners).
        Box::pin(async { vec![] })
    }
}

async fn vault_join(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    let vault = vault_of(&v)?;
    cx.join(&vault)
        .await
        .map_err(access_denied_unless_internal)?;
    let role = cx
        .core()
        .role(&cx.user, &vault)
        .await
        .map_err(access_denied_unless_internal)?
        .map(|r| r.name)
        .unwrap_or_default();
    Ok(Reply::emit(
        "vault:joined",
        json!({ "vaultId": vault.id, "role": role }),
    ))
}

/// Not allowed, and a vault that does not exist, are the same refusal.
fn access_denied_unless_internal(e: DomainError) -> DomainError {
    match e.code {
        ErrorCode::Forbidden | ErrorCode::NotFound => {
            refused(ErrorCode::Forbidden, "Access denied to vault")
        }
        _ => e,
    }
}

async fn vault_leave(cx: EventCx, v: Value) -> Result<Reply, DomainError> {
    if let Ok(vault) = vault_of(&v) {
        cx.leave(&vault).await;
    }
    Ok(Reply::default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceEvent {
    Created,
    Updated,
    Deleted,
}

impl SourceEvent {
    fn name(self) -> &'static str {
        match self {
            SourceEvent::Created => "source:created",
            SourceEvent::Updated => "source:updated",
            SourceEvent::Deleted => "source:deleted",
        }
    }
}

/// A required non-empty string of at most [`MAX_TEXT_CHARS`].
fn text<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a str, DomainError> {
    match o.get(name) {
        Some(Value::String(s)) if !s.is_empty() && !exceeds_chars(s, MAX_TEXT_CHARS) => Ok(s),
        _ => Err(invalid_payload()),
    }
}

/// An optional string of at most [`MAX_TEXT_CHARS`].
fn optional_text<'a>(
    o: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, DomainError> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !exceeds_chars(s, MAX_TEXT_CHARS) => Ok(Some(s)),
        _ => Err(invalid_payload()),
    }
}

/// The vault a source event is about: `vaultId` at the top level, or in `source`.
fn event_vault(o: &Map<String, Value>) -> Result<RoomKey, DomainError> {
    let id = o
        .get("vaultId")
        .or_else(|| o.get("source").and_then(|s| s.get("vaultId")))
        .and_then(Value::as_str)
        .filter(|id| is_vault_id(id))
        .ok_or_else(invalid_payload)?;
    Ok(RoomKey::new(ROOM_KIND, id))
}

/// The relayed `source` object: the fields the document lists, validated; the time the
/// client gave (`createdAt`/`updatedAt`) or now.
fn source_json(
    src: &Map<String, Value>,
    vault: &RoomKey,
    kind: SourceEvent,
    now: &str,
) -> Result<Value, DomainError> {
    let mut out = Map::new();
    out.insert("id".into(), json!(text(src, "id")?));
    out.insert("title".into(), json!(text(src, "title")?));
    out.insert("fileUrl".into(), json!(text(src, "fileUrl")?));
    if let Some(key) = optional_text(src, "fileKey")? {
        out.insert("fileKey".into(), json!(key));
    }
    match src.get("fileSize") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            out.insert("fileSize".into(), json!(n));
        }
        Some(_) => return Err(invalid_payload()),
    }
    let mime = optional_text(src, "mimeType")?.filter(|m| !m.is_empty());
    out.insert("mimeType".into(), json!(mime.unwrap_or(DEFAULT_MIME_TYPE)));
    out.insert("vaultId".into(), json!(vault.id));
    let time_field = if kind == SourceEvent::Created {
        "createdAt"
    } else {
        "updatedAt"
    };
    let at = optional_text(src, time_field)?
        .filter(|t| !t.is_empty())
        .unwrap_or(now);
    out.insert(time_field.into(), json!(at));
    Ok(Value::Object(out))
}

/// "firstName lastName" where the user has both, else the username (else the id).
async fn user_name(core: &Core, user_id: &str) -> String {
    match core.user(user_id).await {
        Ok(u) => match (u.first_name.as_deref(), u.last_name.as_deref()) {
            (Some(f), Some(l)) if !f.is_empty() && !l.is_empty() => format!("{f} {l}"),
            _ => u.username,
        },
        Err(_) => user_id.to_string(),
    }
}

/// A source event from a connected owner or contributor, relayed to the whole vault room (the
/// emitter's sockets included) with the actor and time from the server.
async fn source_event(cx: EventCx, v: Value, kind: SourceEvent) -> Result<Reply, DomainError> {
    let o = v.as_object().ok_or_else(invalid_payload)?;
    let vault = event_vault(o)?;
    let now = time_fmt::iso_ms(time_fmt::now_ms());
    let mut data = match kind {
        SourceEvent::Deleted => json!({ "sourceId": text(o, "sourceId")?, "vaultId": vault.id }),
        _ => {
            let src = o
                .get("source")
                .and_then(Value::as_object)
                .ok_or_else(invalid_payload)?;
            json!({ "source": source_json(src, &vault, kind, &now)? })
        }
    };
    let role = match cx.core().role(&cx.user, &vault).await {
        Ok(Some(role)) => role,
        Ok(None)
        | Err(DomainError {
            code: ErrorCode::NotFound,
            ..
        }) => {
            return Err(refused(ErrorCode::Forbidden, "Access denied to vault"));
        }
        Err(e) => return Err(e),
    };
    if !may_publish(&role) {
        return Err(refused(ErrorCode::Forbidden, "Insufficient permissions"));
    }
    data["actor"] = json!({
        "userId": cx.user.as_ref(),
        "userName": user_name(cx.core(), &cx.user).await,
        "role": role.name,
    });
    data["timestamp"] = json!(now);
    let e = Emission::new(&cx.namespace, vec![vault.socket_room()], kind.name(), data);
    if !cx.core().fanout.emit(e).await {
        return Err(DomainError::of(ErrorCode::Unavailable));
    }
    Ok(Reply::default())
}

/// Only a direct owner or contributor may emit source events; every other role (a viewer, a
/// role inherited from a parent) is refused as a viewer is.
fn may_publish(role: &RoomRole) -> bool {
    role.direct && PUBLISHERS.contains(&role.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_ids_as_decided() {
        for ok in ["abcdefgh", "a1234567", &format!("a{}", "b".repeat(31))] {
            assert!(is_vault_id(ok), "{ok}");
        }
        for bad in [
            "abcdefg",
            "1abcdefg",
            "Abcdefgh",
            "abc-defgh",
            "",
            &"a".repeat(33),
            "abcdéfgh",
        ] {
            assert!(!is_vault_id(bad), "{bad}");
        }
        assert!(vault_of(&json!("abcdefgh")).is_ok());
        assert!(vault_of(&json!({ "vaultId": "abcdefgh" })).is_ok());
        assert!(vault_of(&json!({ "vaultId": 5 })).is_err());
        assert!(vault_of(&json!(null)).is_err());
    }

    #[test]
    fn only_direct_owners_and_contributors_publish() {
        let role = |name: &str, direct| RoomRole {
            name: name.into(),
            direct,
        };
        assert!(may_publish(&role("owner", true)));
        assert!(may_publish(&role("contributor", true)));
        assert!(!may_publish(&role("owner", false)));
        assert!(!may_publish(&role("viewer", true)));
        assert!(!may_publish(&role("manager", true)));
    }

    #[test]
    fn sources_are_validated_and_completed() {
        let vault = RoomKey::new(ROOM_KIND, "abcdefgh");
        let src = json!({ "id": "s1", "title": "T", "fileUrl": "https://x/y.pdf", "fileSize": 3 });
        let out = source_json(
            src.as_object().unwrap(),
            &vault,
            SourceEvent::Created,
            "NOW",
        )
        .unwrap();
        assert_eq!(out["mimeType"], DEFAULT_MIME_TYPE);
        assert_eq!(out["createdAt"], "NOW");
        assert_eq!(out["vaultId"], "abcdefgh");
        let bad = json!({ "id": "s1", "title": "T", "fileUrl": "u", "fileSize": -1 });
        assert!(
            source_json(
                bad.as_object().unwrap(),
                &vault,
                SourceEvent::Created,
                "NOW"
            )
            .is_err()
        );
    }
}
