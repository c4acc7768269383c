// The protocol state, without I/O: calls and subscriptions in, server messages in,
// connection changes in; out come the messages to send and what to deliver. What it
// keeps so that a reconnect loses nothing:
// - every subscription with the resume token of the last message it delivered: on
//   `connected()` each is sent again with `from` that token;
// - every call not yet answered, sent again on reconnect. Writes always carry a
//   `msg_id` (made when the application gave none), so a write whose answer was lost
//   applies once however often it is sent; join, leave, ack and reads are idempotent.

import { fromServer, QueueFull, type RinglineError } from "./errors.js";

/** A message of the client protocol (JSON form), as sent. */
export type Msg = Record<string, unknown> & { op: string; id: number };

/** What a subscription follows. */
export type Target = { key: string } | { prefix: string } | { presence: string };

/** One entry of a snapshot. */
export interface Entry {
  key: string;
  value: unknown;
  version: number;
}

/** One user's connections (or devices) in a channel. */
export interface Member {
  user: string | null;
  metas: { conn: string; meta: unknown }[];
}

/** A join (with its meta) or a leave. */
export interface PresenceEvent {
  event: "joined" | "left";
  user: string | null;
  conn: string;
  meta?: unknown;
}

/** What a subscription delivers. */
export type SubEvent =
  | { type: "snapshot"; entries: Entry[]; last: boolean }
  | { type: "change"; key: string; value?: unknown; version?: number; deleted: boolean; published: boolean; token: string }
  | { type: "reset"; reason: string }
  | { type: "members"; members: Member[]; last: boolean }
  | { type: "presence"; events: PresenceEvent[]; token: string }
  | { type: "end"; error: RinglineError };

/** What the session hands to its driver. */
export type Output =
  | { kind: "answer"; id: number; ok?: Record<string, unknown>; error?: RinglineError }
  | { kind: "event"; id: number; event: SubEvent }
  | { kind: "token"; id: number; token: string | undefined }
  | { kind: "retry"; id: number };

interface Sub {
  target: Target;
  mode?: "latest";
  durable?: string;
  token?: string;
}

/** The protocol state of one client. */
export class Session {
  private nextId = 1;
  private readonly subs = new Map<number, Sub>();
  private readonly waiting = new Map<number, Msg>();
  private connected = false;

  constructor(
    private readonly queueLimit: number,
    private readonly nonce: string,
  ) {}

  /** Calls waiting for their answer. */
  get pending(): number {
    return this.waiting.size;
  }

  /** A fresh id (for messages that are not calls, such as probes). */
  id(): number {
    return this.nextId++;
  }

  /** A call (`make` builds it with its id): its id and the message to send now (none
   * while disconnected: it is sent on `connected()`). Throws QueueFull. */
  request(make: (id: number) => Msg): { id: number; now?: Msg } {
    if (!this.connected && this.waiting.size >= this.queueLimit) throw new QueueFull();
    const id = this.id();
    const msg = make(id);
    if ((msg.op === "put" || msg.op === "del" || msg.op === "pub") && msg.msg_id === undefined) {
      msg.msg_id = `${this.nonce}-${id}`;
    }
    this.waiting.set(id, msg);
    return { id, now: this.connected ? msg : undefined };
  }

  /** Subscribe (from `token` if given): its id and the message to send now. */
  subscribe(target: Target, opts: { mode?: "latest"; durable?: string; token?: string }): { id: number; now?: Msg } {
    const id = this.id();
    const sub: Sub = { target, mode: opts.mode, durable: opts.durable, token: opts.token };
    this.subs.set(id, sub);
    return { id, now: this.connected ? subMsg(id, sub) : undefined };
  }

  /** Subscribe `id` again from its last token (after a transient refusal). */
  resubscribe(id: number): Msg | undefined {
    const sub = this.subs.get(id);
    return sub && this.connected ? subMsg(id, sub) : undefined;
  }

  /** End subscription `id`: the `unsub` to send now, if any. */
  unsubscribe(id: number): Msg | undefined {
    if (!this.subs.delete(id)) return undefined;
    return this.connected ? { op: "unsub", id } : undefined;
  }

  /** The last token of subscription `id`. */
  token(id: number): string | undefined {
    return this.subs.get(id)?.token;
  }

  /** Whether `id` is a subscription. */
  isSub(id: number): boolean {
    return this.subs.has(id);
  }

  /** A connection is up: every subscription from its token, then every call waiting. */
  onConnected(): Msg[] {
    this.connected = true;
    const out: Msg[] = [];
    for (const [id, sub] of this.subs) out.push(subMsg(id, sub));
    for (const msg of this.waiting.values()) out.push(msg);
    return out;
  }

  /** The connection is gone: everything waits for the next. */
  onDisconnected(): void {
    this.connected = false;
  }

  /** Every call waiting fails with `error` (the client stops). */
  failAll(error: RinglineError): Output[] {
    const out: Output[] = [...this.waiting.keys()].map((id) => ({ kind: "answer", id, error }));
    this.waiting.clear();
    for (const id of this.subs.keys()) out.push({ kind: "event", id, event: { type: "end", error } });
    this.subs.clear();
    return out;
  }

  /** A message from the server. */
  handle(m: Record<string, unknown>): Output[] {
    const id = typeof m.id === "number" ? m.id : undefined;
    if (id === undefined) return [];
    if (this.subs.has(id) || id === 0) return this.subMessage(id, m);
    if (!this.waiting.delete(id)) return [];
    if (m.op === "error") {
      return [{ kind: "answer", id, error: fromServer(String(m.code), String(m.message), m.version as number | undefined) }];
    }
    return [{ kind: "answer", id, ok: m }];
  }

  private keep(id: number, token: unknown): Output[] {
    const sub = this.subs.get(id);
    if (sub && typeof token === "string") {
      sub.token = token;
      return [{ kind: "token", id, token }];
    }
    return [];
  }

  private subMessage(id: number, m: Record<string, unknown>): Output[] {
    const event = (e: SubEvent): Output => ({ kind: "event", id, event: e });
    switch (m.op) {
      case "snapshot":
        return [...this.keep(id, m.token), event({ type: "snapshot", entries: m.entries as Entry[], last: m.more !== true })];
      case "change":
        return [
          ...this.keep(id, m.token),
          event({
            type: "change",
            key: String(m.key),
            value: m.value,
            version: m.version as number | undefined,
            deleted: m.deleted === true,
            published: m.pub === true,
            token: String(m.token),
          }),
        ];
      case "resumed":
        return this.keep(id, m.token);
      case "reset": {
        const sub = this.subs.get(id);
        if (sub) sub.token = undefined;
        return [{ kind: "token", id, token: undefined }, event({ type: "reset", reason: String(m.reason) })];
      }
      case "members":
        return [...this.keep(id, m.token), event({ type: "members", members: m.members as Member[], last: m.more !== true })];
      case "presence":
        return [...this.keep(id, m.token), event({ type: "presence", events: m.events as PresenceEvent[], token: String(m.token) })];
      case "error": {
        const error = fromServer(String(m.code), String(m.message), m.version as number | undefined);
        if (error.transient) return [{ kind: "retry", id }];
        this.subs.delete(id);
        return [event({ type: "end", error })];
      }
      default:
        return [];
    }
  }
}

function subMsg(id: number, sub: Sub): Msg {
  const msg: Msg = { op: "sub", id, ...sub.target };
  if (sub.token !== undefined) msg.from = sub.token;
  if (sub.mode) msg.mode = sub.mode;
  if (sub.durable) msg.durable = sub.durable;
  return msg;
}
