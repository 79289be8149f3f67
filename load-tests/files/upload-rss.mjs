// Peak memory of a gateway under concurrent uploads: N uploads of SIZE bytes at once to
// POST /v1/files, and the gateway's resident memory (VmRSS now, VmHWM: its peak since start)
// before and after. Run against a running cluster (e.g. `make run`):
//
//   node load-tests/files/upload-rss.mjs --url http://127.0.0.1:3000 --pid <gateway pid> \
//        --admin-token dev-admin-token --count 20 --size 52428800
//
// Node 20's fetch streams a Blob body; the client holds one SIZE buffer shared by every upload.
import fs from 'node:fs';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:3000' },
    pid: { type: 'string' },
    'admin-token': { type: 'string', default: 'dev-admin-token' },
    count: { type: 'string', default: '20' },
    size: { type: 'string', default: String(50 * 1_048_576) },
  },
});
const count = Number(o.count);
const size = Number(o.size);

function memory(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'))[1]);
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024 };
}

async function api(method, path, body) {
  const res = await fetch(new URL(path, o.url), {
    method,
    headers: { authorization: `Bearer ${o['admin-token']}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

const user = `rss-${Date.now()}`;
await api('PUT', `/v1/users/${user}`, { username: user });
const { token } = await api('POST', '/v1/tokens', { userId: user });
const blob = new Blob([Buffer.alloc(size, 7)], { type: 'application/pdf' });

const before = memory(o.pid);
const started = Date.now();
let peakDuring = before.rssMb;
const sampler = setInterval(() => {
  peakDuring = Math.max(peakDuring, memory(o.pid).rssMb);
}, 50);
const results = await Promise.all(
  Array.from({ length: count }, async (_, i) => {
    const form = new FormData();
    form.append('file', blob, `upload-${i}.pdf`);
    const res = await fetch(new URL('/v1/files', o.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: form,
    });
    return res.status;
  }),
);
clearInterval(sampler);
const after = memory(o.pid);
console.log(
  JSON.stringify({
    uploads: count,
    bytesEach: size,
    statuses: [...new Set(results)],
    seconds: (Date.now() - started) / 1000,
    rssBeforeMb: +before.rssMb.toFixed(1),
    rssPeakSampledMb: +peakDuring.toFixed(1),
    rssAfterMb: +after.rssMb.toFixed(1),
    vmHwmMb: +after.peakMb.toFixed(1),
  }),
);
