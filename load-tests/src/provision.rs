//! Users, chats, memberships and tokens, created through the integration API
//! (`../shared/contracts/INTEGRATION_API.md`), which both clusters under test serve.

use std::sync::Arc;

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

/// How many provisioning requests are in flight at once.
const CONCURRENCY: usize = 48;

/// Tries per request that fails before any answer. A server may close an idle keep-alive
/// connection just as the pool reuses it (Node's HTTP server does after 5 s: a full bench run
/// once stopped on such a reset); every call here is safe to repeat (PUTs, token issues).
const ATTEMPTS: usize = 3;

#[derive(Clone)]
pub struct Admin {
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    token: String,
}

impl Admin {
    pub fn new(urls: Arc<Vec<String>>, token: String) -> Self {
        Self {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(CONCURRENCY)
                .build()
                .expect("http client"),
            urls,
            token,
        }
    }

    /// Spread admin calls over the nodes like a load balancer would.
    fn url(&self, i: usize, path: &str) -> String {
        format!(
            "{}{path}",
            self.urls[i % self.urls.len()].trim_end_matches('/')
        )
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let req = req.bearer_auth(&self.token);
        let mut attempt = 1;
        let resp = loop {
            let this_try = req
                .try_clone()
                .context("a request body that cannot be repeated")?;
            match this_try.send().await {
                Err(e) if attempt < ATTEMPTS && (e.is_connect() || e.is_request()) => attempt += 1,
                other => break other?,
            }
        };
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{status}: {body}");
        }
        Ok(body)
    }

    pub async fn put(&self, i: usize, path: &str, body: Value) -> anyhow::Result<Value> {
        let req = self.http.put(self.url(i, path)).json(&body);
        self.call(req).await.with_context(|| format!("PUT {path}"))
    }

    pub async fn post(&self, i: usize, path: &str, body: Value) -> anyhow::Result<Value> {
        let req = self.http.post(self.url(i, path)).json(&body);
        self.call(req).await.with_context(|| format!("POST {path}"))
    }

    pub async fn get(&self, i: usize, path: &str) -> anyhow::Result<Value> {
        let req = self.http.get(self.url(i, path));
        self.call(req).await.with_context(|| format!("GET {path}"))
    }

    /// Every message of a chat, oldest first: (id, clientId) pairs, paging with `after=`.
    pub async fn chat_history(&self, i: usize, chat: &str) -> anyhow::Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        let mut after = 0i64;
        loop {
            let path = format!("/v1/rooms/chat/{chat}/messages?limit=100&after={after}");
            let page = self.get(i, &path).await?;
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            let last = msgs.iter().filter_map(message_id).max();
            for m in &msgs {
                if let Some(id) = message_id(m) {
                    out.push((id, m["clientId"].as_str().unwrap_or("").to_string()));
                }
            }
            match last {
                Some(last) if last > after && page["hasMore"].as_bool() == Some(true) => {
                    after = last
                }
                _ => return Ok(out),
            }
        }
    }
}

/// A message id as either dialect renders it: `id` (number) or `_id` (string).
pub fn message_id(m: &Value) -> Option<i64> {
    let v = m.get("_id").or_else(|| m.get("id"))?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The users and chats of one scenario: user `u` is a member of chat `u / room_size`.
pub struct Population {
    pub tokens: Vec<String>,
    pub chats: Vec<String>,
    pub room_size: usize,
}

impl Population {
    pub fn chat_of(&self, user: usize) -> usize {
        user / self.room_size
    }

    /// Index of a chat from its id (`<run>-c<index>`), without a map lookup.
    pub fn chat_index(chat_id: &str) -> Option<usize> {
        chat_id.rsplit_once("-c")?.1.parse().ok()
    }
}

/// Creates `users` users in chats of `room_size` members, with a JWT each.
pub async fn provision(
    admin: &Admin,
    run: &str,
    users: usize,
    room_size: usize,
) -> anyhow::Result<Population> {
    let room_size = room_size.max(1);
    let user_ids: Vec<String> = (0..users).map(|u| format!("{run}-u{u}")).collect();
    let chats: Vec<String> = (0..users.div_ceil(room_size))
        .map(|c| format!("{run}-c{c}"))
        .collect();
    let bar = crate::progress::bar("provisioning", (users * 3 + chats.len()) as u64);

    stream::iter(user_ids.iter().enumerate())
        .map(|(i, u)| {
            let bar = bar.clone();
            async move {
                let r = admin
                    .put(i, &format!("/v1/users/{u}"), json!({ "username": u }))
                    .await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(chats.iter().enumerate())
        .map(|(i, c)| {
            let bar = bar.clone();
            let creator = &user_ids[i * room_size];
            async move {
                let r = admin
                    .put(
                        i,
                        &format!("/v1/rooms/chat/{c}"),
                        json!({ "title": c, "type": "group", "createdBy": creator }),
                    )
                    .await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(user_ids.iter().enumerate())
        .map(|(i, u)| {
            let bar = bar.clone();
            let chat = &chats[i / room_size];
            async move {
                let r = admin
                    .put(
                        i,
                        &format!("/v1/rooms/chat/{chat}/members/{u}"),
                        json!({ "role": "member" }),
                    )
                    .await;
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let tokens: Vec<String> = stream::iter(user_ids.iter().enumerate())
        .map(|(i, u)| {
            let bar = bar.clone();
            async move {
                let r = admin
                    .post(
                        i,
                        "/v1/tokens",
                        json!({ "userId": u, "ttlSeconds": 86_400 }),
                    )
                    .await
                    .and_then(|v| {
                        v["token"]
                            .as_str()
                            .map(str::to_string)
                            .context("no token in the answer")
                    });
                bar.inc(1);
                r
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    Ok(Population {
        tokens,
        chats,
        room_size,
    })
}
