// FeedsClient's state machines over a fake WebSocket, with mocked timers and clock:
// connection states, reconnects, recovery with since/epoch, dedup, commands, liveness, tokens.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { FeedsClient } from "../../src/sanic_feeds/static/feeds.js";
import { FakeWebSocket, MemoryStorage, flush } from "./fake_websocket.mjs";

beforeEach(() => {
  FakeWebSocket.reset();
  mock.timers.enable({ apis: ["setTimeout", "Date"] });
});

afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

async function connected(options = {}) {
  const client = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket, ...options });
  const states = [];
  client.on("state", (state, ctx) => states.push([state, ctx]));
  await flush();
  FakeWebSocket.last.open();
  return { client, states, ws: FakeWebSocket.last };
}

function record(sub) {
  const seen = { subscribed: [], messages: [], errors: [] };
  sub.on("subscribed", (ev) => seen.subscribed.push(ev));
  sub.on("message", (msg) => seen.messages.push(msg.offset));
  sub.on("error", (err) => seen.errors.push(err.code));
  return seen;
}

/** Close the socket as the server would, let the backoff run out, open the next one. */
async function reconnect(ws, code = 1006) {
  ws.serverClose(code);
  mock.timers.tick(20000);
  await flush();
  const next = FakeWebSocket.last;
  assert.notEqual(next, ws, "a new connection was opened");
  next.open();
  return next;
}

test("states: connecting, connected, connecting with the close code and delay, connected", async () => {
  const { client, states, ws } = await connected();
  assert.deepEqual(states.map(([s]) => s), ["connecting", "connected"]);
  ws.serverClose(1001, "server shutting down");
  assert.equal(client.state, "connecting");
  const [, ctx] = states.at(-1);
  assert.equal(ctx.code, 1001);
  assert.equal(ctx.reason, "server shutting down");
  assert.equal(ctx.delayMs >= 500 && ctx.delayMs <= 1000, true);
  mock.timers.tick(ctx.delayMs);
  FakeWebSocket.last.open();
  assert.deepEqual(states.map(([s]) => s), ["connecting", "connected", "connecting", "connected"]);
  client.close();
  assert.equal(client.state, "disconnected");
  assert.equal(FakeWebSocket.last.closedWith, 1000);
});

test("backoff grows while connecting fails, and is reset by a connection", async () => {
  mock.method(Math, "random", () => 0.999);
  const { states, ws } = await connected();
  ws.serverClose(1006);
  for (let attempt = 0; attempt < 8; attempt++) {
    mock.timers.tick(states.at(-1)[1].delayMs);
    FakeWebSocket.last.serverClose(1006); // the attempt fails, no open
  }
  const delays = states.filter(([s, ctx]) => s === "connecting" && ctx.delayMs).map(([, c]) => c.delayMs);
  assert.equal(delays[0] < 1000, true);
  assert.equal(delays[3] > 4000, true);
  assert.equal(delays.at(-1), 20000);
  mock.timers.tick(20000);
  FakeWebSocket.last.open();
  FakeWebSocket.last.serverClose(1006);
  assert.equal(states.at(-1)[1].delayMs < 1000, true, "reset on connect");
});

for (const code of [1003, 1008]) {
  test(`close ${code} is final: no reconnect`, async () => {
    const { client, states, ws } = await connected();
    ws.serverClose(code, "no");
    mock.timers.tick(60000);
    await flush();
    assert.equal(FakeWebSocket.instances.length, 1);
    assert.equal(client.state, "disconnected");
    assert.deepEqual(states.at(-1), ["disconnected", { code, reason: "no" }]);
    await assert.rejects(client.publish("news", 1), { code: "closed" });
  });
}

test("close 4001 without getToken is final", async () => {
  const { client, ws } = await connected({ token: "t1" });
  assert.equal(ws.url, "ws://feeds.test/ws?token=t1");
  ws.serverClose(4001, "token expired");
  mock.timers.tick(60000);
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.equal(client.state, "disconnected");
});

test("close 4001 with getToken: a new token, then a reconnect that recovers", async () => {
  let issued = 0;
  const getToken = async () => `token-${++issued}`;
  const client = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket, getToken });
  const sub = client.subscribe("news");
  const seen = record(sub);
  await flush();
  const ws = FakeWebSocket.last;
  assert.equal(ws.url, "ws://feeds.test/ws?token=token-1");
  ws.open();
  ws.subscribed("news", 4, "e1");
  ws.message("news", 5, "e1");
  ws.serverClose(4001, "token expired");
  mock.timers.tick(20000);
  await flush();
  const next = FakeWebSocket.last;
  assert.equal(next.url, "ws://feeds.test/ws?token=token-2");
  next.open();
  const renewal = next.subscribed("news", 7, "e1", true);
  assert.deepEqual([renewal.since, renewal.epoch], [5, "e1"]);
  next.message("news", 6, "e1");
  next.message("news", 7, "e1");
  assert.deepEqual(seen.messages, [5, 6, 7]);
  assert.deepEqual(seen.subscribed.map((e) => [e.recovered, e.wasRecovering]), [[false, false], [true, true]]);
});

test("recovery: every channel is renewed from its last delivered offset, with its epoch", async () => {
  const { client, ws } = await connected();
  const news = record(client.subscribe("news"));
  const chat = record(client.subscribe("chat"));
  ws.subscribed("news", 10, "n1");
  ws.subscribed("chat", 0, "c1");
  ws.message("news", 11, "n1");
  ws.message("chat", 1, "c1");
  ws.message("chat", 2, "c1");
  const next = await reconnect(ws);
  const renewals = next.commands("subscribe").map(({ channel, since, epoch }) => [channel, since, epoch]);
  assert.deepEqual(renewals, [["news", 11, "n1"], ["chat", 2, "c1"]]);
  next.subscribed("news", 13, "n1", true);
  next.message("news", 12, "n1");
  next.message("news", 13, "n1");
  next.subscribed("chat", 2, "c1", true);
  next.message("chat", 3, "c1");
  assert.deepEqual(news.messages, [11, 12, 13]);
  assert.deepEqual(chat.messages, [1, 2, 3]);
  assert.deepEqual(news.subscribed.at(-1), {
    channel: "news", offset: 13, epoch: "n1", recovered: true, wasRecovering: true, client: undefined, since: 11,
  });
});

test("dedup: a message delivered before the reconnect is not delivered again", async () => {
  const { client, ws } = await connected();
  const seen = record(client.subscribe("news"));
  ws.subscribed("news", 0, "e1");
  ws.message("news", 1, "e1");
  ws.message("news", 2, "e1");
  const next = await reconnect(ws);
  next.subscribed("news", 3, "e1", true);
  next.message("news", 2, "e1"); // a replay overlapping what was delivered
  next.message("news", 3, "e1");
  next.message("news", 3, "e1");
  assert.deepEqual(seen.messages, [1, 2, 3]);
});

test("a first subscription and a failed recovery read differently", async () => {
  const { client, ws } = await connected();
  const seen = record(client.subscribe("news"));
  ws.subscribed("news", 5, "e1");
  ws.message("news", 6, "e1");
  const next = await reconnect(ws);
  next.subscribed("news", 40, "e2", false); // history lost: a new epoch
  next.message("news", 41, "e2");
  const flags = seen.subscribed.map(({ recovered, wasRecovering }) => ({ recovered, wasRecovering }));
  assert.deepEqual(flags, [{ recovered: false, wasRecovering: false }, { recovered: false, wasRecovering: true }]);
  assert.deepEqual(seen.messages, [6, 41]);
  assert.deepEqual(client.subscribe("other", { since: 3, epoch: "x" }).position, { offset: 3, epoch: "x" });
});

test("a lost epoch given whole: recovered: false at offset 0, then the new epoch from 1", async () => {
  const { client, ws } = await connected();
  const sub = client.subscribe("news");
  const seen = record(sub);
  ws.subscribed("news", 5, "e1");
  ws.message("news", 6, "e1");
  const next = await reconnect(ws);
  const asked = next.subscribed("news", 0, "e2", false); // the epoch e2 replaced e1
  assert.deepEqual([asked.since, asked.epoch], [6, "e1"]);
  for (const offset of [1, 2, 3]) next.message("news", offset, "e2");
  assert.deepEqual(seen.messages, [6, 1, 2, 3]);
  assert.deepEqual(seen.subscribed.map((e) => [e.recovered, e.wasRecovering, e.offset]).at(-1), [false, true, 0]);
  assert.deepEqual(sub.position, { offset: 3, epoch: "e2" });
});

test("storage: positions are kept, and a new client (a reloaded page) recovers from them", async () => {
  const storage = new MemoryStorage();
  const first = await connected({ storage });
  first.client.subscribe("news");
  first.ws.subscribed("news", 2, "e1");
  first.ws.message("news", 3, "e1");
  assert.deepEqual(JSON.parse(storage.getItem("feeds:news")), { offset: 3, epoch: "e1" });
  first.client.close();

  const second = await connected({ storage });
  const seen = record(second.client.subscribe("news"));
  const asked = second.ws.subscribed("news", 5, "e1", true);
  assert.deepEqual([asked.since, asked.epoch], [3, "e1"]);
  second.ws.message("news", 4, "e1");
  second.ws.message("news", 5, "e1");
  assert.deepEqual(seen.messages, [4, 5]);
  assert.deepEqual(seen.subscribed.map((e) => [e.recovered, e.wasRecovering, e.since]), [[true, true, 3]]);
  second.client.subscribe("chat").unsubscribe();
  storage.setItem("feeds:broken", "{not json");
  assert.equal(second.client.subscribe("broken").position, null);
  second.client.subscribe("news2");
  second.ws.subscribed("news2", 0, "e9");
  second.client._subs.get("news2").unsubscribe();
  assert.equal(storage.getItem("feeds:news2"), null, "unsubscribe forgets the position");
});

test("commands: replies matched by id, errors reject with their code", async () => {
  const { client, ws } = await connected();
  const published = client.publish("news", { text: "hi" });
  const presence = client.presence("news");
  const refused = client.history("secret", { limit: 5 });
  const [pub, pres, hist] = ws.sent;
  assert.deepEqual(pub, { op: "publish", channel: "news", data: { text: "hi" }, id: pub.id });
  assert.deepEqual(hist, { op: "history", channel: "secret", limit: 5, id: hist.id });
  // Answered out of order: each promise gets its own reply.
  ws.receive({ type: "error", code: "forbidden", message: "not allowed", id: hist.id });
  ws.receive({ type: "presence", channel: "news", clients: { abc: {} }, id: pres.id });
  ws.receive({ type: "ack", offset: 44, epoch: "e1", id: pub.id });
  assert.deepEqual(await published, { offset: 44, epoch: "e1" });
  assert.deepEqual(await presence, { abc: {} });
  await assert.rejects(refused, { name: "FeedsError", code: "forbidden" });
});

test("commands: queued until connected, failed when the connection ends first, timed out", async () => {
  const client = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket });
  const early = client.publish("news", 1);
  await flush();
  const ws = FakeWebSocket.last;
  assert.equal(ws.sent.length, 0);
  ws.open();
  assert.equal(ws.commands("publish").length, 1);
  ws.receive({ type: "ack", offset: 1, epoch: "e", id: ws.sent[0].id });
  assert.deepEqual(await early, { offset: 1, epoch: "e" });
  const lost = client.publish("news", 2);
  ws.serverClose(1006);
  await assert.rejects(lost, { code: "disconnected" });
  const late = client.presence("news");
  mock.timers.tick(10000);
  await assert.rejects(late, { code: "timeout" });
});

test("one socket carries 20 subscriptions", async () => {
  const { client, ws } = await connected();
  const seen = Array.from({ length: 20 }, (_, n) => record(client.subscribe(`room:${n}`)));
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.equal(ws.commands("subscribe").length, 20);
  for (let n = 0; n < 20; n++) ws.subscribed(`room:${n}`, 0, "e");
  for (let n = 0; n < 20; n++) ws.message(`room:${n}`, 1, "e", n);
  assert.deepEqual(seen.map((s) => s.messages), Array.from({ length: 20 }, () => [1]));
});

test("subscriptions: a refusal for now is retried, one for good ends the subscription", async () => {
  const { client, ws } = await connected();
  const later = record(client.subscribe("busy"));
  const never = record(client.subscribe("secret"));
  const [busy, secret] = ws.commands("subscribe");
  ws.receive({ type: "error", code: "unavailable", message: "broker down", id: busy.id });
  ws.receive({ type: "error", code: "forbidden", message: "no", id: secret.id });
  assert.deepEqual(never.errors, ["forbidden"]);
  assert.equal(never.subscribed.length + later.errors.length, 0);
  mock.timers.tick(1000);
  assert.equal(ws.commands("subscribe").length, 3);
  ws.subscribed("busy", 0, "e");
  assert.equal(later.subscribed.length, 1);
  assert.throws(() => client.subscribe("busy"), /already subscribed/);
  client.subscribe("secret"); // over: it may be asked again
});

test("unsubscribe: tells the server, and what still arrives is not delivered", async () => {
  const { client, ws } = await connected();
  const sub = client.subscribe("news");
  const seen = record(sub);
  ws.subscribed("news", 0, "e");
  sub.unsubscribe();
  assert.deepEqual(ws.commands("unsubscribe").map((c) => c.channel), ["news"]);
  ws.message("news", 1, "e");
  assert.deepEqual(seen.messages, []);
  assert.equal(sub.state, "unsubscribed");
  const next = await reconnect(ws);
  assert.equal(next.commands("subscribe").length, 0);
});

test("liveness: a ping when idle; no frame after it drops the connection and reconnects", async () => {
  const { client, ws, states } = await connected();
  mock.timers.tick(14000);
  ws.receive({ type: "pong" }); // any frame is a sign of life
  mock.timers.tick(14000);
  assert.equal(ws.commands("ping").length, 0, "not idle for 15 s yet");
  mock.timers.tick(1000);
  assert.equal(ws.commands("ping").length, 1);
  ws.receive({ type: "pong" });
  mock.timers.tick(10000);
  assert.equal(client.state, "connected");
  mock.timers.tick(15000);
  assert.equal(ws.commands("ping").length, 2);
  mock.timers.tick(10000); // silence: the connection is dead
  assert.equal(client.state, "connecting");
  assert.deepEqual([states.at(-1)[1].code, states.at(-1)[1].reason], [1006, "timed out"]);
  assert.notEqual(ws.closedWith, null);
  mock.timers.tick(1000);
  assert.equal(FakeWebSocket.instances.length, 2);
});

test("tokens: a JWT is refreshed on the open connection before it runs out", async () => {
  const jwt = (expS) => `h.${Buffer.from(JSON.stringify({ exp: expS })).toString("base64url")}.s`;
  let issued = 0;
  const getToken = () => jwt(100 + 60 * ++issued);
  const client = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket, getToken });
  await flush();
  const ws = FakeWebSocket.last;
  ws.open();
  mock.timers.tick(130000); // exp at 160 s: refreshed 30 s before
  await flush();
  const [refresh] = ws.commands("refresh");
  assert.equal(refresh.token, jwt(220));
  ws.receive({ type: "refreshed", exp: 220, id: refresh.id });
  await flush();
  mock.timers.tick(60000);
  await flush();
  assert.equal(ws.commands("refresh").length, 2);
  client.close();
});

test("a throwing listener stops nothing; its error is reported, not swallowed", async () => {
  const { client, ws } = await connected();
  const sub = client.subscribe("news");
  sub.on("message", () => {
    throw new Error("listener bug");
  });
  const seen = record(sub);
  const reported = [];
  mock.method(globalThis, "queueMicrotask", (fn) => reported.push(fn));
  ws.subscribed("news", 0, "e");
  ws.message("news", 1, "e");
  ws.message("news", 2, "e");
  assert.deepEqual(seen.messages, [1, 2]);
  assert.equal(reported.length, 2);
  assert.throws(reported[0], /listener bug/);
});

test("close() while getToken runs: no connection, and a new connect() opens only one", async () => {
  let release;
  const getToken = () => new Promise((resolve) => (release = resolve));
  const client = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket, getToken });
  await flush();
  const first = release;
  client.close();
  client.connect();
  const second = release;
  first("stale");
  second("fresh");
  await flush();
  assert.deepEqual(FakeWebSocket.instances.map((ws) => ws.url), ["ws://feeds.test/ws?token=fresh"]);
  client.close();
  const waiting = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket, getToken });
  await flush();
  waiting.close();
  await flush();
  assert.equal(waiting.state, "disconnected");
  mock.timers.tick(60000);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test("a connection that neither opens nor fails is dropped after pingTimeoutMs", async () => {
  const client = new FeedsClient("ws://feeds.test/ws", { WebSocket: FakeWebSocket });
  const states = [];
  client.on("state", (state, ctx) => states.push([state, ctx.code, ctx.reason]));
  await flush();
  const hung = FakeWebSocket.last;
  mock.timers.tick(9999);
  assert.equal(FakeWebSocket.instances.length, 1);
  mock.timers.tick(1);
  assert.deepEqual(states.at(-1), ["connecting", 1006, "timed out"]);
  assert.notEqual(hung.closedWith, null);
  mock.timers.tick(1000);
  FakeWebSocket.last.open();
  assert.equal(client.state, "connected");
  mock.timers.tick(14999); // open: no more probing until idle
  assert.equal(client.state, "connected");
  assert.equal(FakeWebSocket.instances.length, 2);
});

test("an error without a close (Node 20's failed connect) is a close 1006", async () => {
  const { client, states } = await connected();
  FakeWebSocket.last.serverClose(1001);
  mock.timers.tick(20000);
  FakeWebSocket.last.fail();
  assert.deepEqual([states.at(-1)[0], states.at(-1)[1].code], ["connecting", 1006]);
  mock.timers.tick(20000);
  assert.equal(FakeWebSocket.instances.length, 3);
  FakeWebSocket.last.open();
  assert.equal(client.state, "connected");
  FakeWebSocket.instances[1].serverClose(1000); // a late close of the failed one: ignored
  assert.equal(client.state, "connected");
});
