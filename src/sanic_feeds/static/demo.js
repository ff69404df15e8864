// The demo page: one channel at a time over feeds.js, with presence, the connection's
// state, a publish box, and a note for every recovery. No framework: plain DOM.
import { FeedsClient } from "./feeds.js";

const $ = (id) => document.getElementById(id);
const wsUrl = new URL("ws", document.baseURI).href.replace(/^http/, "ws");
const client = new FeedsClient(wsUrl, { storage: sessionStorage });

let sub = null; // the channel shown
let me = null; // this connection's id, when the server says it
let shown = 0; // messages in the list
let connected = false;
const mine = new Set(); // offsets of what this page published, to learn its own id

// -- connection state

const STATE_TEXT = { connecting: "connecting…", connected: "connected", disconnected: "disconnected" };

client.on("state", (state, ctx) => {
  $("state").dataset.state = state;
  let text = STATE_TEXT[state];
  if (state === "connecting" && ctx.delayMs != null) {
    text = `reconnecting in ${(ctx.delayMs / 1000).toFixed(1)} s`;
  }
  if (ctx.code) text += ` · closed ${ctx.code}${ctx.reason ? ` (${ctx.reason})` : ""}`;
  $("state-text").textContent = text;
  if (state !== "connected" && connected) note(`Connection lost${ctx.code ? ` (${ctx.code})` : ""}`, "warn");
  connected = state === "connected";
});

// -- the channel picker

function recent() {
  try {
    return JSON.parse(localStorage.getItem("feeds-demo:recent")) || [];
  } catch {
    return [];
  }
}

function remember(channel) {
  const list = [channel, ...recent().filter((c) => c !== channel)].slice(0, 8);
  try {
    localStorage.setItem("feeds-demo:recent", JSON.stringify(list));
  } catch {}
  $("recent").replaceChildren(...list.map((c) => new Option(c)));
  $("channels").replaceChildren(
    ...list.map((c) => {
      const chip = el("button", c === channel ? "chip on" : "chip", c);
      chip.type = "button";
      chip.onclick = () => show(c);
      return chip;
    }),
  );
}

$("pick").addEventListener("submit", (e) => {
  e.preventDefault();
  show($("channel").value.trim());
  $("channel").value = "";
});

window.addEventListener("hashchange", () => show(channelFromHash()));

function channelFromHash() {
  return decodeURIComponent(location.hash.slice(1)) || "lobby";
}

function show(channel) {
  if (!channel || sub?.channel === channel) return;
  if (sub) sub.unsubscribe();
  if (decodeURIComponent(location.hash.slice(1)) !== channel) location.hash = encodeURIComponent(channel);
  document.title = `#${channel} · sanic-feeds`;
  $("title").textContent = `# ${channel}`;
  $("messages").replaceChildren();
  $("presence").replaceChildren();
  shown = 0;
  remember(channel);
  sub = client.subscribe(channel);
  sub.on("subscribed", (ev) => onSubscribed(sub, ev));
  sub.on("message", (msg) => {
    if (mine.delete(msg.offset)) itsMe(msg.client);
    $("messages").append(messageRow(msg));
    shown++;
    position(msg);
    scrollDown();
  });
  sub.on("join", (ev) => addPerson(ev.client));
  sub.on("leave", (ev) => removePerson(ev.client));
  sub.on("error", (err) => note(`Refused: ${err.code}`, "bad"));
}

// -- subscriptions and recovery

async function onSubscribed(s, ev) {
  if (ev.client) me = ev.client;
  position(ev);
  if (!ev.wasRecovering) {
    note(`Subscribed at offset ${ev.offset}`);
  } else if (ev.recovered) {
    const n = ev.offset - ev.since;
    note(n ? `Recovered ${n} message${n === 1 ? "" : "s"}` : "Recovered: nothing was missed", "good");
  } else {
    note(`Messages after #${ev.since} could not be recovered: starting from #${ev.offset}`, "bad");
  }
  // What came before this page: the channel's recent history, above everything else.
  if (shown === 0 && $("messages").querySelector(".earlier") === null) {
    const upTo = ev.wasRecovering && ev.recovered ? ev.since : ev.offset;
    earlier(s, upTo).catch(() => {});
  }
  presence(s).catch(() => {});
}

async function earlier(s, upTo) {
  if (upTo <= 0) return;
  const { messages } = await s.client.history(s.channel, { since: Math.max(0, upTo - 20), limit: 20 });
  const rows = messages.filter((m) => m.offset <= upTo).map((m) => messageRow(m, "earlier"));
  if (sub === s && rows.length) $("messages").prepend(...rows);
}

// -- presence

async function presence(s) {
  const clients = await s.client.presence(s.channel);
  if (sub !== s) return;
  $("presence").replaceChildren();
  for (const id of Object.keys(clients)) addPerson(id);
}

function addPerson(id) {
  if ($("presence").querySelector(`[data-client="${id}"]`)) return;
  const row = el("li", "person");
  row.dataset.client = id;
  row.append(avatar(id), el("span", "who", id));
  if (id === me) row.append(el("span", "tag", "you"));
  $("presence").append(row);
  count();
}

function itsMe(id) {
  if (!id || me === id) return;
  me = id;
  for (const row of $("presence").children) if (row.dataset.client === me) row.append(el("span", "tag", "you"));
  for (const row of $("messages").querySelectorAll(`.msg[data-client="${me}"] .from`)) row.textContent = "you";
}

function removePerson(id) {
  $("presence").querySelector(`[data-client="${id}"]`)?.remove();
  count();
}

function count() {
  $("presence-count").textContent = $("presence").children.length;
}

// -- publishing

$("compose").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (!text.trim() || !sub) return;
  let data = text;
  try {
    data = JSON.parse(text);
  } catch {}
  $("compose-error").textContent = "";
  $("text").value = "";
  try {
    const { offset } = await client.publish(sub.channel, data);
    const row = $("messages").querySelector(`.msg[data-offset="${offset}"]`);
    if (row) itsMe(row.dataset.client);
    else mine.add(offset);
  } catch (err) {
    $("compose-error").textContent = `Not published: ${err.code}`;
    $("text").value = text;
  }
});

// -- rendering

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = text;
  return node;
}

function avatar(id) {
  const dot = el("span", id ? "avatar" : "avatar api", id ? id.slice(0, 2) : "api");
  let hue = 0;
  for (const ch of id || "") hue = (hue * 31 + ch.charCodeAt(0)) % 360;
  if (id) dot.style.background = `hsl(${hue} 60% 52%)`;
  return dot;
}

function messageRow(msg, cls = "") {
  const row = el("li", `msg ${cls}`.trim());
  row.dataset.offset = msg.offset;
  if (msg.client) row.dataset.client = msg.client;
  const time = new Date(msg.ts).toLocaleTimeString([], { hour12: false });
  const who = msg.client == null ? "server" : msg.client === me ? "you" : msg.client.slice(0, 8);
  const body = typeof msg.data === "string" ? msg.data : JSON.stringify(msg.data);
  row.append(
    el("span", "offset", `#${msg.offset}`),
    avatar(msg.client),
    el("span", "from", who),
    el("span", typeof msg.data === "string" ? "data" : "data json", body),
    el("time", "ts", time),
  );
  return row;
}

function note(text, kind = "") {
  $("messages").append(el("li", `note ${kind}`.trim(), text));
  scrollDown();
}

function position(p) {
  $("position").textContent = `offset ${p.offset} · epoch ${p.epoch}`;
}

function scrollDown() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

// join and leave keep the list live; a crashed instance's clients leave no "leave", and its
// entries vanish from the server's presence within seconds: ask again now and then.
setInterval(() => sub?.state === "subscribed" && presence(sub).catch(() => {}), 5000);

// A handle for the browser tests and the curious: window.feedsDemo.client.
window.feedsDemo = { client, get sub() { return sub; } };
show(channelFromHash());
