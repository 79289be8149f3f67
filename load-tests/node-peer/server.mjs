// Reference Node.js peer for Switchboard's `chat` slice: socket.io 4 + Redis adapter + Postgres.
//
// Written the way an ordinary, competent Node team would: one process per node, state in
// Postgres (membership, messages) and Redis (presence, rate limits, cross-node fan-out through
// @socket.io/redis-adapter). Membership is checked in Postgres at `room:join`; typing and sends
// then check the socket's joined rooms in memory. No other caches, no clustering tricks.
// Run two of these on the same Redis + Postgres to get a two-node cluster.

import http from "node:http";
import crypto from "node:crypto";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient, defineScript } from "redis";
import pg from "pg";
import jwt from "jsonwebtoken";

// ---------------------------------------------------------------- configuration

const env = process.env;
const int = (name, def) => {
  const v = env[name] === undefined || env[name] === "" ? def : Number(env[name]);
  if (!Number.isInteger(v) || v < 0) throw new Error(`${name} must be a non-negative integer`);
  return v;
};
const PORT = int("PORT", 4000);
const HOST = env.HOST || "127.0.0.1";
const NODE_ID = env.NODE_ID || `node-${PORT}`;
const DATABASE_URL = env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/test";
// Two nodes × 15 = Switchboard's 30 (membership service 10, messages service 20).
const PG_POOL_SIZE = int("PG_POOL_SIZE", 15);
const REDIS_URL = env.REDIS_URL || "redis://127.0.0.1:6379";
const REDIS_PREFIX = env.REDIS_PREFIX ?? "nodepeer:";
const ADMIN_TOKEN = env.ADMIN_TOKEN || "dev-admin-token";
const JWT_SECRET = env.JWT_SECRET || "dev-jwt-secret-change-me";
const RATE_LIMIT = int("RATE_LIMIT", 10);
const RATE_WINDOW_MS = int("RATE_WINDOW_MS", 10000);
const MAX_PAYLOAD_BYTES = int("MAX_PAYLOAD_BYTES", 1048576);

// Same limits as Switchboard's chat dialect.
const MAX_ID_CHARS = 256;
const MAX_BODY_CHARS = 8000;
const MAX_CLIENT_ID_CHARS = 128;
const PRESENCE_TTL_S = 60;

// ---------------------------------------------------------------- Postgres

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: PG_POOL_SIZE });
// An idle client losing its connection emits 'error' on the pool; without a listener it would crash.
pool.on("error", (err) => console.error("pg pool error:", err.message));

// Arbitrary constant: serialises the DDL below when two nodes start at the same moment
// (CREATE ... IF NOT EXISTS alone can still race on the catalog's unique indexes).
const SCHEMA_LOCK = 7_240_311;

async function migrate() {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    await c.query("SELECT pg_advisory_xact_lock($1)", [SCHEMA_LOCK]);
    await c.query(`
      CREATE SCHEMA IF NOT EXISTS nodepeer;
      CREATE TABLE IF NOT EXISTS nodepeer.users (
        id text PRIMARY KEY,
        username text NOT NULL,
        created_at timestamptz DEFAULT now());
      CREATE TABLE IF NOT EXISTS nodepeer.chats (
        id text PRIMARY KEY,
        title text,
        created_by text,
        created_at timestamptz DEFAULT now());
      CREATE TABLE IF NOT EXISTS nodepeer.chat_members (
        chat_id text REFERENCES nodepeer.chats(id),
        user_id text REFERENCES nodepeer.users(id),
        role text NOT NULL DEFAULT 'member',
        PRIMARY KEY (chat_id, user_id));
      CREATE INDEX IF NOT EXISTS chat_members_user_id_idx ON nodepeer.chat_members(user_id);
      CREATE TABLE IF NOT EXISTS nodepeer.messages (
        id bigserial PRIMARY KEY,
        chat_id text NOT NULL REFERENCES nodepeer.chats(id),
        sender_id text NOT NULL,
        client_id text NOT NULL,
        body text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        UNIQUE (sender_id, chat_id, client_id));
      -- History pages by chat (Switchboard's messages_room_id).
      CREATE INDEX IF NOT EXISTS messages_chat_id_idx ON nodepeer.messages(chat_id, id);
    `);
    await c.query("COMMIT");
  } catch (err) {
    await c.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

async function isMember(chatId, userId) {
  const r = await pool.query(
    "SELECT 1 FROM nodepeer.chat_members WHERE chat_id = $1 AND user_id = $2",
    [chatId, userId],
  );
  return r.rowCount > 0;
}

// ---------------------------------------------------------------- Redis

// Sliding-window limiter (the same script as Switchboard's). Redis TIME (not the node's clock)
// so both nodes share one clock; the member is the send's (chat, clientId), so a retry of a
// send already counted passes without spending budget.
const rateScript = defineScript({
  NUMBER_OF_KEYS: 1,
  SCRIPT: `
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local window = tonumber(ARGV[1])
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
    if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return 1 end
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
    redis.call('ZADD', KEYS[1], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], window)
    return 1`,
  transformArguments: (key, windowMs, limit, member) => [key, String(windowMs), String(limit), member],
  transformReply: (reply) => reply === 1,
});

// One client for commands (presence, rate limit) and the adapter's PUBLISH; node-redis
// pipelines concurrent commands on it. Subscriptions need a connection of their own.
const redis = createClient({ url: REDIS_URL, scripts: { rateLimit: rateScript } });
const redisSub = redis.duplicate();
for (const [name, c] of [["redis", redis], ["redis-sub", redisSub]]) {
  c.on("error", (err) => console.error(`${name} error:`, err.message));
}

const presenceKey = (userId) => `${REDIS_PREFIX}presence:${userId}`;
const rateKey = (userId) => `${REDIS_PREFIX}rate:${userId}`;

// ---------------------------------------------------------------- errors & validation

class AppError extends Error {
  constructor(code, message, status = 400) {
    super(message);
    this.code = code;
    this.status = status;
  }
}
const validation = (message) => new AppError("VALIDATION_ERROR", message, 400);

const charCount = (s) => (s.length <= MAX_BODY_CHARS ? s.length : [...s].length); // code points
function str(obj, field, max) {
  const v = obj[field];
  if (typeof v !== "string") throw validation(`${field} must be a string`);
  if (v.length === 0) throw validation(`${field} must not be empty`);
  if (v.length > max && charCount(v) > max) throw validation(`${field} must be at most ${max} characters`);
  return v;
}
function object(payload) {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    throw validation("Payload must be an object");
  }
  return payload;
}

const errorBody = (code, message) => ({ error: code, message, correlationId: crypto.randomUUID() });

// ---------------------------------------------------------------- HTTP integration API

const json = (res, status, body) => {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
};

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_PAYLOAD_BYTES) throw new AppError("VALIDATION_ERROR", "Body too large", 400);
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    return object(JSON.parse(Buffer.concat(chunks).toString("utf8")));
  } catch (err) {
    throw err instanceof AppError ? err : validation("Body must be a JSON object");
  }
}

const adminOk = (req) => {
  const h = req.headers.authorization || "";
  const given = Buffer.from(h.startsWith("Bearer ") ? h.slice(7) : "");
  const want = Buffer.from(ADMIN_TOKEN);
  return given.length === want.length && crypto.timingSafeEqual(given, want);
};
const id = (what, v) => {
  if (typeof v === "number" && Number.isFinite(v)) v = String(v); // numeric ids kept as text
  if (typeof v !== "string" || v.length === 0 || v.length > MAX_ID_CHARS) {
    throw validation(`${what} must be 1-${MAX_ID_CHARS} characters`);
  }
  return v;
};
const optStr = (b, f) => {
  if (b[f] === undefined || b[f] === null) return null;
  if (typeof b[f] !== "string") throw validation(`${f} must be a string`);
  return b[f];
};
const messageJson = (r) => ({
  _id: String(r.id),
  chatId: r.chat_id,
  body: r.body,
  senderId: r.sender_id,
  createdAt: r.created_at.toISOString(),
  clientId: r.client_id,
});

// Routes: [method, pattern, handler(params, req, url) -> [status, body]].
const routes = [
  ["PUT", /^\/v1\/users\/([^/]+)$/, async ([userId], req) => {
    userId = id("userId", userId);
    const b = await readJson(req);
    if (typeof b.username !== "string" || b.username.length === 0) throw validation("username is required");
    await pool.query(
      `INSERT INTO nodepeer.users (id, username) VALUES ($1, $2)
       ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username`,
      [userId, b.username],
    );
    return [200, { id: userId, username: b.username }];
  }],
  ["PUT", /^\/v1\/rooms\/([^/]+)\/([^/]+)$/, async ([kind, roomId], req) => {
    if (kind !== "chat") throw validation(`Unsupported room kind: ${kind}`);
    roomId = id("roomId", roomId);
    const b = await readJson(req);
    const title = optStr(b, "title");
    const createdBy = b.createdBy == null ? null : id("createdBy", b.createdBy);
    optStr(b, "type"); // accepted for compatibility, not stored
    const r = await pool.query(
      `INSERT INTO nodepeer.chats (id, title, created_by) VALUES ($1, $2, $3)
       ON CONFLICT (id) DO UPDATE SET title = COALESCE(EXCLUDED.title, chats.title),
                                      created_by = COALESCE(EXCLUDED.created_by, chats.created_by)
       RETURNING id, title, created_by, created_at`,
      [roomId, title, createdBy],
    );
    const c = r.rows[0];
    return [200, { id: c.id, title: c.title, createdBy: c.created_by, createdAt: c.created_at.toISOString() }];
  }],
  ["PUT", /^\/v1\/rooms\/([^/]+)\/([^/]+)\/members\/([^/]+)$/, async ([kind, roomId, userId], req) => {
    if (kind !== "chat") throw validation(`Unsupported room kind: ${kind}`);
    roomId = id("roomId", roomId);
    userId = id("userId", userId);
    const b = await readJson(req);
    const role = optStr(b, "role") || "member";
    try {
      await pool.query(
        `INSERT INTO nodepeer.chat_members (chat_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (chat_id, user_id) DO UPDATE SET role = EXCLUDED.role`,
        [roomId, userId, role],
      );
    } catch (err) {
      if (err.code === "23503") throw new AppError("NOT_FOUND", "Chat or user not found", 404); // FK
      throw err;
    }
    return [200, { chatId: roomId, userId, role }];
  }],
  ["POST", /^\/v1\/tokens$/, async (_p, req) => {
    const b = await readJson(req);
    const userId = id("userId", b.userId);
    const ttl = b.ttlSeconds ?? 3600;
    if (!Number.isInteger(ttl) || ttl <= 0) throw validation("ttlSeconds must be a positive integer");
    const token = jwt.sign({ sub: userId }, JWT_SECRET, { algorithm: "HS256", expiresIn: ttl });
    return [200, { token }];
  }],
  ["GET", /^\/v1\/rooms\/([^/]+)\/([^/]+)\/messages$/, async ([kind, roomId], _req, url) => {
    if (kind !== "chat") throw validation(`Unsupported room kind: ${kind}`);
    roomId = id("roomId", roomId);
    const q = url.searchParams;
    const limit = q.has("limit") ? Number(q.get("limit")) : 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw validation("limit must be 1-100");
    const after = q.get("after");
    if (after !== null && !/^\d{1,18}$/.test(after)) throw validation("after must be a message id");
    const exists = await pool.query("SELECT 1 FROM nodepeer.chats WHERE id = $1", [roomId]);
    if (exists.rowCount === 0) throw new AppError("NOT_FOUND", "Chat not found", 404);
    // One extra row tells whether there is more.
    const cols = "id, chat_id, sender_id, client_id, body, created_at";
    const r = after !== null
      ? await pool.query(
          `SELECT ${cols} FROM nodepeer.messages WHERE chat_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3`,
          [roomId, after, limit + 1])
      : await pool.query(
          `SELECT ${cols} FROM nodepeer.messages WHERE chat_id = $1 ORDER BY id DESC LIMIT $2`,
          [roomId, limit + 1]);
    const hasMore = r.rows.length > limit;
    const rows = r.rows.slice(0, limit);
    if (after === null) rows.reverse(); // newest page, returned oldest first
    const messages = rows.map(messageJson);
    return [200, { messages, hasMore, nextCursor: hasMore ? messages.at(-1)._id : null }];
  }],
];

async function handleHttp(req, res) {
  try {
    const url = new URL(req.url, "http://localhost");
    if (url.pathname === "/healthz" && req.method === "GET") return json(res, 200, { status: "ok" });
    if (!adminOk(req)) throw new AppError("UNAUTHORIZED", "Missing or invalid admin token", 401);
    for (const [method, pattern, handler] of routes) {
      const m = pattern.exec(url.pathname);
      if (m && req.method === method) {
        const params = m.slice(1).map(decodeURIComponent);
        const [status, body] = await handler(params, req, url);
        return json(res, status, body);
      }
    }
    throw new AppError("NOT_FOUND", "Route not found", 404);
  } catch (err) {
    if (err instanceof AppError) return json(res, err.status, errorBody(err.code, err.message));
    if (err instanceof URIError) return json(res, 400, errorBody("VALIDATION_ERROR", "Bad path encoding"));
    console.error(`http ${req.method} ${req.url} failed:`, err);
    if (!res.headersSent) json(res, 500, errorBody("INTERNAL", "internal error"));
  }
}

// ---------------------------------------------------------------- Socket.IO

// socket.io intercepts /socket.io requests and hands every other request to this handler.
const httpServer = http.createServer(handleHttp);
const io = new Server(httpServer, { maxHttpBufferSize: MAX_PAYLOAD_BYTES });

io.use((socket, next) => {
  const token = socket.handshake.auth?.token ?? socket.handshake.query?.token;
  try {
    if (typeof token !== "string" || token === "") throw new Error("no token");
    const claims = jwt.verify(token, JWT_SECRET, { algorithms: ["HS256"] });
    if (typeof claims.sub !== "string" || claims.sub === "") throw new Error("no sub");
    socket.data.userId = claims.sub;
    next();
  } catch {
    next(new Error("UNAUTHORIZED"));
  }
});

// Contacts = distinct users sharing at least one chat with the user.
async function contactsOf(userId) {
  const r = await pool.query(
    `SELECT DISTINCT b.user_id FROM nodepeer.chat_members a
       JOIN nodepeer.chat_members b ON b.chat_id = a.chat_id
      WHERE a.user_id = $1 AND b.user_id <> $1`,
    [userId],
  );
  return r.rows.map((row) => row.user_id);
}

async function announcePresence(userId, status) {
  const contacts = await contactsOf(userId);
  if (contacts.length === 0) return;
  // One emit to every contact's room: the adapter dedupes, so a socket gets it once.
  io.to(contacts.map((c) => `user:${c}`)).emit("presence:update", {
    userId, status, timestamp: new Date().toISOString(),
  });
}

// Registers `event` with the common envelope: validation/domain errors become error acks,
// anything else is logged and answered INTERNAL. `fn` returns the ack (default {ok:true}).
function on(socket, event, fn) {
  socket.on(event, async (payload, ack) => {
    if (typeof payload === "function") [payload, ack] = [undefined, payload];
    let reply;
    try {
      reply = (await fn(payload)) ?? { ok: true };
    } catch (err) {
      if (err instanceof AppError) {
        reply = { ok: false, ...errorBody(err.code, err.message) };
      } else {
        reply = { ok: false, ...errorBody("INTERNAL", "internal error") };
        console.error(`${event} failed (user=${socket.data.userId}, correlationId=${reply.correlationId}):`, err);
      }
    }
    if (typeof ack === "function") ack(reply);
  });
}

// Disconnect clean-ups still running; shutdown waits for them before closing Redis/PG.
const offlinePending = new Set();
const forbidden = () => new AppError("FORBIDDEN", "Not a member of this chat", 403);

io.on("connection", (socket) => {
  const userId = socket.data.userId;
  const pKey = presenceKey(userId);
  socket.join(`user:${userId}`);

  // Register presence; the disconnect handler waits for this so SREM never precedes SADD.
  const online = (async () => {
    const [, , count] = await redis.multi()
      .sAdd(pKey, socket.id).expire(pKey, PRESENCE_TTL_S).sCard(pKey).exec();
    if (count === 1) await announcePresence(userId, "online");
  })().catch((err) => console.error(`presence online failed (user=${userId}):`, err));

  socket.on("disconnect", () => {
    const done = (async () => {
      await online;
      const [, count] = await redis.multi().sRem(pKey, socket.id).sCard(pKey).exec();
      if (count === 0) await announcePresence(userId, "offline");
    })()
      .catch((err) => console.error(`presence offline failed (user=${userId}):`, err))
      .finally(() => offlinePending.delete(done));
    offlinePending.add(done);
  });

  // Joined at `room:join` after the Postgres check, so a joined room needs no query; a member
  // may send or type without joining, so anything else is asked of Postgres.
  const mayPost = (chatId) => socket.rooms.has(`chat:${chatId}`) || isMember(chatId, userId);

  on(socket, "room:join", async (payload) => {
    const chatId = str(object(payload), "chatId", MAX_ID_CHARS);
    if (!(await isMember(chatId, userId))) throw forbidden();
    if (socket.connected) socket.join(`chat:${chatId}`); // it may have gone during the query
  });

  on(socket, "room:leave", async (payload) => {
    socket.leave(`chat:${str(object(payload), "chatId", MAX_ID_CHARS)}`);
  });

  on(socket, "message:send", async (payload) => {
    const p = object(payload);
    const chatId = str(p, "chatId", MAX_ID_CHARS);
    const body = str(p, "body", MAX_BODY_CHARS);
    const clientId = str(p, "clientId", MAX_CLIENT_ID_CHARS);
    const sent = (serverId) => ({ ok: true, data: { clientId, serverId: String(serverId) } });
    if (!(await mayPost(chatId))) throw forbidden();

    const windowMember = `${chatId}\u001f${clientId}`; // a retry is already in the window
    if (!(await redis.rateLimit(rateKey(userId), RATE_WINDOW_MS, RATE_LIMIT, windowMember))) {
      throw new AppError("RATE_LIMITED",
        `Maximum ${RATE_LIMIT} messages per ${Math.round(RATE_WINDOW_MS / 1000)} seconds`, 429);
    }

    const ins = await pool.query(
      `INSERT INTO nodepeer.messages (chat_id, sender_id, client_id, body) VALUES ($1, $2, $3, $4)
       ON CONFLICT (sender_id, chat_id, client_id) DO NOTHING RETURNING id, created_at`,
      [chatId, userId, clientId, body],
    );
    if (ins.rowCount === 0) {
      // A retry (or a concurrent duplicate) of a stored message: acked with its id, not broadcast.
      const stored = await pool.query(
        "SELECT id FROM nodepeer.messages WHERE sender_id = $1 AND chat_id = $2 AND client_id = $3",
        [userId, chatId, clientId],
      );
      return sent(stored.rows[0].id);
    }
    const { id: msgId, created_at: createdAt } = ins.rows[0];
    io.to(`chat:${chatId}`).emit("message:new", {
      chatId, _id: String(msgId), body, senderId: userId, createdAt: createdAt.toISOString(), clientId,
    });
    return sent(msgId);
  });

  const typing = (state) => async (payload) => {
    let chatId;
    try {
      chatId = str(object(payload), "chatId", MAX_ID_CHARS);
    } catch {
      return; // fire-and-forget: invalid payloads are silently ignored
    }
    if (!(await mayPost(chatId))) return;
    // To the chat room minus every socket of the typing user (as Switchboard does).
    io.to(`chat:${chatId}`).except(`user:${userId}`).emit("typing:update", { chatId, userId, state });
  };
  on(socket, "typing:start", typing("start"));
  on(socket, "typing:stop", typing("stop"));

  on(socket, "presence:ping", async () => {
    await redis.expire(pKey, PRESENCE_TTL_S);
    return { ok: true, data: { serverTime: new Date().toISOString() } };
  });
});

// ---------------------------------------------------------------- start & stop

process.on("unhandledRejection", (err) => console.error("unhandled rejection:", err));

async function main() {
  await Promise.all([redis.connect(), redisSub.connect()]);
  await migrate();
  // The adapter's channels are prefixed too, so several peers can share one Redis.
  io.adapter(createAdapter(redis, redisSub, { key: `${REDIS_PREFIX}socket.io` }));
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(PORT, HOST, resolve);
  });
  console.log(`listening on ${HOST}:${PORT} node=${NODE_ID}`);
}

let stopping = false;
async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`${signal}: shutting down node=${NODE_ID}`);
  try {
    // Closes every socket (their disconnect handlers clean presence up) and the HTTP server.
    await new Promise((resolve) => io.close(() => resolve()));
    await Promise.allSettled([...offlinePending]);
    await Promise.allSettled([pool.end(), redis.quit(), redisSub.quit()]);
  } catch (err) {
    console.error("shutdown error:", err);
  }
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

main().catch((err) => {
  console.error("startup failed:", err);
  process.exit(1);
});
