// The client's pure rules: backoff, close codes, positions, token expiry.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  backoffDelay,
  closeAction,
  nextPosition,
  positionAfterSubscribed,
  tokenExpiresAtMs,
} from "../../src/sanic_feeds/static/feeds.js";

test("backoff: full jitter between 0.5 s and a ceiling that doubles up to 20 s", () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(20000, 500 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, 500, 20000, () => 0), 500);
    assert.equal(backoffDelay(attempt, 500, 20000, () => 0.5), Math.min(20000, 500 + ceiling / 2));
    assert.equal(backoffDelay(attempt, 500, 20000, () => 0.999999) <= 20000, true);
  }
  assert.equal(backoffDelay(0, 500, 20000, () => 0.999999) < 1000, true);
  assert.equal(backoffDelay(3, 500, 20000, () => 0.999999) > 4400, true);
  assert.equal(backoffDelay(1000, 500, 20000, () => 0.999999), 20000);
});

test("backoff: random draws spread over the whole range", () => {
  const delays = Array.from({ length: 2000 }, () => backoffDelay(10, 500, 20000));
  assert.equal(Math.min(...delays) >= 500, true);
  assert.equal(Math.max(...delays) <= 20000, true);
  assert.equal(delays.filter((d) => d < 5000).length > 100, true);
  assert.equal(delays.filter((d) => d > 15000).length > 100, true);
});

test("close codes: 1003, 1008 and 4001 without getToken are final", () => {
  assert.equal(closeAction(1003, false), "stop");
  assert.equal(closeAction(1008, true), "stop");
  assert.equal(closeAction(4001, false), "stop");
  assert.equal(closeAction(4001, true), "token");
  for (const code of [1000, 1001, 1006, 1009, 1011, 1013]) assert.equal(closeAction(code, false), "retry");
});

test("positions: a message at or before the position in its epoch is a duplicate", () => {
  const at = { offset: 5, epoch: "e1" };
  assert.equal(nextPosition(at, { offset: 5, epoch: "e1" }), null);
  assert.equal(nextPosition(at, { offset: 3, epoch: "e1" }), null);
  assert.deepEqual(nextPosition(at, { offset: 6, epoch: "e1" }), { offset: 6, epoch: "e1" });
  assert.deepEqual(nextPosition(at, { offset: 1, epoch: "e2" }), { offset: 1, epoch: "e2" });
  assert.deepEqual(nextPosition(null, { offset: 9, epoch: "e1" }), { offset: 9, epoch: "e1" });
});

test("positions: recovered keeps the position asked from, not recovered jumps to now", () => {
  const since = { offset: 3, epoch: "e1" };
  const reply = { offset: 7, epoch: "e1", recovered: true };
  assert.deepEqual(positionAfterSubscribed(since, reply), since);
  assert.deepEqual(positionAfterSubscribed(since, { ...reply, recovered: false }), { offset: 7, epoch: "e1" });
  assert.deepEqual(positionAfterSubscribed(null, { ...reply, recovered: false }), { offset: 7, epoch: "e1" });
});

test("tokens: exp of a JWT, in ms; null for anything else", () => {
  const payload = Buffer.from(JSON.stringify({ sub: "ann", exp: 1700000000 })).toString("base64url");
  assert.equal(tokenExpiresAtMs(`h.${payload}.s`), 1700000000000);
  const noExp = Buffer.from(JSON.stringify({ sub: "ann" })).toString("base64url");
  assert.equal(tokenExpiresAtMs(`h.${noExp}.s`), null);
  assert.equal(tokenExpiresAtMs("opaque"), null);
  assert.equal(tokenExpiresAtMs("a.%%%.c"), null);
});
