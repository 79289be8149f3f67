//! Handshake and HTTP authentication, shared by every dialect.
//!
//! Three credentials name a user:
//! - a JWT (`sub` = user id, `exp` required and enforced, exactly one configured algorithm, so
//!   `alg: none` and algorithm confusion are refused);
//! - an opaque session token: the id of a session stored in Redis under `sess:<id>` in
//!   express-session/connect-redis's JSON form, so an existing Express app's sessions work;
//! - the express-session signed cookie (`connect.sid=s%3A<id>.<HMAC-SHA256, base64, no '='>`,
//!   name configurable), accepted only from an allowed `Origin` (a browser always sends one on a
//!   cross-site WebSocket; a request without `Origin` is not a browser's cross-site request).

use std::time::Duration;

use base64::Engine as _;
use fred::prelude::{Client, Expiration, KeysInterface};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_common::time_fmt;

use crate::config::{Config, JwtAlgorithm};

/// Who a socket or request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// The session the credential belongs to, when it is a session token or cookie.
    pub session_id: Option<String>,
}

/// Why authentication failed (logged; clients see only the contract's code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    Expired,
    OriginNotAllowed,
    /// The session store could not be reached.
    Unavailable,
    /// Authenticated, but the user already holds as many sockets as allowed
    /// (`SWITCHBOARD_MAX_SOCKETS_PER_USER`).
    TooManyConnections,
}

pub struct Authenticator {
    algorithm: Algorithm,
    /// The JWT policy beyond the signature: issuer, audience, longest lifetime.
    issuer: Option<String>,
    audience: Option<String>,
    max_age: Option<Duration>,
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    session_secrets: Vec<String>,
    cookie_name: String,
    session_prefix: String,
    session_ttl: Duration,
    allowed_origins: Vec<String>,
    redis: Client,
    /// Prefix of the revocation keys (`<prefix>revoked:<userId>` = unix seconds: credentials
    /// of the user issued at or before it are refused).
    revocation_prefix: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: serde_json::Value,
    exp: i64,
    iat: Option<i64>,
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// A freshly created session.
pub struct NewSession {
    pub token: String,
    pub cookie: String,
    pub expires_at_ms: i64,
}

impl Authenticator {
    pub fn new(config: &Config, redis: Client) -> anyhow::Result<Self> {
        let (algorithm, decoding, encoding) = match config.jwt_algorithm {
            JwtAlgorithm::Hs256 => (
                Algorithm::HS256,
                DecodingKey::from_secret(config.jwt_secret.as_bytes()),
                Some(EncodingKey::from_secret(config.jwt_secret.as_bytes())),
            ),
            JwtAlgorithm::Rs256 => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(
                    config
                        .jwt_public_key_pem
                        .as_deref()
                        .unwrap_or_default()
                        .as_bytes(),
                )?,
                config
                    .jwt_private_key_pem
                    .as_deref()
                    .map(|k| EncodingKey::from_rsa_pem(k.as_bytes()))
                    .transpose()?,
            ),
            JwtAlgorithm::Es256 => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(
                    config
                        .jwt_public_key_pem
                        .as_deref()
                        .unwrap_or_default()
                        .as_bytes(),
                )?,
                config
                    .jwt_private_key_pem
                    .as_deref()
                    .map(|k| EncodingKey::from_ec_pem(k.as_bytes()))
                    .transpose()?,
            ),
        };
        Ok(Self {
            algorithm,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            max_age: config.jwt_max_age,
            decoding,
            encoding,
            session_secrets: config.session_secrets.clone(),
            cookie_name: config.session_cookie_name.clone(),
            session_prefix: config.session_prefix.clone(),
            session_ttl: config.session_ttl,
            allowed_origins: config.allowed_origins.clone(),
            redis,
            revocation_prefix: format!("{}revoked:", config.redis_prefix),
        })
    }

    /// A token from `auth.token`, `?token=` or `Authorization: Bearer`: a JWT when it looks like
    /// one (three dot-separated parts), else a session token.
    pub async fn verify_token(&self, token: &str) -> Result<Identity, AuthFailure> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthFailure::Missing);
        }
        if token.len() > 8192 {
            return Err(AuthFailure::Invalid);
        }
        if looks_like_jwt(token) {
            let (identity, issued_at) = self.decode_jwt(token)?;
            self.ensure_not_revoked(&identity.user_id, issued_at)
                .await?;
            return Ok(identity);
        }
        self.session_user(token).await
    }

    /// Revokes every credential of `user_id` issued up to now (JWTs by `iat`, sessions by their
    /// creation), on every node: they share the key. Answers the revocation time (unix seconds).
    pub async fn revoke_user(&self, user_id: &str) -> anyhow::Result<i64> {
        let now = time_fmt::now_ms() / 1000;
        // Kept as long as a revoked token could still be valid: the longest token lifetime
        // when there is one, else for good (one small key per revoked user).
        let expiry = self
            .max_age
            .map(|max| Expiration::EX(max.as_secs() as i64 + 60));
        let _: () = self
            .redis
            .set(
                format!("{}{user_id}", self.revocation_prefix),
                now,
                expiry,
                None,
                false,
            )
            .await?;
        Ok(now)
    }

    /// Refuses a credential of `user_id` issued at `issued_at` (unix seconds; None: unknown)
    /// when the user's credentials were revoked at or after it.
    async fn ensure_not_revoked(
        &self,
        user_id: &str,
        issued_at: Option<i64>,
    ) -> Result<(), AuthFailure> {
        let revoked: Option<i64> = self
            .redis
            .get(format!("{}{user_id}", self.revocation_prefix))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "revocation list unreachable");
                AuthFailure::Unavailable
            })?;
        match (revoked, issued_at) {
            (Some(before), Some(at)) if at > before => Ok(()),
            (Some(_), _) => Err(AuthFailure::Invalid),
            (None, _) => Ok(()),
        }
    }

    pub fn verify_jwt(&self, token: &str) -> Result<Identity, AuthFailure> {
        self.decode_jwt(token).map(|(identity, _)| identity)
    }

    /// A verified JWT's identity and `iat`.
    fn decode_jwt(&self, token: &str) -> Result<(Identity, Option<i64>), AuthFailure> {
        let mut validation = Validation::new(self.algorithm);
        let mut required = vec!["exp", "sub"];
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        match &self.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // An `aud` the gateway was not told to expect is not a reason to refuse.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if self.max_age.is_some() {
            required.push("iat");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                _ => AuthFailure::Invalid,
            },
        )?;
        // A token may not live longer than the configured maximum, nor claim to be issued in
        // the future (so a long-lived token cannot be made to pass by its `iat`).
        if let Some(max_age) = self.max_age {
            let now = time_fmt::now_ms() / 1000;
            let iat = data.claims.iat.ok_or(AuthFailure::Invalid)?;
            if iat > now || data.claims.exp.saturating_sub(iat) > max_age.as_secs() as i64 {
                return Err(AuthFailure::Invalid);
            }
        }
        let user_id = match data.claims.sub {
            serde_json::Value::String(s)
                if switchboard_common::room::check_id("sub", &s).is_ok() =>
            {
                s
            }
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err(AuthFailure::Invalid),
        };
        Ok((
            Identity {
                user_id,
                session_id: None,
            },
            data.claims.iat,
        ))
    }

    /// Signs a JWT for `user_id` (integration API `POST /v1/tokens`).
    pub fn mint_jwt(&self, user_id: &str, ttl: Duration) -> anyhow::Result<String> {
        let key = self
            .encoding
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no JWT signing key configured"))?;
        let now = time_fmt::now_ms() / 1000;
        let ttl = match self.max_age {
            Some(max) => ttl.min(max),
            None => ttl,
        };
        let claims = MintClaims {
            sub: user_id,
            iat: now,
            exp: now + ttl.as_secs() as i64,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(self.algorithm),
            &claims,
            key,
        )?)
    }

    fn session_key(&self, sid: &str) -> String {
        format!("{}{}", self.session_prefix, sid)
    }

    /// The user of a stored session.
    pub async fn session_user(&self, sid: &str) -> Result<Identity, AuthFailure> {
        if sid.is_empty() || sid.len() > 256 {
            return Err(AuthFailure::Invalid);
        }
        let raw: Option<String> = self.redis.get(self.session_key(sid)).await.map_err(|e| {
            tracing::warn!(error = %e, "session store unreachable");
            AuthFailure::Unavailable
        })?;
        let raw = raw.ok_or(AuthFailure::Invalid)?;
        let value: serde_json::Value =
            serde_json::from_str(&raw).map_err(|_| AuthFailure::Invalid)?;
        if let Some(expires) = value.pointer("/cookie/expires").and_then(|v| v.as_str())
            && time_fmt::parse_iso_ms(expires).is_some_and(|t| t <= time_fmt::now_ms())
        {
            return Err(AuthFailure::Expired);
        }
        let user = ["/userId", "/user_id", "/user/id", "/passport/user"]
            .iter()
            .find_map(|p| value.pointer(p))
            .and_then(|v| match v {
                serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .ok_or(AuthFailure::Invalid)?;
        // express-session keeps when the cookie expires and how long it lived: its creation.
        let created_at = value
            .pointer("/cookie/expires")
            .and_then(|v| v.as_str())
            .and_then(time_fmt::parse_iso_ms)
            .zip(
                value
                    .pointer("/cookie/originalMaxAge")
                    .and_then(|v| v.as_i64()),
            )
            .map(|(expires, lived)| (expires - lived) / 1000);
        self.ensure_not_revoked(&user, created_at).await?;
        Ok(Identity {
            user_id: user,
            session_id: Some(sid.to_string()),
        })
    }

    /// Creates a session for `user_id` in the store, in express-session's JSON form.
    pub async fn create_session(
        &self,
        user_id: &str,
        ttl: Option<Duration>,
    ) -> anyhow::Result<NewSession> {
        let ttl = ttl.unwrap_or(self.session_ttl);
        let sid = random_session_id();
        let expires_at_ms = time_fmt::now_ms() + ttl.as_millis() as i64;
        let body = serde_json::json!({
            "cookie": {
                "originalMaxAge": ttl.as_millis() as u64,
                "expires": time_fmt::iso_ms(expires_at_ms),
                "httpOnly": true,
                "path": "/",
            },
            "userId": user_id,
        });
        let _: () = self
            .redis
            .set(
                self.session_key(&sid),
                body.to_string(),
                Some(Expiration::PX(ttl.as_millis().max(1) as i64)),
                None,
                false,
            )
            .await?;
        let cookie = format!("{}={}", self.cookie_name, self.signed_cookie_value(&sid));
        Ok(NewSession {
            token: sid,
            cookie,
            expires_at_ms,
        })
    }

    /// Deletes a session; answers whether it existed.
    pub async fn revoke_session(&self, sid: &str) -> anyhow::Result<bool> {
        let n: i64 = self.redis.del(self.session_key(sid)).await?;
        Ok(n > 0)
    }

    /// `s%3A<sid>.<sig>`: express-session's cookie value, URL-encoded as the `cookie` package does.
    pub fn signed_cookie_value(&self, sid: &str) -> String {
        let signed = format!("s:{sid}.{}", sign(&self.session_secrets[0], sid));
        utf8_percent_encode(&signed, COOKIE_ENCODE).to_string()
    }

    /// The session id of a valid signed cookie value (`s:<sid>.<sig>`, URL-encoded or not).
    pub fn unsign_cookie(&self, value: &str) -> Option<String> {
        let decoded = percent_decode_str(value).decode_utf8().ok()?;
        let rest = decoded.strip_prefix("s:")?;
        let (sid, sig) = rest.rsplit_once('.')?;
        let sig = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(sig.trim_end_matches('='))
            .ok()?;
        self.session_secrets
            .iter()
            .any(|secret| {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                    .expect("HMAC takes any key length");
                mac.update(sid.as_bytes());
                mac.verify_slice(&sig).is_ok()
            })
            .then(|| sid.to_string())
    }

    /// Authenticates from a cookie that carries the opaque session token itself (NextAuth's
    /// `next-auth.session-token`, under any of `names`), behind the same Origin allow-list.
    pub async fn verify_token_cookie(
        &self,
        cookie_header: Option<&str>,
        origin: Option<&str>,
        names: &[&str],
    ) -> Result<Identity, AuthFailure> {
        let value = cookie_header
            .and_then(|h| names.iter().find_map(|n| find_cookie(h, n)))
            .ok_or(AuthFailure::Missing)?;
        self.check_origin(origin)?;
        let token = percent_decode_str(value).decode_utf8_lossy();
        if token.is_empty() || token.len() > 8192 {
            return Err(AuthFailure::Invalid);
        }
        self.session_user(&token).await
    }

    fn check_origin(&self, origin: Option<&str>) -> Result<(), AuthFailure> {
        match origin {
            Some(origin) if !self.allowed_origins.iter().any(|o| o == origin) => {
                Err(AuthFailure::OriginNotAllowed)
            }
            _ => Ok(()),
        }
    }

    /// Authenticates from a `Cookie` header, checking `Origin` against the allow-list.
    pub async fn verify_cookie(
        &self,
        cookie_header: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Identity, AuthFailure> {
        let value = cookie_header
            .and_then(|h| find_cookie(h, &self.cookie_name))
            .ok_or(AuthFailure::Missing)?;
        self.check_origin(origin)?;
        let sid = self.unsign_cookie(value).ok_or(AuthFailure::Invalid)?;
        self.session_user(&sid).await
    }

    /// The handshake rule shared by every dialect, limited to the credentials its contract
    /// accepts: `auth.token`, then `?token=`, then the cookie.
    pub async fn authenticate(
        &self,
        accepted: Credentials,
        auth_token: Option<&str>,
        query_token: Option<&str>,
        cookie_header: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Identity, AuthFailure> {
        if accepted.tokens {
            let token = auth_token
                .filter(|t| !t.is_empty())
                .or(query_token.filter(|t| !t.is_empty()));
            if let Some(t) = token {
                if !accepted.session_tokens && !looks_like_jwt(t) {
                    return Err(AuthFailure::Invalid);
                }
                return self.verify_token(t).await;
            }
        }
        if !accepted.token_cookies.is_empty() {
            match self
                .verify_token_cookie(cookie_header, origin, accepted.token_cookies)
                .await
            {
                Err(AuthFailure::Missing) => {}
                other => return other,
            }
        }
        if accepted.cookie {
            return self.verify_cookie(cookie_header, origin).await;
        }
        Err(AuthFailure::Missing)
    }
}

/// Which handshake credentials a contract accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// A token in `auth.token` or `?token=`: a JWT…
    pub tokens: bool,
    /// …or also an opaque session token.
    pub session_tokens: bool,
    /// The signed session cookie (behind the Origin allow-list).
    pub cookie: bool,
    /// Cookies that carry the opaque session token itself (behind the Origin allow-list).
    pub token_cookies: &'static [&'static str],
}

/// Three dot-separated parts: a JWT rather than an opaque session token.
fn looks_like_jwt(token: &str) -> bool {
    token.trim().split('.').count() == 3
}

/// What `encodeURIComponent` leaves alone, as the `cookie` package encodes values.
const COOKIE_ENCODE: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

fn sign(secret: &str, sid: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(sid.as_bytes());
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
}

fn find_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// 32 random bytes, URL-safe base64: as unguessable as express-session's uid-safe ids.
fn random_session_id() -> String {
    let bytes: [u8; 24] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Constant-time equality for secrets such as the admin token.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    // Digests first: their length is fixed, so the time taken tells nothing about the secret's
    // length either.
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn express_session_signature_matches_cookie_signature() {
        // cookie-signature's own test vector: sign('hello', 'tobiiscool').
        assert_eq!(
            sign("tobiiscool", "hello"),
            "DGDUkGlIkCzPz+C0B064FNgHdEjox7ch8tOBGslZ5QI"
        );
    }

    #[test]
    fn finds_cookie_among_others() {
        assert_eq!(
            find_cookie("a=1; connect.sid=s%3Ax.y; b=2", "connect.sid"),
            Some("s%3Ax.y")
        );
        assert_eq!(find_cookie("a=1", "connect.sid"), None);
    }

    fn authenticator(secrets: &[&str]) -> Authenticator {
        let mut config = Config::development();
        config.session_secrets = secrets.iter().map(|s| s.to_string()).collect();
        let redis = fred::prelude::Builder::default_centralized()
            .build()
            .expect("client");
        Authenticator::new(&config, redis).expect("authenticator")
    }

    #[test]
    fn issuer_audience_and_lifetime_when_configured() {
        let mut config = Config::development();
        config.jwt_issuer = Some("https://issuer.example".into());
        config.jwt_audience = Some("switchboard".into());
        config.jwt_max_age = Some(Duration::from_secs(3600));
        let redis = fred::prelude::Builder::default_centralized()
            .build()
            .expect("client");
        let a = Authenticator::new(&config, redis).expect("authenticator");
        let secret = config.jwt_secret.clone();
        let now = time_fmt::now_ms() / 1000;
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let token = |claims: serde_json::Value| encode(hs256, claims, secret.as_bytes());
        let good = serde_json::json!({"sub": "u1", "iat": now, "exp": now + 60,
            "iss": "https://issuer.example", "aud": "switchboard"});
        assert_eq!(a.verify_jwt(&token(good.clone())).unwrap().user_id, "u1");
        // Our own tokens carry what we require, within the longest lifetime.
        let minted = a.mint_jwt("u2", Duration::from_secs(86_400)).unwrap();
        assert_eq!(a.verify_jwt(&minted).unwrap().user_id, "u2");
        for (field, value) in [
            ("iss", serde_json::json!("https://other.example")),
            ("aud", serde_json::json!("other-app")),
            ("exp", serde_json::json!(now + 7200)),
            ("iat", serde_json::json!(now + 30)),
        ] {
            let mut claims = good.clone();
            claims[field] = value;
            assert_eq!(
                a.verify_jwt(&token(claims)),
                Err(AuthFailure::Invalid),
                "{field}"
            );
        }
        for missing in ["iss", "aud", "iat"] {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(missing);
            assert_eq!(
                a.verify_jwt(&token(claims)),
                Err(AuthFailure::Invalid),
                "{missing}"
            );
        }
    }

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(secrets_equal("admin-token", "admin-token"));
        assert!(!secrets_equal("admin-token", "admin-tokeN"));
        assert!(!secrets_equal("admin-token", "admin"));
        assert!(!secrets_equal("", "x"));
    }

    fn encode(header: &str, claims: serde_json::Value, key: &[u8]) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let unsigned = format!(
            "{}.{}",
            b64(header.as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(unsigned.as_bytes());
        format!("{unsigned}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn jwt_round_trip_and_refusals() {
        let a = authenticator(&["s1"]);
        let token = a.mint_jwt("u1", Duration::from_secs(60)).unwrap();
        assert_eq!(a.verify_jwt(&token).unwrap().user_id, "u1");

        let secret = Config::development().jwt_secret;
        let now = time_fmt::now_ms() / 1000;
        let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
        let expired = encode(
            hs256,
            serde_json::json!({"sub": "u1", "exp": now - 10}),
            secret.as_bytes(),
        );
        assert_eq!(a.verify_jwt(&expired), Err(AuthFailure::Expired));
        let no_exp = encode(hs256, serde_json::json!({"sub": "u1"}), secret.as_bytes());
        assert_eq!(a.verify_jwt(&no_exp), Err(AuthFailure::Invalid));
        let forged = encode(
            hs256,
            serde_json::json!({"sub": "u1", "exp": now + 60}),
            b"another-secret",
        );
        assert_eq!(a.verify_jwt(&forged), Err(AuthFailure::Invalid));

        // Not yet valid (`nbf` in the future) is refused; an `aud` nobody asked for is not.
        let not_yet = encode(
            hs256,
            serde_json::json!({"sub": "u1", "exp": now + 60, "nbf": now + 30}),
            secret.as_bytes(),
        );
        assert_eq!(a.verify_jwt(&not_yet), Err(AuthFailure::Invalid));
        let with_aud = encode(
            hs256,
            serde_json::json!({"sub": "u1", "exp": now + 60, "aud": "some-app"}),
            secret.as_bytes(),
        );
        assert_eq!(a.verify_jwt(&with_aud).unwrap().user_id, "u1");
        let nul = encode(
            hs256,
            serde_json::json!({"sub": "u\u{0}", "exp": now + 60}),
            secret.as_bytes(),
        );
        assert_eq!(a.verify_jwt(&nul), Err(AuthFailure::Invalid));

        // `alg: none` with an empty signature, and a different HMAC algorithm, are refused.
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.as_bytes());
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none"}"#),
            b64(&serde_json::json!({"sub": "u1", "exp": now + 60}).to_string())
        );
        assert_eq!(a.verify_jwt(&none), Err(AuthFailure::Invalid));
        let hs384 = encode(
            r#"{"alg":"HS384"}"#,
            serde_json::json!({"sub": "u1", "exp": now + 60}),
            secret.as_bytes(),
        );
        assert_eq!(a.verify_jwt(&hs384), Err(AuthFailure::Invalid));
    }

    /// Asymmetric keys: tokens signed with the private key pass; an HS256 token whose "secret"
    /// is the public key (algorithm confusion) and a token of the other algorithm do not.
    #[test]
    fn asymmetric_algorithms_refuse_confusion() {
        for (alg, jwt_alg, public, private) in [
            (
                JwtAlgorithm::Es256,
                "ES256",
                include_str!("../tests/fixtures/es256-public.pem"),
                include_str!("../tests/fixtures/es256-private.pem"),
            ),
            (
                JwtAlgorithm::Rs256,
                "RS256",
                include_str!("../tests/fixtures/rs256-public.pem"),
                include_str!("../tests/fixtures/rs256-private.pem"),
            ),
        ] {
            let mut config = Config::development();
            config.jwt_algorithm = alg;
            config.jwt_public_key_pem = Some(public.to_string());
            config.jwt_private_key_pem = Some(private.to_string());
            let redis = fred::prelude::Builder::default_centralized()
                .build()
                .expect("client");
            let a = Authenticator::new(&config, redis).expect("authenticator");

            let token = a.mint_jwt("u1", Duration::from_secs(60)).unwrap();
            assert!(token.split('.').next().is_some_and(|h| {
                let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .unwrap();
                String::from_utf8_lossy(&h).contains(jwt_alg)
            }));
            assert_eq!(a.verify_jwt(&token).unwrap().user_id, "u1", "{jwt_alg}");

            let now = time_fmt::now_ms() / 1000;
            let claims = serde_json::json!({"sub": "u1", "exp": now + 60});
            let confused = encode(r#"{"alg":"HS256"}"#, claims.clone(), public.as_bytes());
            assert_eq!(
                a.verify_jwt(&confused),
                Err(AuthFailure::Invalid),
                "{jwt_alg}"
            );
        }
    }

    #[test]
    fn signed_cookie_round_trip_rotation_and_tampering() {
        let old = authenticator(&["old"]);
        let rotated = authenticator(&["new", "old"]);
        let value = old.signed_cookie_value("abc123");
        assert!(value.starts_with("s%3Aabc123."));
        assert_eq!(rotated.unsign_cookie(&value).as_deref(), Some("abc123"));
        assert_eq!(authenticator(&["other"]).unsign_cookie(&value), None);
        let tampered = value.replace("abc123", "abc124");
        assert_eq!(old.unsign_cookie(&tampered), None);
        assert_eq!(old.unsign_cookie("abc123"), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }
}
