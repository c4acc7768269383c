// Node `ws` against the edge's /ws client protocol (ringline.v1.json): subscribe to a
// prefix, write three keys under it (and one outside) from a second connection, and
// receive exactly the three changes, in write order; a ping on it must get a pong with
// its payload. Exits 0 when every check holds.
const WebSocket = require('ws');
const url = process.argv[2];
const fail = (m) => { console.error('node ws /ws:', m); process.exit(1); };
setTimeout(() => fail('timed out'), 20000);
// Every message is queued as it arrives; `next` takes them in order.
const open = () => new Promise((resolve, reject) => {
  const ws = new WebSocket(url, 'ringline.v1.json');
  ws.queue = [];
  ws.waiting = [];
  ws.on('message', (d) => {
    const m = JSON.parse(d.toString());
    if (ws.waiting.length) ws.waiting.shift()(m); else ws.queue.push(m);
  });
  ws.on('open', () => {
    // With compression on in the edge (the tests say so), it must have been agreed.
    const deflate = String(ws.extensions).includes('permessage-deflate');
    if (deflate !== Boolean(process.env.RINGLINE_EXPECT_DEFLATE)) fail(`extensions: ${ws.extensions}`);
    resolve(ws);
  });
  ws.on('error', reject);
});
const next = (ws) => new Promise((resolve) => {
  if (ws.queue.length) resolve(ws.queue.shift()); else ws.waiting.push(resolve);
});
// Ping `ws`; resolves on the pong, fails on a pong with another payload (a missing
// pong ends in the time-out above).
const pinged = (ws, payload) => new Promise((resolve) => {
  ws.once('pong', (d) => {
    if (d.toString() !== payload) fail(`pong with ${JSON.stringify(d.toString())}, wanted ${payload}`);
    resolve();
  });
  ws.ping(payload);
});
(async () => {
  const a = await open();
  const w = await open();
  if (a.protocol !== 'ringline.v1.json') fail(`subprotocol ${a.protocol}`);
  a.send(JSON.stringify({ op: 'sub', id: 1, prefix: 'node/{n}/' }));
  const snap = await next(a);
  if (snap.op !== 'snapshot' || snap.more) fail(`snapshot: ${JSON.stringify(snap)}`);
  await pinged(a, 'ping on /ws');
  const keys = ['node/{n}/a', 'elsewhere', 'node/{n}/b', 'node/{n}/c'];
  for (const [i, key] of keys.entries()) {
    w.send(JSON.stringify({ op: 'put', id: i, key, value: { i } }));
    const ok = await next(w);
    if (ok.op !== 'ok') fail(`put: ${JSON.stringify(ok)}`);
  }
  for (const key of ['node/{n}/a', 'node/{n}/b', 'node/{n}/c']) {
    const ch = await next(a);
    if (ch.op !== 'change' || ch.key !== key) fail(`change: ${JSON.stringify(ch)}`);
  }
  a.on('close', (code) => {
    if (code !== 1000) fail(`closed with ${code}`);
    w.close(1000);
    console.log('node ws /ws: ok');
    process.exit(0);
  });
  a.close(1000, 'done');
})().catch((e) => fail(String(e)));
