//! The Lua scripts. Every state change is one script, so it is atomic even with several
//! presence replicas on the same Redis, and every script reads the clock with Redis `TIME`:
//! all replicas share one clock, skew between hosts does not matter.
//!
//! Each script is [`PREAMBLE`] followed by its body. `ARGV[1]` is always the key prefix; keys
//! are built inside the scripts (the sweeper reaches keys of arbitrary users), so the service
//! needs a standalone (or sentinel) Redis, not Redis Cluster.
//!
//! Keys (`P` = prefix, `ns` = Socket.IO namespace, `SEP` = `\x1f`):
//! - `P presence:{ns}:user:{uid}` ZSET socket id → expiry ms; PEXPIRE = TTL on every write;
//! - `P presence:{ns}:socket:{sid}` HASH user_id, node_id, connected_at, last_seen,
//!   user_agent, ip; PEXPIRE = TTL;
//! - `P presence:expiry` ZSET `ns SEP uid SEP sid` → expiry ms (what the sweeper pops);
//! - `P presence:{ns}:last:{uid}` HASH state (online|offline), at: the last broadcast.
//!   Persistent while online (losing it would swallow the offline event), kept
//!   [`LAST_RETENTION_MS`] once offline (it only serves `last_seen_ms` then);
//! - `P presence:pending` ZSET `ns SEP uid` → due ms: throttled transitions;
//! - `P typing:deadlines` ZSET `ns SEP kind SEP id SEP uid` → deadline ms (written by
//!   [`crate::typing::TypingBoard`], popped by [`SWEEP_TYPING`]);
//! - channel `P presence:events`: JSON events (see the crate docs).

/// How long the last-broadcast record of an offline user is kept (7 days).
pub const LAST_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// How many due entries one sweep script pops at most.
pub const SWEEP_BATCH: u64 = 500;

/// Shared helpers, including `transition`, the only place that publishes presence events.
pub const PREAMBLE: &str = r#"
local P = ARGV[1]
local SEP = '\031'
local EXPIRY = P .. 'presence:expiry'
local PENDING = P .. 'presence:pending'
local TYPING = P .. 'typing:deadlines'
local EVENTS = P .. 'presence:events'

local function fmt(n) return string.format('%.0f', n) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function user_key(ns, uid) return P .. 'presence:' .. ns .. ':user:' .. uid end
local function socket_key(ns, sid) return P .. 'presence:' .. ns .. ':socket:' .. sid end
local function last_key(ns, uid) return P .. 'presence:' .. ns .. ':last:' .. uid end

local function split(s)
  local out = {}
  local start = 1
  while true do
    local i = string.find(s, SEP, start, true)
    if not i then
      table.insert(out, string.sub(s, start))
      return out
    end
    table.insert(out, string.sub(s, start, i - 1))
    start = i + 1
  end
end

-- A JSON string (inputs are valid UTF-8; only quotes, backslashes and controls need escaping).
local function jstr(s)
  local escaped = string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == '\\' then return '\\\\' end
    return string.format('\\u%04x', string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

local function is_online(ns, uid, now)
  return #redis.call('ZRANGEBYSCORE', user_key(ns, uid), '(' .. fmt(now), '+inf', 'LIMIT', 0, 1) > 0
end

-- Brings the last broadcast state of (ns, uid) towards the current one: nothing when equal,
-- publish when outside the throttle window, otherwise schedule a retry at the window's end.
local function transition(ns, uid, now, throttle, retention)
  local online = is_online(ns, uid, now)
  local state = online and 'online' or 'offline'
  local lk = last_key(ns, uid)
  local last = redis.call('HMGET', lk, 'state', 'at')
  local pk = ns .. SEP .. uid
  if (last[1] or 'offline') == state then
    redis.call('ZREM', PENDING, pk)
    return
  end
  local last_at = tonumber(last[2])
  if last_at and now < last_at + throttle then
    redis.call('ZADD', PENDING, fmt(last_at + throttle), pk)
    return
  end
  redis.call('HSET', lk, 'state', state, 'at', fmt(now))
  if online then
    redis.call('PERSIST', lk)
  else
    redis.call('PEXPIRE', lk, retention)
  end
  redis.call('ZREM', PENDING, pk)
  redis.call('PUBLISH', EVENTS, '{"type":"presence","namespace":' .. jstr(ns) .. ',"userId":' .. jstr(uid)
    .. ',"status":"' .. state .. '","atMs":' .. fmt(now) .. '}')
end
"#;

/// ARGV: prefix, ttl, throttle, retention, ns, uid, sid, node, user_agent, ip ('' = absent),
/// max live sockets of the user in the namespace (0 = no cap).
/// Returns 1 when the user had no live socket before, -1 (and changes nothing) when the user
/// already has the maximum.
pub const ADD_SOCKET: &str = r#"
local ttl, throttle, retention = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local ns, uid, sid, node, ua, ip = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local max_sockets = tonumber(ARGV[11])
local now = now_ms()
local expiry = now + ttl
local uk = user_key(ns, uid)
if max_sockets > 0 and not redis.call('ZSCORE', uk, sid)
    and redis.call('ZCOUNT', uk, '(' .. fmt(now), '+inf') >= max_sockets then
  return -1
end
local was_online = is_online(ns, uid, now)
local sk = socket_key(ns, sid)
-- A socket id reused by another user (should not happen): it leaves the previous user first.
local owner = redis.call('HGET', sk, 'user_id')
if owner and owner ~= uid then
  redis.call('ZREM', user_key(ns, owner), sid)
  redis.call('ZREM', EXPIRY, ns .. SEP .. owner .. SEP .. sid)
  redis.call('DEL', sk)
  transition(ns, owner, now, throttle, retention)
end
redis.call('ZADD', uk, fmt(expiry), sid)
redis.call('PEXPIRE', uk, ttl)
redis.call('HSETNX', sk, 'connected_at', fmt(now))
redis.call('HSET', sk, 'user_id', uid, 'node_id', node, 'last_seen', fmt(now))
if ua ~= '' then redis.call('HSET', sk, 'user_agent', ua) else redis.call('HDEL', sk, 'user_agent') end
if ip ~= '' then redis.call('HSET', sk, 'ip', ip) else redis.call('HDEL', sk, 'ip') end
redis.call('PEXPIRE', sk, ttl)
redis.call('ZADD', EXPIRY, fmt(expiry), ns .. SEP .. uid .. SEP .. sid)
transition(ns, uid, now, throttle, retention)
if was_online then return 0 end
return 1
"#;

/// ARGV: prefix, throttle, retention, ns, uid, sid. Returns 1 when the user has no live socket
/// left.
pub const REMOVE_SOCKET: &str = r#"
local throttle, retention = tonumber(ARGV[2]), tonumber(ARGV[3])
local ns, uid, sid = ARGV[4], ARGV[5], ARGV[6]
local now = now_ms()
redis.call('ZREM', user_key(ns, uid), sid)
redis.call('ZREM', EXPIRY, ns .. SEP .. uid .. SEP .. sid)
local sk = socket_key(ns, sid)
if redis.call('HGET', sk, 'user_id') == uid then redis.call('DEL', sk) end
transition(ns, uid, now, throttle, retention)
if is_online(ns, uid, now) then return 0 end
return 1
"#;

/// ARGV: prefix, ttl, then (ns, uid, sid) triples. Extends the sockets that still exist (even
/// when their expiry just passed but the sweeper has not removed them yet: the user was never
/// reported offline). Returns how many were extended.
pub const REFRESH: &str = r#"
local ttl = tonumber(ARGV[2])
local now = now_ms()
local expiry = fmt(now + ttl)
local n = 0
for i = 3, #ARGV - 2, 3 do
  local ns, uid, sid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local uk = user_key(ns, uid)
  if redis.call('ZSCORE', uk, sid) then
    redis.call('ZADD', uk, expiry, sid)
    redis.call('PEXPIRE', uk, ttl)
    local sk = socket_key(ns, sid)
    if redis.call('EXISTS', sk) == 1 then
      redis.call('HSET', sk, 'last_seen', fmt(now))
      redis.call('PEXPIRE', sk, ttl)
    end
    redis.call('ZADD', EXPIRY, expiry, ns .. SEP .. uid .. SEP .. sid)
    n = n + 1
  end
end
return n
"#;

/// ARGV: prefix, ns, uids... Returns a JSON array of
/// `{u, online, seen?, sockets?: [{id, c, s, ua?, ip?}]}` (read-only).
pub const GET_PRESENCE: &str = r#"
local ns = ARGV[2]
local now = now_ms()
local out = {}
for i = 3, #ARGV do
  local uid = ARGV[i]
  local live = redis.call('ZRANGEBYSCORE', user_key(ns, uid), '(' .. fmt(now), '+inf')
  local user = { u = uid, online = #live > 0 }
  local sockets = {}
  local seen = nil
  for _, sid in ipairs(live) do
    local h = redis.call('HMGET', socket_key(ns, sid), 'connected_at', 'last_seen', 'user_agent', 'ip')
    local s = { id = sid, c = tonumber(h[1]) or 0, s = tonumber(h[2]) or 0 }
    if h[3] then s.ua = h[3] end
    if h[4] then s.ip = h[4] end
    if not seen or s.s > seen then seen = s.s end
    table.insert(sockets, s)
  end
  if #sockets > 0 then
    user.sockets = sockets
  else
    local last = redis.call('HMGET', last_key(ns, uid), 'state', 'at')
    if last[1] == 'offline' then seen = tonumber(last[2]) end
  end
  if seen then user.seen = seen end
  table.insert(out, user)
end
return cjson.encode(out)
"#;

/// ARGV: prefix, throttle, retention, limit. Pops expired sockets, removes them, runs the
/// transition of each affected user once. Returns how many entries were popped.
pub const SWEEP_EXPIRED: &str = r#"
local throttle, retention, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', fmt(now), 'LIMIT', 0, limit)
if #due == 0 then return 0 end
redis.call('ZREM', EXPIRY, unpack(due))
local seen, users = {}, {}
for _, m in ipairs(due) do
  local parts = split(m)
  local ns, uid, sid = parts[1], parts[2], parts[3]
  if ns and uid and sid then
    local uk = user_key(ns, uid)
    local score = tonumber(redis.call('ZSCORE', uk, sid))
    if score and score > now then
      -- Extended without its expiry entry (not done by these scripts): keep watching it.
      redis.call('ZADD', EXPIRY, fmt(score), m)
    else
      redis.call('ZREM', uk, sid)
      local sk = socket_key(ns, sid)
      local owner = redis.call('HGET', sk, 'user_id')
      if owner == uid then redis.call('DEL', sk) end
    end
    local key = ns .. SEP .. uid
    if not seen[key] then
      seen[key] = true
      table.insert(users, { ns, uid })
    end
  end
end
for _, u in ipairs(users) do transition(u[1], u[2], now, throttle, retention) end
return #due
"#;

/// ARGV: prefix, throttle, retention, limit. Pops due throttled transitions and runs them
/// (again throttled if the window moved). Returns how many were popped.
pub const SWEEP_PENDING: &str = r#"
local throttle, retention, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', PENDING, '-inf', fmt(now), 'LIMIT', 0, limit)
if #due == 0 then return 0 end
redis.call('ZREM', PENDING, unpack(due))
for _, m in ipairs(due) do
  local parts = split(m)
  if parts[1] and parts[2] then transition(parts[1], parts[2], now, throttle, retention) end
end
return #due
"#;

/// ARGV: prefix, limit. Pops passed typing deadlines and publishes an automatic stop for each.
/// Returns how many were popped.
pub const SWEEP_TYPING: &str = r#"
local limit = tonumber(ARGV[2])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', TYPING, '-inf', fmt(now), 'LIMIT', 0, limit)
if #due == 0 then return 0 end
redis.call('ZREM', TYPING, unpack(due))
for _, m in ipairs(due) do
  local p = split(m)
  if p[1] and p[2] and p[3] and p[4] then
    redis.call('PUBLISH', EVENTS, '{"type":"typing","namespace":' .. jstr(p[1]) .. ',"roomKind":' .. jstr(p[2])
      .. ',"roomId":' .. jstr(p[3]) .. ',"userId":' .. jstr(p[4]) .. ',"typing":false,"atMs":' .. fmt(now) .. '}')
  end
end
return #due
"#;
