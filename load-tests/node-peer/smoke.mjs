// Smoke test for two node-peer nodes sharing Redis + Postgres.
//   URLS=http://127.0.0.1:4000,http://127.0.0.1:4001 ADMIN_TOKEN=dev-admin-token node smoke.mjs
// Provisions fresh users and a chat (unique per run), then checks cross-node delivery,
// idempotent re-send, typing, presence, FORBIDDEN, rate limiting and history. Exit 1 on failure.

import crypto from "node:crypto";
import { io } from "socket.io-client";

const URLS = (process.env.URLS || "http://127.0.0.1:4000,http://127.0.0.1:4001").split(",");
const ADMIN_TOKEN = process.env.ADMIN_TOKEN || "dev-admin-token";
const RATE_LIMIT = Number(process.env.RATE_LIMIT || 10);
const [URL1, URL2 = URLS[0]] = URLS;
const run = crypto.randomBytes(4).toString("hex");
const sockets = [];

let failures = 0;
function check(name, cond, detail = "") {
  console.log(`${cond ? "ok  " : "FAIL"} ${name}${!cond && detail ? ` — ${detail}` : ""}`);
  if (!cond) failures++;
}

async function api(method, url, path, body) {
  const res = await fetch(url + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`${method} ${path} -> ${res.status} ${JSON.stringify(json)}`);
  return json;
}

function connect(url, token) {
  return new Promise((resolve, reject) => {
    const s = io(url, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true });
    sockets.push(s);
    s.once("connect", () => resolve(s));
    s.once("connect_error", (err) => reject(err));
  });
}

const emitAck = (s, event, payload) => s.timeout(3000).emitWithAck(event, payload);

// Resolves with the first `event` matching `pred` within `ms`, else null. Starts listening now,
// so call it before triggering the event.
function waitFor(s, event, pred = () => true, ms = 3000) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { s.off(event, fn); resolve(null); }, ms);
    function fn(data) {
      if (!pred(data)) return;
      clearTimeout(timer);
      s.off(event, fn);
      resolve(data);
    }
    s.on(event, fn);
  });
}
// Collects every `event` matching `pred` for `ms`.
function collect(s, event, pred, ms) {
  const got = [];
  const fn = (d) => { if (pred(d)) got.push(d); };
  s.on(event, fn);
  return new Promise((resolve) => setTimeout(() => { s.off(event, fn); resolve(got); }, ms));
}

async function main() {
  const [a, b, c] = ["a", "b", "c"].map((x) => `smoke-${run}-${x}`);
  const chatId = `smoke-${run}-chat`;

  // Provisioning, spread over both nodes.
  for (const u of [a, b, c]) await api("PUT", URL1, `/v1/users/${u}`, { username: u });
  await api("PUT", URL2, `/v1/rooms/chat/${chatId}`, { title: "smoke", createdBy: a, type: "group" });
  await api("PUT", URL1, `/v1/rooms/chat/${chatId}/members/${a}`, { role: "owner" });
  await api("PUT", URL2, `/v1/rooms/chat/${chatId}/members/${b}`, { role: "member" });
  const token = async (u) => (await api("POST", URL1, "/v1/tokens", { userId: u })).token;
  const [ta, tb, tc] = await Promise.all([token(a), token(b), token(c)]);
  check("provisioning via HTTP API", true);

  // Bad token refused at the handshake.
  const bad = await connect(URL1, "not-a-jwt").then(() => null, (err) => err);
  check("bad token refused with UNAUTHORIZED", bad?.message === "UNAUTHORIZED", String(bad?.message));

  // B on node 2 first, so it sees A (node 1) come online cross-node.
  const sb = await connect(URL2, tb);
  const onlineA = waitFor(sb, "presence:update", (d) => d.userId === a && d.status === "online");
  const sa = await connect(URL1, ta);
  const sc = await connect(URL1, tc);
  const pres = await onlineA;
  check("B (node 2) gets presence:update online for A (node 1)", !!pres && !Number.isNaN(Date.parse(pres.timestamp)));

  const ja = await emitAck(sa, "room:join", { chatId });
  const jb = await emitAck(sb, "room:join", { chatId });
  check("A and B room:join ok", ja.ok === true && jb.ok === true, JSON.stringify([ja, jb]));
  const jc = await emitAck(sc, "room:join", { chatId });
  check("non-member room:join FORBIDDEN", jc.ok === false && jc.error === "FORBIDDEN" && !!jc.correlationId, JSON.stringify(jc));
  const sendC = await emitAck(sc, "message:send", { chatId, body: "nope", clientId: "c1" });
  check("non-member message:send FORBIDDEN", sendC.ok === false && sendC.error === "FORBIDDEN", JSON.stringify(sendC));
  const v = await emitAck(sa, "message:send", { chatId, body: "", clientId: "x" });
  check("empty body VALIDATION_ERROR", v.ok === false && v.error === "VALIDATION_ERROR", JSON.stringify(v));

  // Cross-node message.
  const clientId = `m-${run}`;
  const gotB = waitFor(sb, "message:new", (m) => m.clientId === clientId);
  const sent = await emitAck(sa, "message:send", { chatId, body: "hello from A", clientId });
  check("message:send ack ok", sent.ok === true && sent.data?.clientId === clientId && /^\d+$/.test(sent.data?.serverId ?? ""), JSON.stringify(sent));
  const m = await gotB;
  check("B (node 2) receives message:new from A (node 1)",
    !!m && m._id === sent.data?.serverId && m.chatId === chatId && m.senderId === a && m.body === "hello from A"
      && !Number.isNaN(Date.parse(m.createdAt)), JSON.stringify(m));

  // Idempotent re-send: same serverId, no second broadcast.
  const dupes = collect(sb, "message:new", (x) => x.clientId === clientId, 800);
  const again = await emitAck(sa, "message:send", { chatId, body: "hello from A", clientId });
  check("re-send acks the same serverId", again.ok === true && again.data?.serverId === sent.data?.serverId, JSON.stringify(again));
  check("re-send is not broadcast again", (await dupes).length === 0);

  // Typing: to the room, not back to the typist.
  const typB = waitFor(sb, "typing:update", (d) => d.userId === a);
  const typA = waitFor(sa, "typing:update", () => true, 800);
  sa.emit("typing:start", { chatId });
  const t = await typB;
  check("B receives typing:update start from A", t?.state === "start" && t?.chatId === chatId, JSON.stringify(t));
  check("A does not receive its own typing:update", (await typA) === null);

  // presence:ping
  const ping = await emitAck(sb, "presence:ping", {});
  check("presence:ping ack with serverTime", ping.ok === true && !Number.isNaN(Date.parse(ping.data?.serverTime)), JSON.stringify(ping));

  // History over HTTP (from the other node).
  const h = await api("GET", URL2, `/v1/rooms/chat/${chatId}/messages?limit=10`);
  check("history shows the message once",
    h.messages.length === 1 && h.messages[0]._id === sent.data?.serverId && h.messages[0].clientId === clientId
      && h.hasMore === false && h.nextCursor === null, JSON.stringify(h));
  const h2 = await api("GET", URL1, `/v1/rooms/chat/${chatId}/messages?after=${sent.data?.serverId}`);
  check("history after the message is empty", h2.messages.length === 0, JSON.stringify(h2));

  // Rate limit is per user across the cluster: B alternates between its sockets on node 2 and
  // node 1. B has sent nothing yet, so exactly RATE_LIMIT pass.
  const sb1 = await connect(URL1, tb);
  const acks = [];
  for (let i = 0; i <= RATE_LIMIT; i++) {
    acks.push(await emitAck(i % 2 ? sb1 : sb, "message:send", { chatId, body: `r${i}`, clientId: `r-${run}-${i}` }));
  }
  const last = acks.at(-1);
  check(`message ${RATE_LIMIT + 1} within the window is RATE_LIMITED`,
    acks.slice(0, -1).every((x) => x.ok) && last.ok === false && last.error === "RATE_LIMITED", JSON.stringify(last));

  // Offline when A's only socket goes.
  const offA = waitFor(sb, "presence:update", (d) => d.userId === a && d.status === "offline");
  sa.disconnect();
  check("B gets presence:update offline for A", !!(await offA));
}

main()
  .catch((err) => { console.error("error:", err); failures++; })
  .finally(() => {
    for (const s of sockets) s.disconnect();
    console.log(failures === 0 ? "PASS" : `FAIL (${failures} check(s) failed)`);
    process.exit(failures === 0 ? 0 : 1);
  });
