// Attack: a gateway deployed with guessable secrets (a short HS256 key, a short session secret,
// no admin token) lets anyone mint tokens and cookies. Outside SWITCHBOARD_DEV_MODE the gateway
// binary must refuse to start, before connecting anywhere, naming the variable; in development
// mode it starts without any secret. The binary is the cluster's (SB_GATEWAY_BIN); the nodes
// that start here are extra processes with their own Redis key prefix, killed at the end.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { closeAll, sleep } from '../helpers.mjs';
import { GATEWAY_BIN, SERVICES, TEMP_DIR, startControl } from './common.mjs';

let control;
const started = new Set();

before(async () => {
  control = await startControl();
});

after(async () => {
  for (const child of started) child.kill('SIGKILL');
  closeAll();
  await control.check();
});

const LONG = (what) => `${what}-${crypto.randomBytes(24).toString('hex')}`; // > 32 bytes
const UNREACHABLE = 'http://127.0.0.1:9';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts the gateway binary with only `vars` (plus PATH and HOME) in its environment; answers
 * `{ child, port, exited, output }` (`exited` resolves with `{ code, signal }`).
 */
async function startGateway(vars) {
  assert.ok(GATEWAY_BIN, 'the harness passes the gateway binary as SB_GATEWAY_BIN');
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    RUST_LOG: 'warn',
    SWITCHBOARD_LISTEN: `127.0.0.1:${port}`,
    SWITCHBOARD_NODE_ID: `secrets-${port}`,
    ...vars,
  };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const child = spawn(GATEWAY_BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (d) => (output.stdout += d));
  child.stderr.on('data', (d) => (output.stderr += d));
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      started.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, port, exited, output };
}

/** Valid production settings, Redis and services unreachable (a refusal must come first). */
const refusalBase = () => ({
  SWITCHBOARD_ADMIN_TOKEN: LONG('admin'),
  SWITCHBOARD_JWT_SECRET: LONG('jwt'),
  SWITCHBOARD_SESSION_SECRET: LONG('session'),
  SWITCHBOARD_REDIS_URL: 'redis://127.0.0.1:9',
  SWITCHBOARD_MEMBERSHIP_URL: UNREACHABLE,
  SWITCHBOARD_MESSAGES_URL: UNREACHABLE,
  SWITCHBOARD_PRESENCE_URL: UNREACHABLE,
});

/** Settings of a node that can really start: the cluster's Redis under a private prefix. */
const startableBase = (tag) => ({
  SWITCHBOARD_REDIS_URL: SERVICES.redis,
  SWITCHBOARD_REDIS_PREFIX: `sb-${tag}-${crypto.randomBytes(4).toString('hex')}:`,
  // Services unreachable: this node must not take part in the cluster (no outbox sweeps).
  SWITCHBOARD_MEMBERSHIP_URL: UNREACHABLE,
  SWITCHBOARD_MESSAGES_URL: UNREACHABLE,
  SWITCHBOARD_PRESENCE_URL: UNREACHABLE,
  SWITCHBOARD_FILES_URL: path.join(TEMP_DIR || '/tmp', `files-${tag}`),
});

/** Waits for the process to exit (up to 15 s); answers its exit and output. */
async function expectExit(gw) {
  const result = await Promise.race([gw.exited, sleep(15000).then(() => null)]);
  assert.ok(result, `the gateway exited (it is still running; output: ${gw.output.stdout.slice(-500)})`);
  return result;
}

/** Polls /healthz of a started node for up to 20 s; fails if the process exits meanwhile. */
async function expectServing(gw) {
  let exitedWith = null;
  gw.exited.then((r) => (exitedWith = r));
  const deadline = Date.now() + 20000;
  for (;;) {
    assert.equal(exitedWith, null, `the gateway exited (${JSON.stringify(exitedWith)}): ${gw.output.stderr.slice(-800)}`);
    try {
      const res = await fetch(`http://127.0.0.1:${gw.port}/healthz`, { signal: AbortSignal.timeout(2000) });
      await res.text();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    assert.ok(Date.now() < deadline, `the gateway answered /healthz within 20 s; stderr: ${gw.output.stderr.slice(-800)}`);
    await sleep(200);
  }
}

async function stop(gw) {
  gw.child.kill('SIGKILL');
  await gw.exited;
}

const REFUSALS = [
  ['a JWT secret of 31 bytes', { SWITCHBOARD_JWT_SECRET: 'j'.repeat(31) }, 'SWITCHBOARD_JWT_SECRET'],
  ['no JWT secret', { SWITCHBOARD_JWT_SECRET: undefined }, 'SWITCHBOARD_JWT_SECRET'],
  ['a short session secret', { SWITCHBOARD_SESSION_SECRET: 'keyboard cat' }, 'SWITCHBOARD_SESSION_SECRET'],
  [
    'a rotation list with one short session secret',
    { SWITCHBOARD_SESSION_SECRET: `${LONG('current')},old-short` },
    'SWITCHBOARD_SESSION_SECRET',
  ],
  ['no admin token', { SWITCHBOARD_ADMIN_TOKEN: undefined }, 'SWITCHBOARD_ADMIN_TOKEN'],
  ['a short admin token', { SWITCHBOARD_ADMIN_TOKEN: 'admin' }, 'SWITCHBOARD_ADMIN_TOKEN'],
];

for (const [what, override, variable] of REFUSALS) {
  test(`without SWITCHBOARD_DEV_MODE, ${what} stops the gateway at start, naming ${variable}`, async () => {
    const gw = await startGateway({ ...refusalBase(), ...override });
    const { code, signal } = await expectExit(gw);
    assert.equal(signal, null, 'it exited by itself');
    assert.notEqual(code, 0, 'with a non-zero status');
    assert.ok(
      gw.output.stderr.includes(variable),
      `stderr names ${variable}: ${JSON.stringify(gw.output.stderr.slice(-600))}`,
    );
  });
}

test('SWITCHBOARD_DEV_MODE=0 is not development mode: a 31-byte secret is still refused', async () => {
  const gw = await startGateway({ ...refusalBase(), SWITCHBOARD_DEV_MODE: '0', SWITCHBOARD_JWT_SECRET: 'd'.repeat(31) });
  const { code } = await expectExit(gw);
  assert.notEqual(code, 0);
  assert.ok(gw.output.stderr.includes('SWITCHBOARD_JWT_SECRET'), gw.output.stderr.slice(-600));
});

test('with secrets of exactly 32 bytes and no development mode, the same binary starts (the refusals are about the secrets)', async () => {
  const gw = await startGateway({
    ...startableBase('prod'),
    SWITCHBOARD_ADMIN_TOKEN: 'a'.repeat(32),
    SWITCHBOARD_JWT_SECRET: 'j'.repeat(32),
    SWITCHBOARD_SESSION_SECRET: `${'s'.repeat(32)},${LONG('previous')}`,
  });
  await expectServing(gw);
  await stop(gw);
});

test('with SWITCHBOARD_DEV_MODE=1 and no secrets at all, the gateway starts and serves', async () => {
  const gw = await startGateway({ ...startableBase('dev'), SWITCHBOARD_DEV_MODE: '1' });
  await expectServing(gw);
  await stop(gw);
});
