// ringline: the Ringline client for browsers and Node. A `Ringline` is one logical
// connection; its subscriptions resume by themselves from their last tokens across
// reconnects and edges, calls made while offline wait and are sent with a msg_id, and
// errors are typed (errors.ts).

export { Ringline, Subscription, jsonCodec } from "./client.js";
export type { ClientEvent, Codec, Handlers, Options, SubOptions, TokenStorage, WebSocketCtor, WebSocketLike } from "./client.js";
export * from "./errors.js";
export type { Entry, Member, PresenceEvent, SubEvent, Target } from "./session.js";
