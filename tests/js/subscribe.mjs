// node [--experimental-websocket] tests/js/subscribe.mjs WS_URL CHANNEL...
// A FeedsClient on Node's own WebSocket, no browser: prints what it sees as JSON lines
// ({"kind": "state" | "subscribed" | "message", ...}) until its stdin closes.
import { FeedsClient } from "../../src/sanic_feeds/static/feeds.js";

const [url, ...channels] = process.argv.slice(2);
const client = new FeedsClient(url, { maxReconnectDelayMs: 2000 });
const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

client.on("state", (state, ctx) => print({ kind: "state", state, ...ctx }));
for (const channel of channels) {
  const sub = client.subscribe(channel);
  sub.on("subscribed", (ev) => print({ kind: "subscribed", ...ev }));
  sub.on("message", (msg) => print({ kind: "message", ...msg }));
}
process.stdin.on("end", () => client.close());
process.stdin.resume();
