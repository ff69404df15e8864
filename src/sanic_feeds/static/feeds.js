// feeds.js: the client of a sanic-feeds server's /ws, for browsers and Node >= 20. No
// dependency; API in feeds.d.ts, wire in docs/protocol.md. Pure rules are exported.

// Closes that say "don't come back as you are"; 4001: the token ran out.
const FINAL_CLOSES = new Set([1003, 1008]);
const TOKEN_EXPIRED = 4001;
// Subscribe refusals that mean "not now": retried with backoff.
const TRANSIENT = new Set(["unavailable", "rate_limited"]);

const DEFAULTS = {
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 20000,
  pingIntervalMs: 15000, // idle this long: send a ping
  pingTimeoutMs: 10000, // then (or to open) no frame this long: dead
  commandTimeoutMs: 10000,
  storage: null, // e.g. sessionStorage: positions survive a reload
  storagePrefix: "feeds:",
};

/** `code`: the server's (docs/protocol.md), or "timeout", "disconnected", "closed". */
export class FeedsError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = "FeedsError";
    this.code = code;
  }
}

/** Full jitter: min + random * ceiling, the ceiling doubling per `attempt` up to maxMs. */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.min(maxMs, minMs + random() * ceiling);
}

/** After a close with `code`: "retry", "token" (a new token, then retry) or "stop". */
export function closeAction(code, hasGetToken) {
  if (code === TOKEN_EXPIRED) return hasGetToken ? "token" : "stop";
  return FINAL_CLOSES.has(code) ? "stop" : "retry";
}

/** The position after `msg`, or null when `msg` was delivered already: no duplicates. */
export function nextPosition(position, msg) {
  if (position && position.epoch === msg.epoch && msg.offset <= position.offset) return null;
  return { offset: msg.offset, epoch: msg.epoch };
}

/** After `subscribed`: recovered, the replay moves on from `since`; else from now. */
export function positionAfterSubscribed(since, ev) {
  return ev.recovered && since ? since : { offset: ev.offset, epoch: ev.epoch };
}

/** When a JWT runs out, in ms since the Unix epoch; null when it says nothing. */
export function tokenExpiresAtMs(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part)).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

class Emitter {
  constructor() {
    this._listeners = new Map();
  }
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }
  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
    return this;
  }
  _emit(name, ...args) {
    for (const fn of [...(this._listeners.get(name) || [])]) {
      // Reported, as EventTarget does; it stops nothing.
      try {
        fn(...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

/** Events: "subscribed", "message", "join", "leave", "error". */
export class Subscription extends Emitter {
  constructor(client, channel, position) {
    super();
    this.client = client;
    this.channel = channel;
    this.state = "subscribing"; // | "subscribed" | "unsubscribed"
    this.position = position; // the last delivered {offset, epoch}, or null
    this._attempt = 0; // refusals in a row
  }
  unsubscribe() {
    this.client._unsubscribe(this);
  }
}

/** Events: "state" (state, {code, reason, delayMs}), "error" (FeedsError). */
export class FeedsClient extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = String(url).replace(/^http/, "ws");
    this.options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this._WebSocket) throw new Error("no WebSocket here (Node 20: --experimental-websocket)");
    this.state = "disconnected"; // | "connecting" | "connected"
    this._subs = new Map(); // channel -> Subscription
    this._subscribing = new Map(); // id -> [Subscription, since], on this connection
    this._pending = new Map(); // id -> {frame, sent, resolve, reject, timer}
    this._nextId = 1;
    this._attempt = 0; // failed connects in a row
    this._token = options.token || null;
    this._ws = null;
    this._ready = false; // the socket is open: commands go out at once
    this._timers = {};
    this._stopped = false; // by close(), or a final close code
    // Connect once the caller's listeners are on.
    queueMicrotask(() => this._stopped || this.connect());
  }

  // -- the public API

  connect() {
    if (this.state !== "disconnected") return;
    this._stopped = false;
    this._attempt = 0;
    this._setState("connecting");
    this._open();
  }

  close() {
    this._stopped = true;
    const ws = this._ws;
    this._lost();
    if (ws) ws.close(1000);
    this._fail(this._pending, "closed");
    this._setState("disconnected");
  }

  subscribe(channel, { since, epoch } = {}) {
    if (this._subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const position = since != null ? { offset: since, epoch } : this._load(channel);
    const sub = new Subscription(this, channel, position);
    this._subs.set(channel, sub);
    if (this._ready) this._sendSubscribe(sub);
    return sub;
  }

  async publish(channel, data) {
    const reply = await this._command({ op: "publish", channel, data });
    return { offset: reply.offset, epoch: reply.epoch };
  }

  async presence(channel) {
    return (await this._command({ op: "presence", channel })).clients;
  }

  async history(channel, { since, limit } = {}) {
    const { messages, offset, epoch } = await this._command({ op: "history", channel, since, limit });
    return { messages, offset, epoch };
  }

  // -- the connection's state machine

  _setState(state, ctx = {}, always = false) {
    if (state === this.state && !always) return;
    this.state = state;
    this._emit("state", state, ctx);
  }

  async _open() {
    const run = (this._run = (this._run || 0) + 1);
    const { getToken } = this.options;
    const expiresAt = this._token && tokenExpiresAtMs(this._token);
    if (getToken && (!this._token || (expiresAt && expiresAt <= Date.now()))) {
      let err;
      try {
        this._token = await getToken();
      } catch (e) {
        err = e;
      }
      if (this._stopped || run !== this._run) return; // closed or reopened meanwhile
      if (err) return this._retry(0, `getToken failed: ${err}`);
    }
    const url = this._token
      ? `${this.url}${this.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(this._token)}`
      : this.url;
    let ws;
    try {
      ws = new this._WebSocket(url);
    } catch (err) {
      return this._retry(0, String(err));
    }
    this._ws = ws;
    this._armPing(this.options.pingTimeoutMs, true);
    ws.onopen = () => ws === this._ws && this._onOpen();
    ws.onmessage = (e) => ws === this._ws && this._onFrame(e.data);
    ws.onclose = (e) => ws === this._ws && this._onClose(e.code, e.reason);
    // An error ends it (1006); Node 20 sends no close after a failed connect.
    ws.onerror = () => ws === this._ws && this._onClose(1006, "");
  }

  _onOpen() {
    this._attempt = 0; // reset on connect
    this._lastFrameAt = Date.now();
    this._ready = true;
    // Resubscribe first, each from its last delivered position.
    for (const sub of this._subs.values()) this._sendSubscribe(sub);
    for (const [id, entry] of this._pending) if (!entry.sent) this._sendCommand(id, entry);
    this._armPing(this.options.pingIntervalMs);
    this._armRefresh();
    this._setState("connected");
  }

  _onClose(code, reason) {
    this._lost();
    if (this._stopped) return;
    const action = closeAction(code, !!this.options.getToken);
    if (action === "stop") {
      this._stopped = true;
      this._fail(this._pending, "disconnected");
      return this._setState("disconnected", { code, reason });
    }
    if (action === "token") this._token = null;
    this._retry(code, reason);
  }

  _retry(code, reason) {
    const o = this.options;
    const delayMs = backoffDelay(this._attempt++, o.minReconnectDelayMs, o.maxReconnectDelayMs);
    this._timers.reconnect = setTimeout(() => this._open(), delayMs);
    // Announced at every attempt, with why and for how long.
    this._setState("connecting", { code, reason, delayMs }, true);
  }

  // The socket is gone: subscriptions wait for the next one; what was sent and not
  // answered fails (it may or may not have happened).
  _lost() {
    for (const timer of Object.values(this._timers)) clearTimeout(timer);
    this._timers = {};
    this._ws = null;
    this._ready = false;
    this._subscribing.clear();
    for (const sub of this._subs.values()) {
      clearTimeout(sub._retry);
      sub.state = "subscribing";
    }
    const sent = new Map([...this._pending].filter(([, entry]) => entry.sent));
    this._fail(sent, "disconnected");
  }

  // -- liveness: a ping when idle; when probing, a frame (or the open) is due in delayMs

  _armPing(delayMs, probing = false) {
    clearTimeout(this._timers.ping);
    this._probing = probing;
    this._heard = false;
    this._timers.ping = setTimeout(() => this._checkAlive(), delayMs);
  }

  _checkAlive() {
    const { pingIntervalMs, pingTimeoutMs } = this.options;
    if (!this._probing) {
      const idleMs = Date.now() - this._lastFrameAt;
      if (idleMs < pingIntervalMs) return this._armPing(pingIntervalMs - idleMs);
      this._send({ op: "ping" });
      return this._armPing(pingTimeoutMs, true);
    }
    if (this._heard) return this._armPing(pingIntervalMs);
    // Closing a dead socket can take minutes: stop waiting now.
    const ws = this._ws;
    this._onClose(1006, "timed out");
    try {
      ws.close();
    } catch {}
  }

  // -- tokens: refreshed before they run out; after a 4001, a new one on reconnect

  _armRefresh() {
    const expiresAt = this._token && tokenExpiresAtMs(this._token);
    if (!expiresAt || !this.options.getToken) return;
    const leftMs = expiresAt - Date.now();
    const delayMs = Math.max(1000, leftMs - Math.min(30000, leftMs / 2));
    this._timers.refresh = setTimeout(async () => {
      try {
        this._token = await this.options.getToken();
        await this._command({ op: "refresh", token: this._token });
        this._armRefresh();
      } catch {
        // Not refreshed: 4001 comes, and the reconnect gets a new token.
      }
    }, delayMs);
  }

  // -- frames

  _send(command) {
    this._ws.send(JSON.stringify(command));
  }

  _onFrame(text) {
    this._lastFrameAt = Date.now();
    this._heard = true;
    let ev;
    try {
      ev = JSON.parse(text);
    } catch {
      return;
    }
    const sub = this._subs.get(ev.channel);
    if (ev.type === "message") {
      if (sub?.state === "subscribed") this._deliver(sub, ev);
    } else if (ev.type === "join" || ev.type === "leave") {
      if (sub?.state === "subscribed") sub._emit(ev.type, ev);
    } else if (this._subscribing.has(ev.id)) {
      const [asked, since] = this._subscribing.get(ev.id);
      this._subscribing.delete(ev.id);
      if (this._subs.get(asked.channel) === asked) this._onSubscribeReply(asked, since, ev);
    } else if (this._pending.has(ev.id)) {
      const entry = this._pending.get(ev.id);
      this._pending.delete(ev.id);
      clearTimeout(entry.timer);
      if (ev.type === "error") entry.reject(new FeedsError(ev.code, ev.message));
      else entry.resolve(ev);
    } else if (ev.type === "error") {
      this._emit("error", new FeedsError(ev.code, ev.message));
    }
  }

  // -- subscriptions

  _sendSubscribe(sub) {
    const id = this._nextId++;
    const since = sub.position;
    this._subscribing.set(id, [sub, since]);
    this._send({ op: "subscribe", channel: sub.channel, since: since?.offset, epoch: since?.epoch, id });
  }

  _onSubscribeReply(sub, since, ev) {
    if (ev.type === "subscribed") {
      sub.position = positionAfterSubscribed(since, ev);
      sub.state = "subscribed";
      sub._attempt = 0;
      this._store(sub);
      const { channel, offset, epoch, recovered, client } = ev;
      const wasRecovering = since != null;
      sub._emit("subscribed", {
        channel, offset, epoch, recovered, wasRecovering, client, since: since ? since.offset : null,
      });
    } else if (TRANSIENT.has(ev.code)) {
      const o = this.options;
      const delayMs = backoffDelay(sub._attempt++, o.minReconnectDelayMs, o.maxReconnectDelayMs);
      sub._retry = setTimeout(() => this._ready && this._sendSubscribe(sub), delayMs);
    } else {
      this._forget(sub);
      sub._emit("error", new FeedsError(ev.code, ev.message));
    }
  }

  _deliver(sub, msg) {
    const position = nextPosition(sub.position, msg);
    if (!position) return;
    sub.position = position;
    this._store(sub);
    sub._emit("message", msg);
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    const onServer = sub.state === "subscribed" || [...this._subscribing.values()].some(([s]) => s === sub);
    this._forget(sub);
    // Commands run in order, so this follows a subscribe still in flight.
    if (onServer && this._ready) {
      this._command({ op: "unsubscribe", channel: sub.channel }).catch(() => {});
    }
  }

  _forget(sub) {
    clearTimeout(sub._retry);
    sub.state = "unsubscribed";
    this._subs.delete(sub.channel);
    try {
      this.options.storage?.removeItem(this.options.storagePrefix + sub.channel);
    } catch {} // storage refused (quota, private mode): kept in memory
  }

  _store(sub) {
    try {
      this.options.storage?.setItem(this.options.storagePrefix + sub.channel, JSON.stringify(sub.position));
    } catch {}
  }

  _load(channel) {
    try {
      const position = JSON.parse(this.options.storage?.getItem(this.options.storagePrefix + channel));
      return Number.isInteger(position?.offset) && typeof position.epoch === "string" ? position : null;
    } catch {
      return null;
    }
  }

  // -- commands and their replies

  _command(fields) {
    return new Promise((resolve, reject) => {
      if (this._stopped) return reject(new FeedsError("closed"));
      const id = this._nextId++;
      const entry = { frame: { ...fields, id }, sent: false, resolve, reject };
      entry.timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new FeedsError("timeout"));
      }, this.options.commandTimeoutMs);
      this._pending.set(id, entry);
      if (this._ready) this._sendCommand(id, entry);
    });
  }

  _sendCommand(id, entry) {
    entry.sent = true;
    this._send(entry.frame);
  }

  _fail(entries, code) {
    for (const [id, entry] of entries) {
      clearTimeout(entry.timer);
      this._pending.delete(id);
      entry.reject(new FeedsError(code));
    }
  }
}
