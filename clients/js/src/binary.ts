// The binary form of the client protocol (flatbuffers, `ringline.v1.fb`): requests
// encoded from, and responses decoded to, the same message objects the JSON form
// uses, so that the rest of the library does not know which it speaks. The types are
// generated from `schemas/client.fbs` by the pinned `flatc` (`scripts/gen-schemas.sh`,
// `src/generated/`). Values travel as bytes: a `Uint8Array` is sent as it is, a string
// as its UTF-8, anything else as its JSON text; received values are `Uint8Array`s.
// Members' metas are JSON text, decoded. A separate entry point
// (`ringline/binary`), so that the JSON-only browser build does not carry it.
import * as flatbuffers from "flatbuffers";
import {
  Ack, Auth, Change, ChangeKind, Del, Error as FbError, Get, Join, Leave, Members, Ok, Op, Presence,
  PresenceEvents, Pub, Put, Reply, Request, Reset, Response, Resumed, Snapshot, Sub, SubMode, Unsub, Value,
} from "./generated/ringline/client.js";
import type { Codec } from "./client.js";
import type { Msg } from "./session.js";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** A value's bytes: a `Uint8Array` as it is, a string's UTF-8, anything else's JSON. */
export function valueBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  return utf8.encode(typeof v === "string" ? v : JSON.stringify(v ?? null));
}

const big = (n: unknown): bigint | null => (typeof n === "number" ? BigInt(n) : null);
const num = (n: bigint | null): number | undefined => (n === null ? undefined : Number(n));

type B = flatbuffers.Builder;

/** The offset of string field `s` (0: absent). */
const str = (b: B, s: unknown): number => (typeof s === "string" ? b.createString(s) : 0);

function sub(b: B, m: Msg): number {
  const [key, prefix, from, durable, presence] = [m.key, m.prefix, m.from, m.durable, m.presence].map((s) => str(b, s));
  const mode = m.mode === "latest" ? SubMode.Latest : SubMode.Stream;
  return Sub.createSub(b, key, prefix, from, mode, durable, presence);
}

function put(b: B, m: Msg): number {
  const [key, msgId] = [str(b, m.key), str(b, m.msg_id)];
  const value = Put.createValueVector(b, valueBytes(m.value));
  return Put.createPut(b, key, value, big(m.if_version), msgId);
}

function pub(b: B, m: Msg): number {
  const [key, msgId] = [str(b, m.key), str(b, m.msg_id)];
  const value = Pub.createValueVector(b, valueBytes(m.value));
  return Pub.createPub(b, key, value, msgId, m.echo !== false);
}

function join(b: B, m: Msg): number {
  const [channel, device] = [str(b, m.channel), str(b, m.device)];
  const meta = Join.createMetaVector(b, utf8.encode(JSON.stringify(m.meta ?? null)));
  return Join.createJoin(b, channel, meta, device);
}

/** Each op's union tag and table. */
const ops: Record<string, [Op, (b: B, m: Msg) => number]> = {
  sub: [Op.Sub, sub],
  unsub: [Op.Unsub, (b) => Unsub.createUnsub(b)],
  get: [Op.Get, (b, m) => Get.createGet(b, str(b, m.key))],
  put: [Op.Put, put],
  del: [Op.Del, (b, m) => Del.createDel(b, str(b, m.key), big(m.if_version), str(b, m.msg_id))],
  pub: [Op.Pub, pub],
  auth: [Op.Auth, (b, m) => Auth.createAuth(b, str(b, m.token))],
  ack: [Op.Ack, (b, m) => Ack.createAck(b, str(b, m.token))],
  join: [Op.Join, join],
  leave: [Op.Leave, (b, m) => Leave.createLeave(b, str(b, m.channel))],
  presence: [Op.Presence, (b, m) => Presence.createPresence(b, str(b, m.channel), str(b, m.cursor), m.count_only === true)],
};

/** A request in the binary form. */
export function encodeRequest(m: Msg): Uint8Array {
  const op = ops[m.op];
  if (!op) throw new TypeError(`no binary form for op ${m.op}`);
  const b = new flatbuffers.Builder(128);
  const body = op[1](b, m);
  b.finish(Request.createRequest(b, BigInt(m.id), op[0], body));
  return b.asUint8Array();
}

const bytes = (a: Uint8Array | null): Uint8Array | null => (a ? new Uint8Array(a) : null);
const json = (a: Uint8Array | null): unknown => (a && a.length ? JSON.parse(fromUtf8.decode(a)) : null);
const opt = (o: Record<string, unknown>): Record<string, unknown> => {
  for (const k of Object.keys(o)) if (o[k] === undefined || o[k] === null) delete o[k];
  return o;
};

function snapshot(s: Snapshot): Record<string, unknown> {
  const entries = [];
  for (let i = 0; i < s.entriesLength(); i++) {
    const e = s.entries(i)!;
    entries.push({ key: e.key(), value: bytes(e.valueArray()), version: Number(e.version()) });
  }
  return opt({ op: "snapshot", entries, token: s.token(), more: s.more() || undefined });
}

function change(c: Change): Record<string, unknown> {
  const kind = c.kind();
  return opt({
    op: "change",
    key: c.key(),
    value: kind === ChangeKind.Delete ? undefined : bytes(c.valueArray()),
    version: kind === ChangeKind.Publish ? undefined : Number(c.version()),
    deleted: kind === ChangeKind.Delete || undefined,
    pub: kind === ChangeKind.Publish || undefined,
    token: c.token(),
  });
}

function members(m: Members): Record<string, unknown> {
  const list = [];
  for (let i = 0; i < m.membersLength(); i++) {
    const g = m.members(i)!;
    const metas = [];
    for (let j = 0; j < g.metasLength(); j++) {
      const meta = g.metas(j)!;
      metas.push({ conn: meta.conn(), meta: json(meta.metaArray()) });
    }
    list.push({ user: g.user(), metas });
  }
  return opt({ op: "members", members: list, total: num(m.total()), cursor: m.cursor(), token: m.token(), more: m.more() || undefined });
}

function presenceEvents(p: PresenceEvents): Record<string, unknown> {
  const events = [];
  for (let i = 0; i < p.eventsLength(); i++) {
    const e = p.events(i)!;
    events.push(opt({ event: e.joined() ? "joined" : "left", user: e.user(), conn: e.conn(), meta: e.joined() ? json(e.metaArray()) : undefined }));
  }
  return { op: "presence", events, token: p.token() };
}

/** Each reply's decoding into the JSON form's message object (without `id`). */
const replies: Partial<Record<Reply, (r: Response) => Record<string, unknown>>> = {
  [Reply.Snapshot]: (r) => snapshot(r.body(new Snapshot())),
  [Reply.Change]: (r) => change(r.body(new Change())),
  [Reply.Resumed]: (r) => ({ op: "resumed", token: r.body(new Resumed()).token() }),
  [Reply.Reset]: (r) => ({ op: "reset", reason: r.body(new Reset()).reason() }),
  [Reply.Value]: (r) => {
    const v: Value = r.body(new Value());
    const value = bytes(v.valueArray());
    return opt({ op: "value", key: v.key(), value, version: value ? Number(v.version()) : undefined });
  },
  [Reply.Ok]: (r) => {
    const ok: Ok = r.body(new Ok());
    return opt({ op: "ok", version: num(ok.version()), token: ok.token() });
  },
  [Reply.Error]: (r) => {
    const e: FbError = r.body(new FbError());
    return opt({ op: "error", code: e.code(), message: e.message(), version: num(e.version()) });
  },
  [Reply.Members]: (r) => members(r.body(new Members())),
  [Reply.PresenceEvents]: (r) => presenceEvents(r.body(new PresenceEvents())),
};

/** A response in the binary form, as the JSON form's message object; `undefined`
 * when it does not decode. */
export function decodeResponse(data: Uint8Array): Record<string, unknown> | undefined {
  try {
    const r = Response.getRootAsResponse(new flatbuffers.ByteBuffer(data));
    const decode = replies[r.bodyType()];
    if (!decode) return undefined;
    const m = decode(r);
    const id = r.id();
    if (id !== null) m.id = Number(id);
    if (m.op === "value" && !("value" in m)) m.value = null;
    return m;
  } catch {
    return undefined;
  }
}

/** The binary form, for `new Ringline({ codec: binary })`. */
export const binary: Codec = {
  protocol: "ringline.v1.fb",
  encode: encodeRequest,
  decode: (data) => (typeof data === "string" ? undefined : decodeResponse(data instanceof Uint8Array ? data : new Uint8Array(data))),
};
