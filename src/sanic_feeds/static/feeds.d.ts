// Types of feeds.js, the client of a sanic-feeds server's /ws endpoint (docs/protocol.md).

export type State = "connecting" | "connected" | "disconnected";
export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

/** A place in a channel's history: the last offset seen, and the epoch it belongs to. */
export interface Position {
  offset: number;
  epoch: string;
}

export interface FeedsOptions {
  /** Called for the first connection and again after a 4001 close (token expired) or when
   * the token's `exp` has passed; its token is sent as `?token=`. Without it, a 4001 close
   * is final. A JWT with `exp` is also refreshed on the open connection before it runs out. */
  getToken?: () => string | Promise<string>;
  /** A token for the first connection. */
  token?: string;
  /** Reconnect delays: full jitter, from 500 ms, doubling up to 20000 ms; reset on connect. */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** Idle this long (default 15000 ms), the client sends a ping; no frame within
   * pingTimeoutMs (default 10000 ms) after it, or no open within pingTimeoutMs of
   * connecting, and the connection is dropped (1006, "timed out") and renewed. */
  pingIntervalMs?: number;
  pingTimeoutMs?: number;
  /** publish, presence and history reject with code "timeout" after this (default 10000 ms),
   * including time spent waiting for a connection. */
  commandTimeoutMs?: number;
  /** Where positions are kept (e.g. `sessionStorage`), so that a reloaded page recovers. */
  storage?: Pick<Storage, "getItem" | "setItem" | "removeItem"> | null;
  /** Prefix of the storage keys (default "feeds:"); one per client sharing a storage. */
  storagePrefix?: string;
  /** The WebSocket class (default: the global one; Node 20 needs --experimental-websocket). */
  WebSocket?: new (url: string) => WebSocket;
}

export interface StateContext {
  /** The close code that ended the last connection (1006: dropped without one). */
  code?: number;
  reason?: string;
  /** With "connecting": how long until the next attempt. */
  delayMs?: number;
}

export interface MessageEvent<T = unknown> {
  type: "message";
  channel: string;
  offset: number;
  epoch: string;
  data: T;
  /** The publishing connection's id, or null (HTTP API, backend). */
  client: string | null;
  /** Milliseconds since the Unix epoch. */
  ts: number;
}

export interface JoinEvent {
  type: "join";
  channel: string;
  client: string;
  info: Record<string, unknown>;
}

export interface LeaveEvent {
  type: "leave";
  channel: string;
  client: string;
}

export interface SubscribedEvent {
  channel: string;
  /** The channel's last offset when subscribed; live messages follow it. With `recovered`
   * false after the broker lost the channel's history, 0: the new epoch follows whole. */
  offset: number;
  epoch: string;
  /** True: every message after `since` follows, none lost. False: what was published
   * since `since` is lost to this client (only meaningful when `wasRecovering`). */
  recovered: boolean;
  /** True when the client asked to continue from a position (a resubscription after a
   * reconnect, a stored position, or `since`); false on a first subscription. */
  wasRecovering: boolean;
  /** The offset asked to continue from, or null: `offset - since` messages are replayed
   * when recovered. */
  since: number | null;
  /** This connection's own id, when the server sends it. */
  client?: string;
}

/** Codes of docs/protocol.md ("forbidden", "unavailable", ...) or the client's own:
 * "timeout", "disconnected" (the connection ended before the reply: it may have
 * happened), "closed" (the client is closed). */
export class FeedsError extends Error {
  readonly code: string;
}

export class Subscription {
  readonly client: FeedsClient;
  readonly channel: string;
  readonly state: SubscriptionState;
  /** The last message delivered, or null before the first. */
  readonly position: Position | null;
  on(event: "subscribed", fn: (ev: SubscribedEvent) => void): this;
  on(event: "message", fn: (msg: MessageEvent) => void): this;
  on(event: "join", fn: (ev: JoinEvent) => void): this;
  on(event: "leave", fn: (ev: LeaveEvent) => void): this;
  /** The server refused the subscription for good (forbidden, bad_channel, ...): it is over. */
  on(event: "error", fn: (err: FeedsError) => void): this;
  off(event: string, fn: (...args: any[]) => void): this;
  unsubscribe(): void;
}

export class FeedsClient {
  /** `url` is the server's /ws address (ws://, wss://, or http(s):// which is turned into
   * ws(s)://). The client connects by itself once the current task has run. */
  constructor(url: string, options?: FeedsOptions);
  readonly url: string;
  readonly state: State;
  on(event: "state", fn: (state: State, ctx: StateContext) => void): this;
  /** An error event of the server that answers no command of this client. */
  on(event: "error", fn: (err: FeedsError) => void): this;
  off(event: string, fn: (...args: any[]) => void): this;
  /** Subscribe from `since`/`epoch` when given, else from the stored position, else from
   * now. Throws when the channel is already subscribed. */
  subscribe(channel: string, from?: { since?: number; epoch?: string }): Subscription;
  publish(channel: string, data: unknown): Promise<Position>;
  presence(channel: string): Promise<Record<string, Record<string, unknown>>>;
  history(
    channel: string,
    options?: { since?: number; limit?: number },
  ): Promise<{ messages: MessageEvent[]; offset: number; epoch: string }>;
  /** Connect again after close() or a final close; subscriptions resume where they were. */
  connect(): void;
  /** Close the connection and stop reconnecting; pending commands reject with "closed". */
  close(): void;
}

/** The pure rules, exported for tests. */
export function backoffDelay(attempt: number, minMs: number, maxMs: number, random?: () => number): number;
export function closeAction(code: number, hasGetToken: boolean): "retry" | "token" | "stop";
export function nextPosition(position: Position | null, msg: Position): Position | null;
export function positionAfterSubscribed(since: Position | null, ev: SubscribedEvent): Position;
export function tokenExpiresAtMs(token: string): number | null;
