// The library against the real edges and stores (run by edge/tests/js_client.rs, which
// starts 2 stores, 2 edges and HAProxy and sets RINGLINE_URL to HAProxy's /ws and
// RINGLINE_KILL_PID to one edge's process id). Skipped when run alone.
import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Ringline, Conflict, Forbidden } from "../dist/index.js";
import { binary } from "../dist/binary.js";

const url = process.env.RINGLINE_URL;
const killPid = Number(process.env.RINGLINE_KILL_PID ?? 0);
const skip = url ? false : "RINGLINE_URL is not set (run through cargo test --test js_client)";

const connect = (extra = {}) => new Ringline({ url, WebSocket, storage: null, backoffMinMs: 50, ...extra });

test("snapshot then changes, typed errors, presence", { skip, timeout: 30_000 }, async (t) => {
  const c = connect();
  t.after(() => c.close());
  await c.put("js/{1}/title", "v1");
  const seen = [];
  let resolve;
  const done = new Promise((r) => (resolve = r));
  const sub = c.subscribe("js/{1}/title", {
    onSnapshot: (entries) => seen.push(["snapshot", entries.map((e) => e.value)]),
    onChange: (ch) => {
      seen.push(["change", ch.value]);
      resolve();
    },
  });
  await new Promise((r) => setTimeout(r, 200));
  await c.put("js/{1}/title", "v2");
  await done;
  assert.deepEqual(seen, [["snapshot", ["v1"]], ["change", "v2"]]);
  assert.ok(sub.token, "the change's token is kept");
  const { version } = await c.get("js/{1}/title");
  await assert.rejects(c.put("js/{1}/title", "v3", { ifVersion: version - 1 }), (e) => e instanceof Conflict && e.current === version);
  await assert.rejects(c.get("@presence/x"), Forbidden);
  const room = `room/{js-${Date.now()}}`;
  await c.join(room, { name: "a" });
  assert.equal(await c.count(room), 1);
});

test("the binary form: bytes in and out, snapshot then changes, typed errors, presence", { skip, timeout: 30_000 }, async (t) => {
  const c = connect({ codec: binary });
  t.after(() => c.close());
  const raw = new Uint8Array([0, 255, 1, 254]);
  const { version } = await c.put("bin/{1}/k", raw);
  const got = await c.get("bin/{1}/k");
  assert.deepEqual([...got.value], [...raw]);
  assert.equal(got.version, version);
  const seen = [];
  let resolve;
  const done = new Promise((r) => (resolve = r));
  c.subscribe("bin/{1}/k", {
    onSnapshot: (entries) => seen.push(["snapshot", entries.map((e) => [...e.value])]),
    onChange: (ch) => { seen.push(["change", new TextDecoder().decode(ch.value)]); resolve(); },
  });
  while (seen.length === 0) await new Promise((r) => setTimeout(r, 10));
  await c.put("bin/{1}/k", "text, as UTF-8");
  await done;
  assert.deepEqual(seen, [["snapshot", [[...raw]]], ["change", "text, as UTF-8"]]);
  await assert.rejects(c.put("bin/{1}/k", "x", { ifVersion: 1 }), Conflict);
  const room = `room/{bin-${Date.now()}}`;
  await c.join(room, { name: "b" });
  assert.equal(await c.count(room), 1);
  const page = await c.presence(room);
  assert.equal(page.members[0].metas[0].meta.name, "b");
});

test("200 subscribers through HAProxy get 5,000 sequenced writes exactly once, in order, across an edge SIGKILL", { skip: skip || (killPid ? false : "RINGLINE_KILL_PID is not set"), timeout: 90_000 }, async () => {
  const KEYS = 10;
  const N = 5000;
  const keys = Array.from({ length: KEYS }, (_, i) => `seq/{${i}}`);
  const got = keys.map(() => []);
  const clients = [];
  const subs = [];
  let snapshots = 0;
  for (let i = 0; i < 200; i++) {
    const k = i % KEYS;
    const c = connect();
    clients.push(c);
    const mine = [];
    subs.push({ k, mine });
    c.subscribe(keys[k], {
      onSnapshot: (_, last) => last && snapshots++,
      onChange: (ch) => mine.push([ch.value, ch.version]),
      onReset: () => assert.fail("no reset expected"),
    });
  }
  try {
    while (snapshots < 200) await new Promise((r) => setTimeout(r, 20));
    console.log("# all 200 subscribed");
    // Five writers (each under the edge's per-connection message rate), 4 writes in
    // flight each, paced at 2,500 writes/s in all; each value is its sequence number.
    const writers = Array.from({ length: 5 }, () => connect());
    clients.push(...writers);
    const t0 = Date.now();
    let killedAt;
    let next = 1;
    const lane = async (writer) => {
      while (next <= N) {
        const i = next++;
        const due = t0 + i / 2.5;
        if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
        if (i === Math.floor(N / 5) && !killedAt) {
          killedAt = Date.now();
          process.kill(killPid, "SIGKILL");
        }
        await writer.put(keys[i % KEYS], i);
      }
    };
    await Promise.all(writers.flatMap((w) => [lane(w), lane(w), lane(w), lane(w)]));
    console.log(`# ${N} writes answered in ${Date.now() - t0} ms`);
    const want = keys.map((_, k) => Array.from({ length: N }, (_, j) => j + 1).filter((i) => i % KEYS === k));
    const deadline = Date.now() + 30_000;
    for (const s of subs) {
      while (s.mine.length < want[s.k].length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    }
    const caughtUp = Date.now();
    for (const s of subs) {
      // Twenty writes in flight commit a key's writes in some order: each subscriber
      // must see its key's values exactly once, in the store's order (rising versions).
      assert.equal(s.mine.length, want[s.k].length, `subscriber of ${keys[s.k]}: every write once`);
      assert.deepEqual(s.mine.map(([v]) => v).sort((a, b) => a - b), want[s.k], "no gap, no duplicate");
      assert.ok(s.mine.every(([, ver], i) => i === 0 || ver > s.mine[i - 1][1]), "in order");
      got[s.k].push(s.mine.map(([v]) => v));
    }
    for (const k of keys.keys()) {
      for (const order of got[k]) assert.deepEqual(order, got[k][0], "every subscriber of a key sees one order");
    }
    console.log(`# failover: ${N} writes over ${KEYS} keys to 200 subscribers; edge killed at write ${Math.floor(N / 5)}; all caught up ${caughtUp - killedAt} ms after the kill (${caughtUp - t0} ms in all)`);
  } finally {
    for (const c of clients) c.close();
  }
});
