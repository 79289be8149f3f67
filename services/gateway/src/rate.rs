//! Rate windows: a sliding window of sends per user and dialect, kept in Redis so that every node
//! counts the same sends.
//!
//! The send forwarder checks a whole call's sends at once, in one script call, in the order they
//! will be stored: the script checks them one after another, so two sends of one user in the
//! same call count as two, exactly as two calls would. One call per send cost Redis a script
//! invocation each and the gateway a write and a wake-up each (docs/benchmarks §28).

use std::sync::Arc;

use fred::{prelude::Client, types::scripts::Script};
use switchboard_common::{DomainError, ErrorCode, RoomKey};

use crate::metrics::Metrics;

/// A sliding-window limit: `limit` sends per `window` per user, across the cluster.
#[derive(Debug, Clone)]
pub struct RateRule {
    /// Which window (one per dialect).
    pub name: &'static str,
    pub limit: u32,
    pub window_ms: u64,
}

impl RateRule {
    /// A dialect's limit: `default_limit` sends per `default_window_ms`, overridable with
    /// `SWITCHBOARD_<NAME>_RATE_LIMIT` and `SWITCHBOARD_<NAME>_RATE_WINDOW_MS`, both positive.
    pub fn from_env(
        name: &'static str,
        default_limit: u32,
        default_window_ms: u64,
    ) -> anyhow::Result<Self> {
        let var = name.to_ascii_uppercase();
        let rule = RateRule {
            name,
            limit: switchboard_common::config::env_or(&format!("{var}_RATE_LIMIT"), default_limit)?,
            window_ms: switchboard_common::config::env_or(
                &format!("{var}_RATE_WINDOW_MS"),
                default_window_ms,
            )?,
        };
        anyhow::ensure!(
            rule.limit > 0,
            "SWITCHBOARD_{var}_RATE_LIMIT must be positive"
        );
        anyhow::ensure!(
            rule.window_ms > 0,
            "SWITCHBOARD_{var}_RATE_WINDOW_MS must be positive"
        );
        Ok(rule)
    }
}

/// One send's check against its sender's window.
#[derive(Debug)]
pub(crate) struct RateCheck {
    key: String,
    /// What the send is counted as: its room and `clientId`, so that an idempotent repeat is
    /// found in the window and let through without spending budget.
    member: String,
    limit: u32,
    window_ms: u64,
}

impl RateCheck {
    /// A send by `user_id` to `room`; without a `clientId` it counts as a send of its own.
    pub(crate) fn new(
        redis_prefix: &str,
        rule: &RateRule,
        user_id: &str,
        room: &RoomKey,
        client_id: Option<&str>,
    ) -> Self {
        let member = match client_id {
            Some(id) => format!("{}\u{1f}{id}", room.socket_room()),
            None => format!("{}\u{1f}{}", room.socket_room(), uuid::Uuid::new_v4()),
        };
        RateCheck {
            key: format!("{redis_prefix}rate:{}:{user_id}", rule.name),
            member,
            limit: rule.limit,
            window_ms: rule.window_ms,
        }
    }

    fn refusal(&self) -> DomainError {
        DomainError::new(
            ErrorCode::RateLimited,
            format!(
                "Maximum {} messages per {} seconds",
                self.limit,
                (self.window_ms as f64 / 1000.0).round() as u64
            ),
        )
    }
}

/// Checks each send in turn (`KEYS[i]` its window; `ARGV` its window length, limit and member,
/// three per send) in one atomic step, on Redis's clock so nodes with skewed clocks agree;
/// answers 1 (counted, or an idempotent repeat already in the window) or 0 (refused) per send.
const RATE_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowed = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local member = ARGV[3 * i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZSCORE', key, member) then
    allowed[i] = 1
  elseif redis.call('ZCARD', key) >= limit then
    allowed[i] = 0
  else
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, window)
    allowed[i] = 1
  end
end
return allowed
"#;

#[derive(Clone)]
pub(crate) struct RateWindows {
    redis: Client,
    script: Script,
    metrics: Arc<Metrics>,
}

impl RateWindows {
    pub(crate) fn new(redis: Client, metrics: Arc<Metrics>) -> Self {
        RateWindows {
            redis,
            script: Script::from_lua(RATE_LUA),
            metrics,
        }
    }

    /// Each check's verdict, in order, as if checked one after another (no check: allowed).
    ///
    /// Fails open: rate windows live in Redis, which holds only what may be lost. While Redis
    /// is away, messages (which Postgres can still store) are not refused for want of a
    /// counter; the outage is logged and each send let through is counted in
    /// `switchboard_errors_total{code="RATE_UNCHECKED"}`.
    pub(crate) async fn check<'a>(
        &self,
        checks: impl IntoIterator<Item = Option<&'a RateCheck>>,
    ) -> Vec<Result<(), DomainError>> {
        let checks: Vec<_> = checks.into_iter().collect();
        let checked: Vec<&RateCheck> = checks.iter().flatten().copied().collect();
        if checked.is_empty() {
            return checks.iter().map(|_| Ok(())).collect();
        }
        let keys: Vec<String> = checked.iter().map(|c| c.key.clone()).collect();
        let args: Vec<String> = checked
            .iter()
            .flat_map(|c| {
                [
                    c.window_ms.to_string(),
                    c.limit.to_string(),
                    c.member.clone(),
                ]
            })
            .collect();
        let answer: Result<Vec<i64>, _> = self
            .script
            .evalsha_with_reload(&self.redis, keys, args)
            .await;
        let allowed = match answer {
            Ok(allowed) if allowed.len() == checked.len() => allowed,
            Ok(allowed) => {
                tracing::error!(
                    checks = checked.len(),
                    verdicts = allowed.len(),
                    "rate windows answered a different number of checks: letting the sends through"
                );
                self.unchecked(checked.len());
                vec![1; checked.len()]
            }
            Err(e) => {
                tracing::warn!(error = %e, sends = checked.len(), "rate windows unavailable: letting the sends through");
                self.unchecked(checked.len());
                vec![1; checked.len()]
            }
        };
        let mut verdicts = allowed.into_iter();
        checks
            .into_iter()
            .map(|check| match check {
                None => Ok(()),
                Some(check) => match verdicts.next() {
                    Some(0) => Err(check.refusal()),
                    _ => Ok(()),
                },
            })
            .collect()
    }

    fn unchecked(&self, sends: usize) {
        for _ in 0..sends {
            self.metrics.error("RATE_UNCHECKED");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(verdicts: &[Result<(), DomainError>]) -> Vec<bool> {
        verdicts.iter().map(Result::is_err).collect()
    }

    /// Windows over the test Redis, under a prefix of their own, for a rule of `limit` sends per
    /// `window_ms` in one chat.
    struct Fixture {
        windows: RateWindows,
        prefix: String,
        rule: RateRule,
        room: RoomKey,
    }

    impl Fixture {
        async fn new(limit: u32, window_ms: u64) -> Self {
            let redis = crate::redis::command_client(&crate::redis::test_url())
                .await
                .unwrap();
            Fixture {
                windows: RateWindows::new(redis, Arc::new(Metrics::new())),
                prefix: format!("test:{}:", uuid::Uuid::new_v4()),
                rule: RateRule {
                    name: "chat",
                    limit,
                    window_ms,
                },
                room: RoomKey::new("chat", "c1"),
            }
        }

        fn check(&self, user: &str, client_id: &str) -> RateCheck {
            RateCheck::new(&self.prefix, &self.rule, user, &self.room, Some(client_id))
        }
    }

    /// One script call for many sends counts them one after another: a user's sends in the same
    /// call spend the same budget as sends in separate calls, and a repeat spends none.
    #[tokio::test]
    async fn sends_checked_together_count_as_if_checked_one_after_another() {
        let f = Fixture::new(3, 60_000).await;
        let windows = &f.windows;
        let check = |user: &str, client_id: &str| f.check(user, client_id);

        // Alice's 1st and 2nd, Bob's 1st, Alice's 1st again (a repeat), a send without a
        // window, Alice's 3rd and 4th.
        let first = [
            check("alice", "a1"),
            check("alice", "a2"),
            check("bob", "b1"),
            check("alice", "a1"),
        ];
        let later = [check("alice", "a3"), check("alice", "a4")];
        let batch = first
            .iter()
            .map(Some)
            .chain([None])
            .chain(later.iter().map(Some));
        let verdicts = windows.check(batch).await;
        assert_eq!(
            refused(&verdicts),
            [false, false, false, false, false, false, true],
            "Alice's fourth send is over her limit of three; the repeat spent nothing"
        );
        let refusal = verdicts[6].as_ref().unwrap_err();
        assert_eq!(refusal.code, ErrorCode::RateLimited);
        assert_eq!(refusal.message, "Maximum 3 messages per 60 seconds");

        // The next call sees what the first one counted; Bob still has budget.
        let next = [
            check("alice", "a5"),
            check("bob", "b2"),
            check("alice", "a2"),
        ];
        let verdicts = windows.check(next.iter().map(Some)).await;
        assert_eq!(refused(&verdicts), [true, false, false]);

        // No checks: no call, every send allowed.
        assert_eq!(refused(&windows.check([None, None]).await), [false, false]);
    }

    /// The window slides: a send leaves it `window_ms` after it was counted, and gives its
    /// budget back then, not at the end of a fixed period.
    #[tokio::test]
    async fn budget_comes_back_as_each_send_leaves_the_window() {
        let f = &Fixture::new(2, 1_500).await;
        let pause = |ms| tokio::time::sleep(std::time::Duration::from_millis(ms));
        let one = |client_id: &str| {
            let check = f.check("alice", client_id);
            async move { f.windows.check([Some(&check)]).await[0].is_err() }
        };

        assert!(!one("s1").await);
        pause(750).await;
        assert!(!one("s2").await);
        assert!(one("s3").await, "two sends in the window");
        // s1 has left the window (1.5 s after it), s2 has not.
        pause(1_000).await;
        assert!(!one("s4").await, "s1's budget is back");
        assert!(one("s5").await, "s2 and s4 are still in the window");
    }
}
