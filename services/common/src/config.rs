//! Configuration: defaults, then environment variables named `SWITCHBOARD_<NAME>`, validated at
//! start-up so that a bad value stops the service before it serves anything.

use std::{fmt::Display, str::FromStr};

use anyhow::{Context, bail};

/// The environment variable for a setting: `SWITCHBOARD_` + `name`.
pub fn var_name(name: &str) -> String {
    format!("SWITCHBOARD_{name}")
}

/// Reads `SWITCHBOARD_<name>`, or `default` when unset or empty.
pub fn env_or<T>(name: &str, default: T) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    match env_opt(name)? {
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// Reads `SWITCHBOARD_<name>` when it is set and not empty.
pub fn env_opt<T>(name: &str) -> anyhow::Result<Option<T>>
where
    T: FromStr,
    T::Err: Display,
{
    let key = var_name(name);
    match std::env::var(&key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{key}={v:?} is not valid: {e}")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(e).with_context(|| key.clone()),
    }
}

/// Fails start-up with a readable message when `ok` is false.
pub fn ensure(ok: bool, what: impl Display) -> anyhow::Result<()> {
    if !ok {
        bail!("invalid configuration: {what}");
    }
    Ok(())
}

/// A URL without its password (`scheme://user:***@host/...`), for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
