//! Gateway configuration: defaults, then `SWITCHBOARD_*` environment variables, validated at
//! start-up.

use std::time::Duration;

use anyhow::Context;
use switchboard_common::config::{ensure, env_opt, env_or};

/// The development admin token, used only in development mode when `SWITCHBOARD_ADMIN_TOKEN`
/// is unset (printed loudly).
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
const DEV_JWT_SECRET: &str = "switchboard-dev-jwt-secret";
const DEV_SESSION_SECRET: &str = "switchboard-dev-session-secret";

/// The shortest key or token accepted outside development mode: 32 bytes, HS256's own key
/// size (RFC 7518 §3.2); a shorter shared secret can be brute-forced from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Which algorithm verifies JWTs. Exactly one is accepted, so a token cannot pick its own
/// (no `alg: none`, no HS256-with-the-public-key confusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    Hs256,
    Rs256,
    Es256,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name in logs, presence entries and metrics.
    pub node_id: String,
    pub membership_url: String,
    pub messages_url: String,
    pub presence_url: String,
    pub redis_url: String,
    /// Prefix of every Redis key and channel this gateway owns (not of session keys).
    pub redis_prefix: String,
    pub admin_token: String,
    /// `SWITCHBOARD_DEV_MODE`: the secrets below may be left unset (then well-known development
    /// values, which anyone can use to mint a token or cookie: never in production) or short.
    pub dev_mode: bool,
    /// Development mode and no `SWITCHBOARD_ADMIN_TOKEN`/`JWT_SECRET`/`SESSION_SECRET`: the
    /// names of the ones that fell back to their development values (warned about at start).
    pub dev_defaults: Vec<&'static str>,
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 shared key.
    pub jwt_secret: String,
    /// RS256/ES256: PEM public key (verification) and optional PEM private key (for `POST /v1/tokens`).
    pub jwt_public_key_pem: Option<String>,
    pub jwt_private_key_pem: Option<String>,
    /// When set, JWTs must carry this `iss` (and the gateway's own carry it).
    pub jwt_issuer: Option<String>,
    /// When set, JWTs must carry this `aud`; when unset, an `aud` is not checked.
    pub jwt_audience: Option<String>,
    /// When set, JWTs must carry `iat` and live at most this long (`exp - iat`).
    pub jwt_max_age: Option<Duration>,
    /// Secrets of the express-session signed cookie; the first signs, every one verifies (rotation).
    pub session_secrets: Vec<String>,
    pub session_cookie_name: String,
    /// Redis key prefix of sessions; `sess:` is connect-redis's default, so an Express app's
    /// sessions can be shared.
    pub session_prefix: String,
    pub session_ttl: Duration,
    /// Origins allowed to authenticate with a cookie. Empty: cookie auth only without an Origin.
    pub allowed_origins: Vec<String>,
    pub presence_refresh: Duration,
    pub outbox_redeliver_after: Duration,
    pub outbox_sweep_interval: Duration,
    /// After this node reconnects to Redis, deliveries are not confirmed for this long (other
    /// nodes may still be re-subscribing); the outbox broadcasts them again afterwards.
    pub redis_recovery_window: Duration,
    /// Connection state recovery: a client that reconnects within this long, to any node, gets
    /// its session back (id, rooms, the stored events it missed); 0 turns recovery off
    /// (`crate::recovery`).
    pub recovery_window: Duration,
    /// Entries the delivery log (the Redis stream every stored event crosses) keeps, about:
    /// what a reconnecting client can be replayed is bounded by this too (`crate::delivery_log`).
    pub delivery_log_entries: u64,
    /// Which dialect serves which namespace (`SWITCHBOARD_DIALECTS=name=/ns,…`), checked when
    /// the dialects are built; empty: every dialect on its default namespace. Each dialect
    /// reads its own settings (`crate::dialect`).
    pub dialects: Vec<(String, String)>,
    pub max_rooms_per_socket: usize,
    /// Hard cap of one Engine.IO packet; dialects enforce their own, smaller, limits below it.
    pub max_payload_bytes: u64,
    /// WebSocket read buffer per connection, and the most one read takes from the socket: every
    /// idle connection holds it (1 KiB: a chat event fits in one read; a larger frame grows it,
    /// and it stays grown).
    pub ws_read_buffer_bytes: usize,
    /// Where uploaded files are kept: a local folder (the default, `.local/files`), or an
    /// S3-compatible bucket (`s3://bucket`, with `SWITCHBOARD_FILES_S3_ENDPOINT` and the
    /// standard `AWS_*` credentials) (`crate::files`).
    pub files_url: String,
    pub files_s3_endpoint: Option<String>,
    /// A request head must be complete this long after it started (slowloris).
    pub request_head_timeout: Duration,
    /// The largest request head (request line and headers) accepted.
    pub max_request_head_bytes: usize,
    /// Open TCP connections from one IP address to one node; 0: no cap. Behind a proxy that
    /// hides client addresses, every client shares the proxy's: raise it or set 0 there.
    pub max_connections_per_address: usize,
    /// Authenticated sockets of one user in one namespace, across the cluster; 0: no cap.
    pub max_sockets_per_user: u32,
    /// Each socket's event budget: a token bucket refilled at this rate, holding at most
    /// `socket_event_burst`; an event finding it empty gets the contract's rate-limit error.
    pub socket_events_per_second: f64,
    pub socket_event_burst: f64,
    /// After this many refused events in a row the socket is disconnected.
    pub socket_event_overrun: u32,
    /// How long shutdown waits after telling clients to reconnect elsewhere.
    pub drain_grace: Duration,
    pub grpc_timeout: Duration,
    /// At most this many batches of sends out to the messages service (1 to 64); sends
    /// arriving while all are out leave together in the next one (`crate::send_forwarder`).
    /// With one, a node's sends are stored in the order it forwards them
    /// (`docs/guarantees.md`, promise 4).
    pub sends_in_flight: usize,
    /// At most one batch of sends per this interval while sends keep coming (a send after a
    /// quiet spell goes at once): under load, each call and each commit carries more sends
    /// (`crate::send_forwarder`); 0 = no pacing.
    pub send_linger: Duration,
    /// The Redis adapter starts at most one publish per this long while broadcasts keep coming
    /// (one after a quiet spell goes at once): under load, each publish carries several
    /// broadcasts (`crate::pubsub`); 0 = one publish at a time, no pacing.
    pub publish_linger: Duration,
    /// How long an allowed authorization decision is remembered (`crate::authz`); 0 = never.
    pub authz_cache_ttl: Duration,
}

/// `name=/namespace` pairs, comma-separated.
fn mounts(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, ns) = p
                .split_once('=')
                .with_context(|| format!("SWITCHBOARD_DIALECTS: {p:?} is not name=/namespace"))?;
            Ok((name.trim().to_string(), ns.trim().to_string()))
        })
        .collect()
}

pub(crate) fn ms(name: &str, default: u64) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(env_or(name, default)?))
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::read(false)
    }

    /// The defaults in development mode, whatever the environment says about it (unit tests).
    #[cfg(test)]
    pub(crate) fn development() -> Self {
        Self::read(true).expect("the development defaults are valid")
    }

    fn read(force_dev_mode: bool) -> anyhow::Result<Self> {
        let dev_mode = force_dev_mode
            || match env_opt::<String>("DEV_MODE")?.as_deref() {
                None | Some("0" | "false" | "no") => false,
                Some("1" | "true" | "yes") => true,
                Some(other) => {
                    anyhow::bail!("SWITCHBOARD_DEV_MODE={other:?}: expected 1 or 0")
                }
            };
        let mut dev_defaults = Vec::new();
        // A secret: required outside development mode; in it, a development value stands in.
        let mut secret = |name: &'static str, dev_value: &str| -> anyhow::Result<String> {
            match env_opt::<String>(name)? {
                Some(v) => Ok(v),
                None if dev_mode => {
                    dev_defaults.push(name);
                    Ok(dev_value.to_string())
                }
                None => anyhow::bail!(
                    "SWITCHBOARD_{name} is required (at least {MIN_SECRET_BYTES} bytes; \
                     e.g. `openssl rand -hex 32`), unless SWITCHBOARD_DEV_MODE=1"
                ),
            }
        };
        let jwt_algorithm = match env_or("JWT_ALGORITHM", "HS256".to_string())?
            .to_ascii_uppercase()
            .as_str()
        {
            "HS256" => JwtAlgorithm::Hs256,
            "RS256" => JwtAlgorithm::Rs256,
            "ES256" => JwtAlgorithm::Es256,
            other => {
                anyhow::bail!("SWITCHBOARD_JWT_ALGORITHM={other:?}: expected HS256, RS256 or ES256")
            }
        };
        let read_pem = |name: &str| -> anyhow::Result<Option<String>> {
            match env_opt::<String>(name)? {
                Some(path) => Ok(Some(
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("SWITCHBOARD_{name}={path}"))?,
                )),
                None => Ok(None),
            }
        };
        let list = |s: String| -> Vec<String> {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        };
        let default_node = format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "gateway".into()),
            std::process::id()
        );
        let config = Config {
            node_id: env_or("NODE_ID", default_node)?,
            membership_url: env_or("MEMBERSHIP_URL", "http://127.0.0.1:50051".to_string())?,
            messages_url: env_or("MESSAGES_URL", "http://127.0.0.1:50052".to_string())?,
            presence_url: env_or("PRESENCE_URL", "http://127.0.0.1:50053".to_string())?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_string())?,
            redis_prefix: env_or("REDIS_PREFIX", "switchboard:".to_string())?,
            admin_token: secret("ADMIN_TOKEN", DEV_ADMIN_TOKEN)?,
            jwt_algorithm,
            jwt_secret: match jwt_algorithm {
                JwtAlgorithm::Hs256 => secret("JWT_SECRET", DEV_JWT_SECRET)?,
                // Verified with the public key; no shared secret is used.
                _ => String::new(),
            },
            jwt_public_key_pem: read_pem("JWT_PUBLIC_KEY_FILE")?,
            jwt_private_key_pem: read_pem("JWT_PRIVATE_KEY_FILE")?,
            jwt_issuer: env_opt("JWT_ISSUER")?,
            jwt_audience: env_opt("JWT_AUDIENCE")?,
            jwt_max_age: env_opt::<u64>("JWT_MAX_AGE_SECONDS")?.map(Duration::from_secs),
            session_secrets: list(secret("SESSION_SECRET", DEV_SESSION_SECRET)?),
            session_cookie_name: env_or("SESSION_COOKIE", "connect.sid".to_string())?,
            session_prefix: env_or("SESSION_PREFIX", "sess:".to_string())?,
            session_ttl: Duration::from_secs(env_or("SESSION_TTL_SECONDS", 86_400)?),
            allowed_origins: list(env_or(
                "ALLOWED_ORIGINS",
                "http://localhost:3000,http://127.0.0.1:3000".to_string(),
            )?),
            presence_refresh: ms("PRESENCE_REFRESH_MS", 10_000)?,
            outbox_redeliver_after: ms("OUTBOX_REDELIVER_AFTER_MS", 3_000)?,
            outbox_sweep_interval: ms("OUTBOX_SWEEP_MS", 1_000)?,
            redis_recovery_window: ms("REDIS_RECOVERY_MS", 5_000)?,
            // socket.io's own default (`maxDisconnectionDuration`).
            recovery_window: ms("RECOVERY_WINDOW_MS", 120_000)?,
            delivery_log_entries: env_or("DELIVERY_LOG_ENTRIES", 100_000)?,
            dialects: mounts(&env_or("DIALECTS", String::new())?)?,
            max_rooms_per_socket: env_or("MAX_ROOMS_PER_SOCKET", 200)?,
            max_payload_bytes: env_or("MAX_PAYLOAD_BYTES", 1_048_576)?,
            ws_read_buffer_bytes: env_or("WS_READ_BUFFER_BYTES", 1_024)?,
            files_url: env_or("FILES_URL", ".local/files".to_string())?,
            files_s3_endpoint: env_opt("FILES_S3_ENDPOINT")?,
            drain_grace: ms("DRAIN_GRACE_MS", 1_000)?,
            request_head_timeout: ms("REQUEST_HEAD_TIMEOUT_MS", 10_000)?,
            max_request_head_bytes: env_or("MAX_REQUEST_HEAD_BYTES", 16_384)?,
            max_connections_per_address: env_or("MAX_CONNECTIONS_PER_ADDRESS", 256)?,
            max_sockets_per_user: env_or("MAX_SOCKETS_PER_USER", 20)?,
            socket_events_per_second: env_or("SOCKET_EVENTS_PER_SECOND", 20.0)?,
            // A client may join every room it is allowed (MAX_ROOMS_PER_SOCKET) right after
            // connecting.
            socket_event_burst: env_or("SOCKET_EVENT_BURST", 200.0)?,
            socket_event_overrun: env_or("SOCKET_EVENT_OVERRUN", 100)?,
            authz_cache_ttl: ms("AUTHZ_CACHE_MS", 30_000)?,
            grpc_timeout: ms("GRPC_TIMEOUT_MS", 5_000)?,
            sends_in_flight: env_or("SENDS_IN_FLIGHT", 1)?,
            send_linger: ms("SEND_LINGER_MS", 5)?,
            publish_linger: ms("PUBLISH_LINGER_MS", 5)?,
            dev_mode,
            dev_defaults,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure(
            !self.admin_token.is_empty(),
            "SWITCHBOARD_ADMIN_TOKEN must not be empty",
        )?;
        ensure(
            !self.session_secrets.is_empty(),
            "SWITCHBOARD_SESSION_SECRET must not be empty",
        )?;
        ensure(
            !self.presence_refresh.is_zero(),
            "SWITCHBOARD_PRESENCE_REFRESH_MS must be positive",
        )?;
        ensure(
            self.max_payload_bytes >= 1024,
            "SWITCHBOARD_MAX_PAYLOAD_BYTES must be at least 1024",
        )?;
        ensure(
            self.delivery_log_entries >= 1_000,
            "SWITCHBOARD_DELIVERY_LOG_ENTRIES must be at least 1000",
        )?;
        ensure(
            (1..=crate::send_stream::MAX_BATCHES_IN_FLIGHT).contains(&self.sends_in_flight),
            "SWITCHBOARD_SENDS_IN_FLIGHT must be 1 to 64",
        )?;
        ensure(
            self.send_linger <= Duration::from_millis(1_000),
            "SWITCHBOARD_SEND_LINGER_MS must be at most 1000",
        )?;
        ensure(
            self.publish_linger <= Duration::from_millis(1_000),
            "SWITCHBOARD_PUBLISH_LINGER_MS must be at most 1000",
        )?;
        ensure(
            self.max_rooms_per_socket > 0,
            "SWITCHBOARD_MAX_ROOMS_PER_SOCKET must be positive",
        )?;
        ensure(
            !self.request_head_timeout.is_zero(),
            "SWITCHBOARD_REQUEST_HEAD_TIMEOUT_MS must be positive",
        )?;
        ensure(
            (8_192..=1_048_576).contains(&self.max_request_head_bytes),
            "SWITCHBOARD_MAX_REQUEST_HEAD_BYTES must be between 8192 and 1048576",
        )?;
        ensure(
            self.socket_events_per_second > 0.0 && self.socket_event_burst >= 1.0,
            "SWITCHBOARD_SOCKET_EVENTS_PER_SECOND must be positive and SWITCHBOARD_SOCKET_EVENT_BURST at least 1",
        )?;
        ensure(
            self.socket_event_overrun > 0,
            "SWITCHBOARD_SOCKET_EVENT_OVERRUN must be positive",
        )?;
        if self.jwt_algorithm != JwtAlgorithm::Hs256 {
            ensure(
                self.jwt_public_key_pem.is_some(),
                "RS256/ES256 need SWITCHBOARD_JWT_PUBLIC_KEY_FILE",
            )?;
        }
        if !self.dev_mode {
            let mut secrets = vec![("ADMIN_TOKEN", &self.admin_token)];
            if self.jwt_algorithm == JwtAlgorithm::Hs256 {
                secrets.push(("JWT_SECRET", &self.jwt_secret));
            }
            secrets.extend(self.session_secrets.iter().map(|s| ("SESSION_SECRET", s)));
            for (name, value) in secrets {
                ensure(
                    value.len() >= MIN_SECRET_BYTES,
                    format!(
                        "SWITCHBOARD_{name} must have at least {MIN_SECRET_BYTES} bytes \
                         (each of a comma-separated list), unless SWITCHBOARD_DEV_MODE=1"
                    ),
                )?;
            }
        }
        for o in &self.allowed_origins {
            ensure(
                o.starts_with("http://") || o.starts_with("https://"),
                format!("origin {o:?} must start with http:// or https://"),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production() -> Config {
        let mut c = Config::development();
        c.dev_mode = false;
        c.admin_token = "a".repeat(MIN_SECRET_BYTES);
        c.jwt_secret = "j".repeat(MIN_SECRET_BYTES);
        c.session_secrets = vec!["s".repeat(MIN_SECRET_BYTES)];
        c
    }

    #[test]
    fn outside_development_mode_every_secret_has_32_bytes() {
        production()
            .validate()
            .expect("32-byte secrets are accepted");
        let short = "x".repeat(MIN_SECRET_BYTES - 1);
        let mut c = production();
        c.jwt_secret = short.clone();
        assert!(c.validate().unwrap_err().to_string().contains("JWT_SECRET"));
        let mut c = production();
        c.admin_token = short.clone();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("ADMIN_TOKEN")
        );
        let mut c = production();
        c.session_secrets.push(short.clone());
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("SESSION_SECRET")
        );
        // An RS256 deployment has no shared secret to check.
        let mut c = production();
        c.jwt_algorithm = JwtAlgorithm::Rs256;
        c.jwt_secret = String::new();
        c.jwt_public_key_pem = Some("-----BEGIN PUBLIC KEY-----".into());
        c.validate().expect("no JWT secret needed for RS256");
    }

    #[test]
    fn development_mode_accepts_its_well_known_values() {
        let c = Config::development();
        assert!(c.dev_mode);
        c.validate()
            .expect("development values are accepted in development mode");
    }
}
