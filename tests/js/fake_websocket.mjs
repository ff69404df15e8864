// A WebSocket stand-in driven by the test: it records what the client sends, and the test
// plays the server (open, frames, close). Also a Map-backed Storage and a microtask flush.

export class FakeWebSocket {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static get last() {
    return FakeWebSocket.instances.at(-1);
  }

  // -- what the client calls

  send(text) {
    if (this.closedWith !== null) throw new Error("send after close");
    this.sent.push(JSON.parse(text));
  }

  close(code = 1005) {
    this.closedWith = code;
  }

  // -- what the test calls, as the server

  open() {
    this.onopen?.({});
  }

  receive(event) {
    this.onmessage?.({ data: JSON.stringify(event) });
  }

  /** A failed connection, as Node 20's WebSocket reports it: an error and no close. */
  fail() {
    this.onerror?.({});
  }

  serverClose(code, reason = "") {
    this.closedWith ??= code;
    this.onclose?.({ code, reason });
  }

  /** The commands sent with `op`, in order. */
  commands(op) {
    return this.sent.filter((command) => command.op === op);
  }

  /** Answer the last `subscribe` for `channel` as the server would. */
  subscribed(channel, offset, epoch, recovered = false) {
    const command = this.commands("subscribe").filter((c) => c.channel === channel).at(-1);
    this.receive({ type: "subscribed", channel, offset, epoch, recovered, id: command.id });
    return command;
  }

  message(channel, offset, epoch, data = offset) {
    this.receive({ type: "message", channel, offset, epoch, data, client: null, ts: 0 });
  }
}

export class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  removeItem(key) {
    this.items.delete(key);
  }
}

/** Let queued microtasks and promise callbacks run. */
export async function flush() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}
