// Node `ws` against the edge's /echo: text, binary, a ping that must get a pong with
// its payload, 200 messages in order, and a clean close. Exits 0 when every echo
// matches. A `wss://` URL is checked against the CA in $RINGLINE_CA.
const fs = require('fs');
const WebSocket = require('ws');
const url = process.argv[2];
const ws = new WebSocket(url, url.startsWith('wss://') ? { ca: fs.readFileSync(process.env.RINGLINE_CA) } : {});
const fail = (m) => { console.error('node ws:', m); process.exit(1); };
setTimeout(() => fail('timed out'), 20000);
const expected = [];
const PING = 'ping from node';
ws.on('open', () => {
  // With compression on in the edge (the tests say so), it must have been agreed.
  const deflate = String(ws.extensions).includes('permessage-deflate');
  if (deflate !== Boolean(process.env.RINGLINE_EXPECT_DEFLATE)) fail(`extensions: ${ws.extensions}`);
  ws.ping(PING);
  expected.push('héllo from node');
  ws.send('héllo from node');
  const blob = Buffer.alloc(70000, 7);
  expected.push(blob);
  ws.send(blob);
  for (let i = 0; i < 200; i++) { expected.push(`m${i}`); ws.send(`m${i}`); }
});
// Exactly one pong, carrying the ping's payload.
let pongs = 0;
ws.on('pong', (data) => {
  pongs += 1;
  if (data.toString() !== PING) fail(`pong with ${JSON.stringify(data.toString())}, wanted ${PING}`);
  if (pongs > 1) fail('a second pong');
});
ws.on('message', (data, isBinary) => {
  const want = expected.shift();
  const ok = Buffer.isBuffer(want) ? isBinary && Buffer.compare(data, want) === 0
                                   : !isBinary && data.toString() === want;
  if (!ok) fail(`unexpected message (wanted ${String(want).slice(0, 20)})`);
  if (expected.length === 0) ws.close(1000, 'done');
});
ws.on('close', (code) => {
  if (code !== 1000) fail(`closed with ${code}`);
  if (pongs !== 1) fail('no pong');
  console.log('node ws: ok');
  process.exit(0);
});
ws.on('error', (e) => fail(e.message));
