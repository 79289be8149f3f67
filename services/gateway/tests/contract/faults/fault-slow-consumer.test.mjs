// Fault injection: a slow consumer. A chat client on node 1 (a raw `ws` Engine.IO/Socket.IO
// client) joins a busy room and then stops reading (its TCP receive window fills), while the
// room is flooded through the integration API (`POST /v1/rooms/chat/{id}/events`, large and
// small payloads, posted to both nodes) and with chat messages (`POST .../messages`).
// Checks that:
// - the gateway disconnects it (the write deadline is the Engine.IO pingTimeout) and closes its
//   TCP connection;
// - node 1's /metrics stops counting it in `switchboard_connections`, counts it in
//   `switchboard_disconnects_total{reason="TransportError"}`, and counts the deliveries its
//   full queue could not take in `switchboard_dropped_deliveries_total`;
// - its user goes offline (`presence:update` `{ userId, status: "offline", timestamp }` to a
//   contact);
// - a control client on node 2 in the same room receives every event and every message exactly
//   once, all along and after the slow client is gone, and every publish was accepted (a
//   broadcast the slow socket could not take is neither refused nor repeated).
// No timing is asserted: every wait is a bounded loop.
//
// Run by the `fault_slow_consumer` test function, on a cluster of its own.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import WebSocket from 'ws';
import {
  NODE1,
  NODE2,
  assertIso,
  closeAll,
  until,
  connectUser,
  eventsOf,
  http,
  sample,
  scrape,
  join,
  newChat,
  sleep,
  uuid,
  waitFor,
} from '../helpers.mjs';

after(closeAll);
const rawClients = [];
after(() => {
  for (const c of rawClients) c.ws.terminate();
});

const enc = encodeURIComponent;
const EVENT = 'load:busy';
/** Phase 1: large events, more than the kernel's socket buffers hold, so the writes stall. */
const BIG_EVENTS = 12;
const BIG_BYTES = 512 * 1024;
/** Phase 2: many small events, more than the socket's outgoing queue (128 packets) holds. */
const SMALL_EVENTS = 300;
/** Phase 3: chat messages posted on the slow client's node (the message:new broadcast path). */
const MESSAGES = 60;
/** After the slow client is gone: the room keeps working. */
const AFTER_EVENTS = 6;
const AFTER_MESSAGES = 4;
const WAIT_MS = 60_000;
/** Longer than the outbox's redelivery delay in tests (1.5 s) and its sweep: a repeat would show. */
const QUIET_AFTER_MS = 5000;

/** Runs `fn` over `items` with at most `n` at once. */
async function pool(items, n, fn) {
  let next = 0;
  const workers = Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}

const CONNECTIONS = 'switchboard_connections';
const DISCONNECTS = 'switchboard_disconnects_total';
const DROPPED = 'switchboard_dropped_deliveries_total';
const TRANSPORT_ERROR = { reason: 'TransportError' };

const disconnectLines = (samples) =>
  samples
    .filter((s) => s.name === DISCONNECTS)
    .map((s) => `${JSON.stringify(s.labels)} ${s.value}`)
    .join(', ') || 'none';

// ---------------------------------------------------------------------------------------------
// The slow client: Engine.IO v4 / Socket.IO v5 over a raw WebSocket, so that it can stop reading.

function openRawChatClient(node, token) {
  const url = `${node.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const c = {
    ws,
    open: null,
    openedAt: 0,
    sid: null,
    connectError: null,
    answerPings: true,
    pingsAnswered: 0,
    acks: new Map(),
    nextAckId: 1,
    events: [], // { event, id }
    nsDisconnect: false,
    closed: null, // { code, reason, at }
    errors: [],
  };
  rawClients.push(c);

  const onSocketIo = (packet) => {
    const type = packet[0];
    const rest = packet.slice(1);
    if (type === '0') c.sid = JSON.parse(rest).sid ?? true;
    else if (type === '4') c.connectError = JSON.parse(rest);
    else if (type === '1') c.nsDisconnect = true;
    else if (type === '2') {
      const m = /^(\d*)(\[[\s\S]*)$/.exec(rest);
      if (!m) return;
      const [event, data] = JSON.parse(m[2]);
      c.events.push({ event, id: data?.id ?? data?._id ?? null });
    } else if (type === '3') {
      const m = /^(\d+)(\[[\s\S]*)$/.exec(rest);
      if (m) c.acks.set(Number(m[1]), JSON.parse(m[2]));
    }
  };

  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    const text = raw.toString();
    if (text[0] === '0') {
      c.open = JSON.parse(text.slice(1));
      c.openedAt = Date.now();
      ws.send(`40${JSON.stringify({ token })}`);
    } else if (text === '2') {
      if (c.answerPings) {
        ws.send('3');
        c.pingsAnswered += 1;
      }
    } else if (text[0] === '4') {
      onSocketIo(text.slice(1));
    }
  });
  ws.on('close', (code, reason) => {
    c.closed = { code, reason: reason.toString(), at: Date.now() };
  });
  ws.on('error', (err) => c.errors.push(err.message));

  c.connected = () =>
    until('the raw client is connected to the chat namespace', () => {
      if (c.connectError) assert.fail(`connect_error ${JSON.stringify(c.connectError)}`);
      if (c.closed) assert.fail(`closed before connecting: ${JSON.stringify(c.closed)}`);
      return c.sid;
    }, 15000, 20);

  c.emitWithAck = async (event, data) => {
    const id = c.nextAckId++;
    ws.send(`42${id}${JSON.stringify([event, data])}`);
    const [answer] = await until(`an ack to ${event}`, () => c.acks.get(id), 10000, 10);
    return answer;
  };

  /** Stops reading: nothing more is taken from the kernel, so pings go unseen too. */
  c.stopReading = () => {
    c.answerPings = false;
    ws.pause();
  };
  c.resumeReading = () => ws.resume();
  return c;
}

// ---------------------------------------------------------------------------------------------

test('a client that stops reading is disconnected, counted and offline; the room is undisturbed', { timeout: 300_000 }, async (t) => {
  const { chatId, users } = await newChat({ members: 2 });
  const [S, C] = users; // S: the slow client (node 1); C: the control (node 2), S's contact
  const runId = uuid().slice(0, 8);
  const log = (msg) => t.diagnostic(msg);

  const control = await connectUser(C, NODE2);
  const controlDisconnects = [];
  control.on('disconnect', (reason) => controlDisconnects.push(reason));
  await join(control, chatId);

  const base = await scrape(NODE1);
  const baseConnections = sample(base, CONNECTIONS);
  const baseTransportErrors = sample(base, DISCONNECTS, TRANSPORT_ERROR);
  const baseDropped = sample(base, DROPPED);

  // Everything the flood posts, built before the slow client connects.
  const bigPad = 'x'.repeat(BIG_BYTES);
  const posts = [];
  for (let i = 0; i < BIG_EVENTS; i++) {
    const id = `${runId}-big-${i}`;
    posts.push({ id, phase: 1, node: i % 2 ? NODE2 : NODE1, body: JSON.stringify({ event: EVENT, data: { id, pad: bigPad } }) });
  }
  for (let i = 0; i < SMALL_EVENTS; i++) {
    const id = `${runId}-small-${i}`;
    posts.push({ id, phase: 2, node: i % 2 ? NODE2 : NODE1, body: JSON.stringify({ event: EVENT, data: { id, n: i } }) });
  }
  const publish = async (p) => {
    const res = await http('POST', `/v1/rooms/chat/${enc(chatId)}/events`, { body: p.body, node: p.node });
    p.status = res.status;
    p.answer = res.text.slice(0, 200);
  };
  const messages = []; // { n, node, status, id }
  const postMessage = async (m) => {
    const res = await http('POST', `/v1/rooms/chat/${enc(chatId)}/messages`, {
      body: { senderId: C.id, content: `busy ${m.n}`, clientId: uuid() },
      node: m.node,
    });
    m.status = res.status;
    m.id = res.json?.id === undefined ? null : String(res.json.id);
    m.answer = res.text.slice(0, 200);
  };

  // The slow client: connect on node 1, join the room, stop reading.
  const slow = openRawChatClient(NODE1, S.token);
  await slow.connected();
  const joined = await slow.emitWithAck('room:join', { chatId });
  assert.deepEqual(joined, { ok: true }, 'the slow client joins the chat');
  slow.stopReading();
  await until('node 1 counts the slow client in switchboard_connections', async () => {
    return sample(await scrape(NODE1), CONNECTIONS) === baseConnections + 1;
  }, 10000);
  const pingInterval = slow.open?.pingInterval;
  const pingTimeout = slow.open?.pingTimeout;
  assert.ok(Number.isInteger(pingInterval) && Number.isInteger(pingTimeout), `the open packet: ${JSON.stringify(slow.open)}`);
  const since = () => `${Date.now() - slow.openedAt} ms after the open packet`;
  log(`open packet: pingInterval ${pingInterval} ms, pingTimeout ${pingTimeout} ms (the write deadline)`);
  log(`stopped reading ${since()}`);

  // The schedule keeps the heartbeat out of the way, so that the write deadline is what ends the
  // session: the server's first ping (pingInterval after the open packet) fails the session at
  // once if the socket's queue is full then, and otherwise waits pingTimeout for a pong that
  // never comes. So the writes stall (phase 1, a few large events, far from filling the queue)
  // after pingInterval - pingTimeout and before pingInterval; the queue is overflowed (phase 2)
  // only once the ping was queued, while the write deadline is still running.
  const phase1At = slow.openedAt + Math.max(0, pingInterval - pingTimeout) + 7000;
  const phase2At = slow.openedAt + pingInterval + 1000;
  await sleep(Math.max(0, phase1At - Date.now()));
  log(`phase 1 starts ${since()}`);
  await pool(posts.filter((p) => p.phase === 1), 4, publish);
  log(`phase 1 (${BIG_EVENTS} × ${BIG_BYTES} B events) posted ${since()}`);
  await sleep(Math.max(0, phase2At - Date.now()));
  log(`phase 2 starts ${since()}`);
  await pool(posts.filter((p) => p.phase === 2), 8, publish);
  log(`phase 2 (${SMALL_EVENTS} small events) posted ${since()}`);
  // The deliveries node 1 itself could not queue to the slow socket (counted synchronously).
  let droppedAfterEvents = sample(await scrape(NODE1), DROPPED);
  for (let i = 0; i < 20 && droppedAfterEvents <= baseDropped; i++) {
    await sleep(100);
    droppedAfterEvents = sample(await scrape(NODE1), DROPPED);
  }
  log(`dropped deliveries on node 1 after the events: ${droppedAfterEvents - baseDropped}`);

  for (let n = 0; n < MESSAGES; n++) messages.push({ n, phase: 3, node: NODE1 });
  await pool(messages, 4, postMessage);
  const droppedAfterMessages = sample(await scrape(NODE1), DROPPED);
  log(`phase 3 (${MESSAGES} messages on node 1) posted ${since()}; dropped deliveries on node 1 now ${droppedAfterMessages - baseDropped}`);

  await t.test('the slow client is disconnected: node 1 no longer counts it', async () => {
    await until('switchboard_connections on node 1 back to its value before the slow client', async () => {
      return sample(await scrape(NODE1), CONNECTIONS) === baseConnections;
    }, WAIT_MS);
    log(`node 1 stopped counting the slow client ${since()}`);
  });

  await t.test('the disconnect is counted as a transport error on node 1', async () => {
    let last;
    try {
      await until('switchboard_disconnects_total{reason="TransportError"} grows on node 1', async () => {
        last = await scrape(NODE1);
        return sample(last, DISCONNECTS, TRANSPORT_ERROR) > baseTransportErrors;
      }, 10000);
    } catch (err) {
      assert.fail(`${err.message}; node 1's disconnect counters: ${disconnectLines(last ?? [])}`);
    }
  });

  await t.test('the gateway closed the TCP connection', async () => {
    slow.resumeReading();
    await until('the slow client sees its connection closed by the server', () => slow.closed, WAIT_MS);
    log(`closed by the server with WebSocket code ${slow.closed.code}; the slow client had ${slow.events.length} events waiting in the kernel`);
    const seen = new Map();
    for (const e of slow.events) if (e.id !== null) seen.set(e.id, (seen.get(e.id) ?? 0) + 1);
    const repeated = [...seen].filter(([, k]) => k > 1);
    assert.deepEqual(repeated, [], 'the slow client was not sent anything twice either');
  });

  await t.test('the slow client\'s user goes offline for a contact', async () => {
    const online = await waitFor(control, 'presence:update', (u) => u.userId === S.id && u.status === 'online', WAIT_MS);
    const offline = await waitFor(control, 'presence:update', (u) => u.userId === S.id && u.status === 'offline', WAIT_MS);
    assert.deepEqual(Object.keys(offline).sort(), ['status', 'timestamp', 'userId']);
    assertIso(offline.timestamp, 'timestamp');
    assert.ok(Date.parse(offline.timestamp) >= Date.parse(online.timestamp), 'offline comes after online');
  });

  await t.test('deliveries the slow socket could not take are counted', () => {
    assert.ok(
      droppedAfterEvents > baseDropped,
      `switchboard_dropped_deliveries_total on node 1 grew with the room events the slow socket's full queue ` +
        `could not take (${baseDropped} before, ${droppedAfterEvents} after ${BIG_EVENTS + SMALL_EVENTS} events, ` +
        `${droppedAfterMessages} after ${MESSAGES} messages more)`,
    );
  });

  // The room after the slow client is gone.
  for (let i = 0; i < AFTER_EVENTS; i++) {
    const id = `${runId}-after-${i}`;
    const p = { id, phase: 4, node: i % 2 ? NODE2 : NODE1, body: JSON.stringify({ event: EVENT, data: { id, n: i } }) };
    posts.push(p);
    await publish(p);
  }
  for (let n = 0; n < AFTER_MESSAGES; n++) {
    const m = { n: MESSAGES + n, phase: 4, node: n % 2 ? NODE2 : NODE1 };
    messages.push(m);
    await postMessage(m);
  }

  await t.test('every publish and every message post was accepted', () => {
    const refused = posts.filter((p) => !(p.status >= 200 && p.status < 300));
    assert.deepEqual(
      refused.map((p) => `${p.id} (phase ${p.phase}, ${p.node === NODE1 ? 'node 1' : 'node 2'}): ${p.status} ${p.answer}`),
      [],
      `${refused.length} of ${posts.length} room event publishes were refused`,
    );
    const failed = messages.filter((m) => m.status !== 201 || m.id === null);
    assert.deepEqual(failed.map((m) => `message ${m.n}: ${m.status} ${m.answer}`), [], 'every message was stored');
  });

  await t.test('the control client got every event and message exactly once, and stayed connected', async () => {
    const eventIds = posts.map((p) => p.id);
    const messageIds = messages.filter((m) => m.id !== null).map((m) => m.id);
    const counts = () => {
      const ev = new Map();
      const msg = new Map();
      for (const e of eventsOf(control)) {
        if (e.event === EVENT) ev.set(e.data?.id, (ev.get(e.data?.id) ?? 0) + 1);
        if (e.event === 'message:new' && e.data?.chatId === chatId) msg.set(e.data._id, (msg.get(e.data._id) ?? 0) + 1);
      }
      return { ev, msg };
    };
    try {
      await until('the control received every event and message', () => {
        const { ev, msg } = counts();
        return eventIds.every((id) => ev.has(id)) && messageIds.every((id) => msg.has(id));
      }, WAIT_MS);
    } catch (err) {
      const { ev, msg } = counts();
      const missingEvents = eventIds.filter((id) => !ev.has(id));
      const missingMessages = messageIds.filter((id) => !msg.has(id));
      assert.fail(
        `${err.message}; missing ${missingEvents.length} events (${missingEvents.slice(0, 10).join(', ')}) and ` +
          `${missingMessages.length} messages (${missingMessages.slice(0, 10).join(', ')})`,
      );
    }
    await sleep(QUIET_AFTER_MS);
    const { ev, msg } = counts();
    const twice = [...ev].filter(([, k]) => k !== 1).concat([...msg].filter(([, k]) => k !== 1));
    assert.deepEqual(twice, [], 'nothing was received twice');
    const unknownEvents = [...ev.keys()].filter((id) => !eventIds.includes(id));
    assert.deepEqual(unknownEvents, [], 'no event the test did not post');
    assert.equal(msg.size, messageIds.length, 'no message the test did not post');
    assert.deepEqual(controlDisconnects, [], 'the control was never disconnected');
    assert.ok(control.connected, 'the control is still connected');
  });
});
