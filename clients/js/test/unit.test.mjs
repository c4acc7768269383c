// The reconnect, resume and token logic against a scripted fake server: every
// WebSocket the client opens is a FakeSocket the test drives (open, messages, close).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Ringline, Conflict, Closed, QueueFull, Forbidden } from "../dist/index.js";

/** The sockets the client opened, newest last. */
function fakes() {
  const opened = [];
  class FakeSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      opened.push(this);
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code = 1000, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    // Test side.
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    say(msg) {
      this.onmessage?.({ data: JSON.stringify(msg) });
    }
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { FakeSocket, opened };
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(pred, what) {
  for (let i = 0; i < 200; i++) {
    if (pred()) return;
    await tick(5);
  }
  assert.fail(`timed out waiting for ${what}`);
}

function client(extra = {}) {
  const { FakeSocket, opened } = fakes();
  const c = new Ringline({ urls: ["ws://a/ws", "ws://b/ws"], WebSocket: FakeSocket, backoffMinMs: 10, storage: null, ...extra });
  return { c, opened };
}

test("subscriptions resume from their last token and unanswered calls are sent again with the same msg_id", async () => {
  const { c, opened } = client();
  const changes = [];
  const sub = c.subscribe("k", { onChange: (ch) => changes.push(ch.value) });
  const put = c.put("k", { n: 1 });
  const s1 = opened[0];
  assert.equal(s1.url, "ws://a/ws");
  assert.equal(s1.protocols, "ringline.v2.json");
  s1.open();
  assert.deepEqual(s1.sent.map((m) => m.op), ["sub", "put"]);
  const msgId = s1.sent[1].msg_id;
  assert.ok(msgId, "a write always carries a msg_id");
  s1.say({ op: "snapshot", id: sub.id, entries: [], token: "t0" });
  s1.say({ op: "change", id: sub.id, key: "k", value: 7, version: 2, token: "t1" });
  assert.deepEqual(changes, [7]);
  assert.equal(sub.token, "t1");
  // The compact form the edge sends to ringline.v2.json.
  s1.say({ c: sub.id, k: "k", v: 8, n: 3, t: "t1b" });
  assert.deepEqual(changes, [7, 8]);
  assert.equal(sub.token, "t1b");
  s1.drop(1006);
  await until(() => opened.length === 2, "a reconnect");
  const s2 = opened[1];
  assert.equal(s2.url, "ws://b/ws", "the next URL");
  s2.open();
  assert.deepEqual(s2.sent[0], { op: "sub", id: sub.id, key: "k", from: "t1b" });
  assert.equal(s2.sent[1].msg_id, msgId, "the same write, the same msg_id");
  s2.say({ op: "ok", id: s2.sent[1].id, version: 3, token: "w" });
  assert.deepEqual(await put, { version: 3, token: "w" });
  c.close();
});

test("a reset is surfaced and a fresh snapshot follows; errors are typed", async () => {
  const { c, opened } = client();
  const seen = [];
  const sub = c.subscribe({ prefix: "p/" }, {
    onReset: (why) => seen.push(`reset:${why}`),
    onSnapshot: (entries, last) => seen.push(`snapshot:${entries.length}:${last}`),
  });
  opened[0].open();
  opened[0].say({ op: "reset", id: sub.id, reason: "log truncated" });
  opened[0].say({ op: "snapshot", id: sub.id, entries: [{ key: "p/a", value: 1, version: 1 }], token: "t" });
  assert.deepEqual(seen, ["reset:log truncated", "snapshot:1:true"]);
  const put = c.put("k", 1, { ifVersion: 4 });
  const id = opened[0].sent.at(-1).id;
  opened[0].say({ op: "error", id, code: "conflict", message: "x", version: 9 });
  await assert.rejects(put, (e) => e instanceof Conflict && e.current === 9);
  const get = c.get("secret");
  opened[0].say({ op: "error", id: opened[0].sent.at(-1).id, code: "forbidden", message: "no" });
  await assert.rejects(get, Forbidden);
  c.close();
});

test("a draining edge (1001) is left at once; a terminal code stops the client", async () => {
  const { c, opened } = client({ backoffMinMs: 5000 });
  const events = [];
  c.on("closed", (why) => events.push(why));
  opened[0].open();
  opened[0].drop(1001, "draining");
  await until(() => opened.length === 2, "an immediate reconnect despite a long backoff");
  opened[1].open();
  const pending = c.get("k");
  opened[1].drop(1002, "protocol error");
  await assert.rejects(pending, Closed);
  assert.equal(events.length, 1);
  await assert.rejects(c.get("k"), Closed);
});

test("a refused token is replaced through getToken before reconnecting", async () => {
  let asked = 0;
  const { c, opened } = client({ token: "old", getToken: async () => (asked++, "new") });
  opened[0].open();
  assert.deepEqual(opened[0].sent[0].token, "old");
  opened[0].drop(4419, "token expired");
  await until(() => opened.length === 2, "a reconnect");
  opened[1].open();
  assert.equal(asked, 1);
  assert.equal(opened[1].sent[0].op, "auth");
  assert.equal(opened[1].sent[0].token, "new");
  c.close();
});

test("calls made while offline are bounded", async () => {
  const { c, opened } = client({ queueLimit: 2 });
  const a = c.put("a", 1);
  const b = c.put("b", 2);
  await assert.rejects(c.put("c", 3), QueueFull);
  opened[0].open();
  for (const m of opened[0].sent) opened[0].say({ op: "ok", id: m.id, version: 1, token: "t" });
  await Promise.all([a, b]);
  c.close();
});

test("a silent connection is probed, then replaced", async () => {
  const { c, opened } = client({ heartbeatMs: 60 });
  opened[0].open();
  await until(() => opened[0].sent.some((m) => m.op === "unsub"), "a probe");
  await until(() => opened.length === 2, "the silent connection replaced");
  c.close();
});

test("a persisted subscription resumes from its stored token after a reload", async () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
  const first = client({ storage });
  const sub = first.c.subscribe("k", {}, { persist: "page" });
  first.opened[0].open();
  first.opened[0].say({ op: "change", id: sub.id, key: "k", value: 1, version: 1, token: "t9" });
  assert.equal(store.get("ringline:page"), "t9");
  first.c.close();
  const again = client({ storage });
  again.c.subscribe("k", {}, { persist: "page" });
  again.opened[0].open();
  assert.equal(again.opened[0].sent[0].from, "t9");
  again.c.close();
});

test("inbox and broadcast deliveries (id 0) reach the inbox handlers", async () => {
  const { c, opened } = client();
  const got = [];
  c.inbox({ onChange: (ch) => got.push([ch.key, ch.value]) });
  opened[0].open();
  opened[0].say({ op: "change", id: 0, key: "@all", value: "hi", pub: true, token: "t" });
  assert.deepEqual(got, [["@all", "hi"]]);
  c.close();
});
