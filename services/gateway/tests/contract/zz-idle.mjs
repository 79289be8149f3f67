// Ad-hoc: open N idle WebSocket connections to one node and hold them.
import { io } from "socket.io-client";
const N = Number(process.argv[2] ?? 2000);
const URL = process.argv[3] ?? "http://127.0.0.1:3000";
const A = { Authorization: "Bearer dev-admin-token", "Content-Type": "application/json" };
const tokens = [];
for (let i = 0; i < 50; i++) tokens.push((await (await fetch(URL + "/v1/tokens", { method: "POST", headers: A, body: JSON.stringify({ userId: "idle-" + i }) })).json()).token);
let ok = 0;
const socks = [];
const batch = 200;
for (let i = 0; i < N; i += batch) {
  await Promise.all(Array.from({ length: Math.min(batch, N - i) }, (_, j) => new Promise((res) => {
    const s = io(URL, { auth: { token: tokens[(i + j) % 50] }, transports: ["websocket"], forceNew: true, reconnection: false });
    s.on("connect", () => { ok++; res(); }); s.on("connect_error", (e) => { console.error(e.message); res(); });
    socks.push(s);
  })));
}
console.log("connected", ok);
process.stdin.resume();
process.on("SIGTERM", () => process.exit(0));
