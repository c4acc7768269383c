// The client: one logical connection that reconnects by itself (jittered exponential
// backoff, the next URL, at once when the server drains), resumes every subscription
// from its last token, sends again every call not yet answered, replaces a connection
// that went silent, and asks the application for a new token when the server refuses
// or expires the current one.

import { Closed, type RinglineError } from "./errors.js";
import { type Entry, type Member, type Msg, type Output, type PresenceEvent, Session, type SubEvent, type Target } from "./session.js";

/** The part of the WebSocket interface the client uses (browsers' and Node's global
 * `WebSocket`, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

/** A WebSocket constructor. */
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** A form of the client protocol: its subprotocol, and its messages to and from the
 * message objects the library works with (`{ op, id, ... }`, as in the JSON form). */
export interface Codec {
  readonly protocol: string;
  encode(msg: Record<string, unknown>): string | Uint8Array;
  /** `undefined`: not a message of this form. */
  decode(data: string | ArrayBuffer | Uint8Array): Record<string, unknown> | undefined;
}

/** A change in the compact form (`{"c":id,"k":..,"v":..,"n":..,"t":..}`, with `"d":true`
 * for a delete, `"p":true` for a publish) as the `{ op: "change", ... }` message it
 * stands for; any other message as it is. */
function expandChange(m: Record<string, unknown>): Record<string, unknown> {
  if (m.op !== undefined || m.c === undefined) return m;
  const change: Record<string, unknown> = { op: "change", id: m.c, key: m.k, token: m.t };
  if ("v" in m) change.value = m.v;
  if ("n" in m) change.version = m.n;
  if (m.d === true) change.deleted = true;
  if (m.p === true) change.pub = true;
  return change;
}

/** The JSON text form (`ringline.v2.json`: v1 with changes in a compact form, the
 * messages a fan-out multiplies), the default. */
export const jsonCodec: Codec = {
  protocol: "ringline.v2.json",
  encode: (msg) => JSON.stringify(msg),
  decode: (data) => {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    try {
      return expandChange(JSON.parse(text) as Record<string, unknown>);
    } catch {
      return undefined;
    }
  },
};

/** Where subscriptions' tokens are kept across page loads (`localStorage` fits). */
export interface TokenStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** How to connect and how to behave. */
export interface Options {
  /** The edge's (or the balancer's) `/ws` URL. */
  url?: string;
  /** Several URLs, tried in turn (the next one after a failure or a lost connection). */
  urls?: string[];
  /** A JWT, sent as the first message of every connection (`{"op":"auth"}`). */
  token?: string;
  /** Asked for a new token when the server refuses or expires the current one. */
  getToken?: () => Promise<string | undefined>;
  /** The WebSocket implementation [default: the global `WebSocket`]. */
  WebSocket?: WebSocketCtor;
  /** The protocol's form: JSON (the default), or `binary` from `ringline/binary`
   * (flatbuffers; values are then bytes). */
  codec?: Codec;
  /** First wait before reconnecting, doubled after each failure [100 ms]. */
  backoffMinMs?: number;
  /** Longest wait before reconnecting [10 s]. */
  backoffMaxMs?: number;
  /** A connection up this long resets the backoff [10 s]. */
  stableAfterMs?: number;
  /** Calls that may wait for a connection [1,000]; past it they fail with QueueFull. */
  queueLimit?: number;
  /** The server's ping interval: silent for one, the client probes; for two, it
   * replaces the connection [25 s]. */
  heartbeatMs?: number;
  /** Where `persist`ed subscriptions keep their tokens [`localStorage` if any]. */
  storage?: TokenStorage | null;
}

/** Connection events. */
export type ClientEvent = "connecting" | "connected" | "disconnected" | "closed";

/** Callbacks of a subscription (or iterate it: `for await (const e of sub)`). */
export interface Handlers {
  onSnapshot?(entries: Entry[], last: boolean): void;
  onChange?(change: Extract<SubEvent, { type: "change" }>): void;
  /** The server could not resume: a fresh snapshot follows (replace everything). */
  onReset?(reason: string): void;
  onMembers?(members: Member[], last: boolean): void;
  onPresence?(events: PresenceEvent[]): void;
  onEnd?(error: RinglineError): void;
}

/** Options of a subscription. */
export interface SubOptions {
  mode?: "latest";
  durable?: string;
  /** Keep its token in `storage` under this name, so that a page reload resumes. */
  persist?: string;
}

/** The close codes of a client bug: sending the same again will not help. */
const TERMINAL = [1002, 1003, 1007, 1009];
/** The close codes of a refused or expired token. */
const TOKEN = [4401, 4408, 4419];

/** One subscription: its events by callback or as an async iterator. */
export class Subscription implements AsyncIterable<SubEvent> {
  private readonly queue: SubEvent[] = [];
  private wake: (() => void) | undefined;
  private ended = false;

  constructor(
    readonly id: number,
    private readonly client: Ringline,
    private readonly handlers: Handlers,
  ) {}

  /** The resume token of the last message delivered. */
  get token(): string | undefined {
    return this.client.tokenOf(this.id);
  }

  /** Stop following. */
  unsubscribe(): void {
    this.ended = true;
    this.client.unsubscribe(this.id);
    this.wake?.();
  }

  /** @internal */
  deliver(e: SubEvent): void {
    const h = this.handlers;
    switch (e.type) {
      case "snapshot":
        h.onSnapshot?.(e.entries, e.last);
        break;
      case "change":
        h.onChange?.(e);
        break;
      case "reset":
        h.onReset?.(e.reason);
        break;
      case "members":
        h.onMembers?.(e.members, e.last);
        break;
      case "presence":
        h.onPresence?.(e.events);
        break;
      case "end":
        this.ended = true;
        h.onEnd?.(e.error);
        break;
    }
    this.queue.push(e);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SubEvent> {
    for (;;) {
      const e = this.queue.shift();
      if (e) {
        yield e;
        if (e.type === "end") return;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }
}

/** A Ringline client. */
export class Ringline {
  private readonly opts: Required<Omit<Options, "url" | "token" | "getToken" | "storage" | "WebSocket" | "codec">>;
  private readonly codec: Codec;
  private readonly Ws: WebSocketCtor;
  private readonly session: Session;
  private readonly answers = new Map<number, { resolve(m: Record<string, unknown>): void; reject(e: RinglineError): void }>();
  private readonly subs = new Map<number, Subscription>();
  private readonly persisted = new Map<number, string>();
  private readonly listeners = new Map<ClientEvent, ((why?: string) => void)[]>();
  private readonly storage: TokenStorage | null;
  private token: string | undefined;
  private ws: WebSocketLike | undefined;
  private nextUrl = 0;
  private backoff: number;
  private openedAt = 0;
  private heardAt = 0;
  private timer: ReturnType<typeof setInterval> | undefined;
  private reconnect: ReturnType<typeof setTimeout> | undefined;
  private closed = false;

  constructor(private readonly options: Options) {
    const urls = options.urls ?? (options.url ? [options.url] : []);
    if (urls.length === 0) throw new TypeError("a url is needed");
    this.opts = {
      urls,
      backoffMinMs: options.backoffMinMs ?? 100,
      backoffMaxMs: options.backoffMaxMs ?? 10_000,
      stableAfterMs: options.stableAfterMs ?? 10_000,
      queueLimit: options.queueLimit ?? 1000,
      heartbeatMs: options.heartbeatMs ?? 25_000,
    };
    const Ws = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
    if (!Ws) throw new TypeError("no WebSocket: pass options.WebSocket (the `ws` package in Node < 22)");
    this.Ws = Ws;
    this.codec = options.codec ?? jsonCodec;
    this.storage = options.storage !== undefined ? options.storage : ((globalThis as { localStorage?: TokenStorage }).localStorage ?? null);
    this.token = options.token;
    this.backoff = this.opts.backoffMinMs;
    const nonce = Math.random().toString(36).slice(2, 12) + Date.now().toString(36);
    this.session = new Session(this.opts.queueLimit, nonce);
    this.connect();
  }

  /** Listen to connection events (`disconnected` and `closed` carry the reason). */
  on(event: ClientEvent, fn: (why?: string) => void): this {
    const list = this.listeners.get(event) ?? [];
    list.push(fn);
    this.listeners.set(event, list);
    return this;
  }

  private emit(event: ClientEvent, why?: string): void {
    for (const fn of this.listeners.get(event) ?? []) fn(why);
  }

  /** @internal */
  tokenOf(id: number): string | undefined {
    return this.session.token(id);
  }

  /** A call: resolves with the server's answer, rejects with a typed error. */
  call(make: (id: number) => Msg): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.reject(new Closed("the client is closed"));
    return new Promise((resolve, reject) => {
      let sent;
      try {
        sent = this.session.request(make);
      } catch (e) {
        reject(e as RinglineError);
        return;
      }
      this.answers.set(sent.id, { resolve, reject });
      if (sent.now) this.send(sent.now);
    });
  }

  /** Follow a key, a prefix or a channel's presence. */
  subscribe(target: string | Target, handlers: Handlers = {}, opts: SubOptions = {}): Subscription {
    const t: Target = typeof target === "string" ? { key: target } : target;
    const persisted = opts.persist ? (this.storage?.getItem(`ringline:${opts.persist}`) ?? undefined) : undefined;
    const { id, now } = this.session.subscribe(t, { mode: opts.mode, durable: opts.durable, token: persisted });
    const sub = new Subscription(id, this, handlers);
    this.subs.set(id, sub);
    if (opts.persist) this.persisted.set(id, opts.persist);
    if (now) this.send(now);
    return sub;
  }

  /** What the server sends without a subscription (as id 0): the user's inbox
   * (`@user/<subject>`, authenticated connections) and broadcasts (`@all`). One at a
   * time: a second call replaces the first. */
  inbox(handlers: Handlers = {}): Subscription {
    const sub = new Subscription(0, this, handlers);
    this.subs.set(0, sub);
    return sub;
  }

  /** @internal */
  unsubscribe(id: number): void {
    this.subs.delete(id);
    this.persisted.delete(id);
    const msg = this.session.unsubscribe(id);
    if (msg) this.send(msg);
  }

  /** The value of `key` and its version, or undefined if absent. */
  async get(key: string): Promise<{ value: unknown; version: number } | undefined> {
    const m = await this.call((id) => ({ op: "get", id, key }));
    return m.version === undefined ? undefined : { value: m.value, version: m.version as number };
  }

  /** Store `value` (any JSON value) under `key`; `ifVersion`: only if the key is at
   * that version (0: absent); `msgId`: the write's idempotency id (made if absent). */
  async put(key: string, value: unknown, opts: { ifVersion?: number; msgId?: string } = {}): Promise<{ version: number; token: string }> {
    const m = await this.call((id) => withWrite({ op: "put", id, key, value }, opts));
    return { version: m.version as number, token: m.token as string };
  }

  /** Delete `key`. */
  async del(key: string, opts: { ifVersion?: number; msgId?: string } = {}): Promise<{ version: number; token: string }> {
    const m = await this.call((id) => withWrite({ op: "del", id, key }, opts));
    return { version: m.version as number, token: m.token as string };
  }

  /** Publish `value` under `key` (delivered, not stored); `echo: false` keeps it from
   * this connection's own subscriptions. */
  async publish(key: string, value: unknown, opts: { echo?: boolean; msgId?: string } = {}): Promise<{ token: string }> {
    const m = await this.call((id) => {
      const msg = withWrite({ op: "pub", id, key, value }, opts);
      if (opts.echo === false) msg.echo = false;
      return msg;
    });
    return { token: m.token as string };
  }

  /** Join `channel`'s presence with `meta`, as `device` if given. */
  async join(channel: string, meta: unknown = null, opts: { device?: string } = {}): Promise<void> {
    await this.call((id) => {
      const msg: Msg = { op: "join", id, channel, meta };
      if (opts.device) msg.device = opts.device;
      return msg;
    });
  }

  /** Leave `channel`'s presence. */
  async leave(channel: string): Promise<void> {
    await this.call((id) => ({ op: "leave", id, channel }));
  }

  /** A page of `channel`'s members (`cursor`: the previous page's). */
  async presence(channel: string, cursor?: string): Promise<{ members: Member[]; total: number; cursor?: string }> {
    const m = await this.call((id) => (cursor ? { op: "presence", id, channel, cursor } : { op: "presence", id, channel }));
    return { members: m.members as Member[], total: m.total as number, cursor: m.cursor as string | undefined };
  }

  /** How many members `channel` has. */
  async count(channel: string): Promise<number> {
    const m = await this.call((id) => ({ op: "presence", id, channel, count_only: true }));
    return m.total as number;
  }

  /** Acknowledge durable subscription `sub`'s position: the token of the last change
   * processed. */
  async ack(sub: Subscription, token: string): Promise<void> {
    await this.call(() => ({ op: "ack", id: sub.id, token }));
  }

  /** Stop: calls waiting fail with Closed, subscriptions end. */
  close(): void {
    if (this.closed) return;
    this.stop("closed by the application");
    this.ws?.close(1000);
  }

  private connect(): void {
    if (this.closed) return;
    this.emit("connecting");
    const url = this.opts.urls[this.nextUrl % this.opts.urls.length];
    this.nextUrl = (this.nextUrl + 1) % this.opts.urls.length;
    let ws: WebSocketLike;
    try {
      ws = new this.Ws(url, this.codec.protocol);
      ws.binaryType = "arraybuffer";
    } catch (e) {
      this.lost(false, String(e));
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.opened();
    };
    ws.onmessage = (ev) => this.message(ev.data);
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws === ws) this.closedBy(ev.code, ev.reason, opened);
    };
  }

  private opened(): void {
    this.openedAt = this.heardAt = Date.now();
    if (this.token) this.sendRaw({ op: "auth", id: this.session.id(), token: this.token });
    for (const msg of this.session.onConnected()) this.send(msg);
    this.emit("connected");
    const hb = this.opts.heartbeatMs;
    this.timer = setInterval(() => this.watch(), Math.max(50, hb / 2));
    // In Node, the socket keeps the process alive, not the client's own timers.
    (this.timer as { unref?: () => void }).unref?.();
  }

  /** Silent for one heartbeat: probe (an `unsub` of no subscription, answered with an
   * error); for two: the connection is dead. */
  private watch(): void {
    const silent = Date.now() - this.heardAt;
    if (silent >= 2 * this.opts.heartbeatMs) {
      const ws = this.ws;
      this.ws = undefined;
      ws?.close(4000, "silent");
      this.lost(true, "no message in two heartbeats");
    } else if (silent >= this.opts.heartbeatMs) {
      this.sendRaw({ op: "unsub", id: this.session.id() });
    }
  }

  private message(data: unknown): void {
    this.heardAt = Date.now();
    const m = this.codec.decode(data as string | ArrayBuffer | Uint8Array);
    if (m) for (const out of this.session.handle(m)) this.route(out);
  }

  private route(out: Output): void {
    switch (out.kind) {
      case "answer": {
        const a = this.answers.get(out.id);
        this.answers.delete(out.id);
        if (out.error) a?.reject(out.error);
        else if (out.ok) a?.resolve(out.ok);
        break;
      }
      case "event":
        this.subs.get(out.id)?.deliver(out.event);
        if (out.event.type === "end") this.subs.delete(out.id);
        break;
      case "token": {
        const name = this.persisted.get(out.id);
        if (name && this.storage) {
          if (out.token) this.storage.setItem(`ringline:${name}`, out.token);
          else this.storage.removeItem(`ringline:${name}`);
        }
        break;
      }
      case "retry":
        setTimeout(() => {
          const msg = this.session.resubscribe(out.id);
          if (msg) this.send(msg);
        }, 1000);
        break;
    }
  }

  private closedBy(code: number, reason: string, opened: boolean): void {
    const why = `closed: ${code} ${reason}`.trim();
    if (this.closed) return;
    if (TERMINAL.includes(code)) return this.stop(why);
    if (code === 1001) return this.lost(true, why, 0);
    if (TOKEN.includes(code)) {
      const get = this.options.getToken;
      if (!get) return this.stop(why);
      this.teardown(why);
      void get().then((t) => {
        this.token = t;
        this.connect();
      });
      return;
    }
    this.lost(opened, why);
  }

  private teardown(why: string): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.ws = undefined;
    this.session.onDisconnected();
    this.emit("disconnected", why);
  }

  /** The connection is gone: try again, soon if it had been up. */
  private lost(wasUp: boolean, why: string, wait?: number): void {
    const upFor = Date.now() - this.openedAt;
    this.teardown(why);
    if (wasUp && upFor >= this.opts.stableAfterMs) this.backoff = this.opts.backoffMinMs;
    const min = this.opts.backoffMinMs;
    const delay = wait ?? (wasUp ? Math.random() * min : this.backoff + Math.random() * (this.backoff / 2));
    if (!wasUp) this.backoff = Math.min(this.backoff * 2, this.opts.backoffMaxMs);
    this.reconnect = setTimeout(() => this.connect(), delay);
  }

  private stop(why: string): void {
    this.closed = true;
    if (this.reconnect) clearTimeout(this.reconnect);
    this.teardown(why);
    for (const out of this.session.failAll(new Closed(why))) this.route(out);
    this.emit("closed", why);
  }

  private send(msg: Msg): void {
    this.sendRaw(msg);
  }

  private sendRaw(msg: Record<string, unknown>): void {
    const ws = this.ws;
    if (ws && ws.readyState === 1) ws.send(this.codec.encode(msg));
  }
}

/** `msg` with a write's options. */
function withWrite(msg: Msg, opts: { ifVersion?: number; msgId?: string }): Msg {
  if (opts.ifVersion !== undefined) msg.if_version = opts.ifVersion;
  if (opts.msgId !== undefined) msg.msg_id = opts.msgId;
  return msg;
}
