//! The service's settings: defaults, then `SWITCHBOARD_*` environment variables, validated at
//! start-up.

use std::time::Duration;

use switchboard_common::config::{ensure, env_or};

/// Settings of the presence service (the listen address is read by `main` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `SWITCHBOARD_REDIS_URL` (default `redis://127.0.0.1:6379`).
    pub redis_url: String,
    /// `SWITCHBOARD_REDIS_PREFIX` (default `switchboard:`): every key and the events channel
    /// (`{prefix}presence:events`) start with it, so several deployments (or tests) can share
    /// one Redis.
    pub redis_prefix: String,
    /// `SWITCHBOARD_PRESENCE_TTL_MS` (default 30 000): a socket not refreshed for this long is
    /// gone. Gateways refresh their live sockets every third of it.
    pub presence_ttl_ms: u64,
    /// `SWITCHBOARD_PRESENCE_THROTTLE_MS` (default 2 000): the minimum time between two
    /// broadcast transitions of one user in one namespace. A transition inside the window is
    /// delayed to its end, never dropped (and vanishes when the user is back to the broadcast
    /// state by then).
    pub presence_throttle_ms: u64,
    /// `SWITCHBOARD_TYPING_TTL_MS` (default 3 000): how long a typing start lasts when the
    /// request's `ttl_ms` is 0.
    pub typing_ttl_ms: u64,
    /// `SWITCHBOARD_SWEEP_INTERVAL_MS` (default 250): how often every replica looks for expired
    /// sockets, due throttled transitions and passed typing deadlines.
    pub sweep_interval_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379".to_string(),
            redis_prefix: "switchboard:".to_string(),
            presence_ttl_ms: 30_000,
            presence_throttle_ms: 2_000,
            typing_ttl_ms: 3_000,
            sweep_interval_ms: 250,
        }
    }
}

/// The longest accepted TTL or interval (one day): anything longer is a configuration mistake.
const MAX_MS: u64 = 24 * 60 * 60 * 1000;

impl Config {
    /// Defaults, overridden by the `SWITCHBOARD_*` variables listed on the fields.
    pub fn from_env() -> anyhow::Result<Config> {
        let d = Config::default();
        let config = Config {
            redis_url: env_or("REDIS_URL", d.redis_url)?,
            redis_prefix: env_or("REDIS_PREFIX", d.redis_prefix)?,
            presence_ttl_ms: env_or("PRESENCE_TTL_MS", d.presence_ttl_ms)?,
            presence_throttle_ms: env_or("PRESENCE_THROTTLE_MS", d.presence_throttle_ms)?,
            typing_ttl_ms: env_or("TYPING_TTL_MS", d.typing_ttl_ms)?,
            sweep_interval_ms: env_or("SWEEP_INTERVAL_MS", d.sweep_interval_ms)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values; `run` calls it too, so a hand-built `Config` is checked as well.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure(
            !self.redis_url.is_empty(),
            "SWITCHBOARD_REDIS_URL must not be empty",
        )?;
        ensure(
            !self.redis_prefix.contains('\x1f'),
            "SWITCHBOARD_REDIS_PREFIX must not contain the unit separator (\\x1f)",
        )?;
        ensure(
            (100..=MAX_MS).contains(&self.presence_ttl_ms),
            "SWITCHBOARD_PRESENCE_TTL_MS must be between 100 and 86400000",
        )?;
        ensure(
            self.presence_throttle_ms <= MAX_MS,
            "SWITCHBOARD_PRESENCE_THROTTLE_MS must be at most 86400000",
        )?;
        ensure(
            (1..=MAX_MS).contains(&self.typing_ttl_ms),
            "SWITCHBOARD_TYPING_TTL_MS must be between 1 and 86400000",
        )?;
        ensure(
            (1..=self.presence_ttl_ms).contains(&self.sweep_interval_ms),
            "SWITCHBOARD_SWEEP_INTERVAL_MS must be between 1 and SWITCHBOARD_PRESENCE_TTL_MS",
        )?;
        Ok(())
    }

    pub(crate) fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn sweep_slower_than_ttl_is_rejected() {
        let c = Config {
            sweep_interval_ms: 60_000,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
