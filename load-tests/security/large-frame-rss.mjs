// Memory after large frames: N authenticated WebSocket sockets each send COUNT frames of SIZE
// bytes, then idle; prints the gateway's RSS before and 3 s after (docs/security.md).
//   node load-tests/security/large-frame-rss.mjs <gateway pid> <sockets> <size> <count>
// against `make run` (SB_URL, default http://127.0.0.1:3000; SB_ADMIN_TOKEN, default the
// development token). Runs from services/gateway/tests/contract (its node_modules has `ws`).
import { createRequire } from 'node:module';
const require = createRequire(new URL('../../services/gateway/tests/contract/package.json', import.meta.url));
const WebSocket = require('ws');
import fs from 'node:fs';
const [pid, n, size, count] = process.argv.slice(2).map(Number);
const rss = () => Number(fs.readFileSync(`/proc/${pid}/status`,'utf8').match(/VmRSS:\s+(\d+)/)[1]);
const sleep = (ms) => new Promise(r => setTimeout(r, ms));
const URL_ = process.env.SB_URL || 'http://127.0.0.1:3000';
const H = { 'Authorization': `Bearer ${process.env.SB_ADMIN_TOKEN || 'dev-admin-token'}`, 'Content-Type': 'application/json' };
const socks = [];
for (let i = 0; i < n; i++) {
  const r = await fetch(`${URL_}/v1/tokens`, { method: 'POST', headers: H, body: JSON.stringify({ userId: `mem-${i}-${Date.now()}` }) });
  const { token } = await r.json();
  const ws = new WebSocket(`${URL_.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
  ws.on('error', () => {});
  ws.on('message', (m) => { m = m.toString(); if (m === '2') ws.send('3'); if (m.startsWith('0{')) ws.send('40' + JSON.stringify({ token })); });
  await new Promise(r => ws.on('message', (m) => { if (m.toString().startsWith('40')) r(); }));
  socks.push(ws);
}
await sleep(1000); const before = rss();
for (let k = 0; k < count; k++) for (const ws of socks) ws.send('42["typing:start","' + 'a'.repeat(size) + '"]');
await sleep(3000); const after = rss();
console.log(JSON.stringify({n, size, count, before_kb: before, after_kb: after, per_socket_kb: ((after-before)/n).toFixed(1), open: socks.filter(s=>s.readyState===1).length}));
process.exit(0);
