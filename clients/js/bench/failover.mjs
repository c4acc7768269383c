// One process of the SDK failover measurement (`failover --sdk`, benches/src/bin/failover.rs):
// COUNT clients of this library, each subscribed to one of KEYS (comma-separated)
// through URLS (comma-separated: the edge to kill first, then the balancer, which the
// client moves to by itself when its connection drops). Prints "ready" once every
// client has its snapshot; then reads "kill <value>" on stdin (the last value written
// before the kill) and prints "caught <epoch ms>" per client when it first receives a
// value above it (no application code beyond `subscribe`), then its CPU time from the
// kill line to then ("cpu <ms>"), and exits.
import WebSocket from "ws";
import { createInterface } from "node:readline";
import { Ringline } from "../dist/index.js";

const [urls, keys, count] = [process.env.URLS.split(","), process.env.KEYS.split(","), Number(process.env.COUNT)];
let killedAt = Infinity;
let cpuAtKill;
let ready = 0, caught = 0;
const clients = [];
for (let i = 0; i < count; i++) {
  const c = new Ringline({ urls, WebSocket, storage: null });
  clients.push(c);
  let done = false;
  if (process.env.TRACE) {
    const now = () => (performance.timeOrigin + performance.now()).toFixed(1);
    for (const ev of ["disconnected", "connecting", "connected"]) c.on(ev, (why) => console.error(`${now()} ${i} ${ev} ${why ?? ""}`));
  }
  c.subscribe(keys[i % keys.length], {
    onSnapshot: (_, last) => { if (last && ++ready === count) console.log("ready"); },
    onChange: (ch) => {
      if (!done && Number(ch.value) > killedAt) {
        done = true;
        console.log(`caught ${performance.timeOrigin + performance.now()}`);
        if (++caught === count) {
          const cpu = process.cpuUsage(cpuAtKill);
          console.log(`cpu ${(cpu.user + cpu.system) / 1000}`);
          for (const c of clients) c.close();
          process.exit(0);
        }
      }
    },
    onReset: () => { console.error("reset: not expected"); process.exit(1); },
  });
}
createInterface({ input: process.stdin }).on("line", (l) => {
  const [word, v] = l.split(" ");
  if (word === "kill") {
    cpuAtKill = process.cpuUsage();
    killedAt = Number(v);
  }
});
