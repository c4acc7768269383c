// What can go wrong, one class per server error code (mapped in one place:
// `fromServer`), plus the client's own: a full queue, a closed client.

/** Every error of this library. `code` is the server's error code, or the client's. */
export class RinglineError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
  /** Whether trying again later may succeed. */
  get transient(): boolean {
    return this.code === "unavailable" || this.code === "overloaded" || this.code === "rate_limited";
  }
}

/** The request is malformed or invalid: do not retry it as is. */
export class BadRequest extends RinglineError {}
/** A key, value or field is over its limit. */
export class TooLarge extends RinglineError {}
/** `ifVersion` did not match; the key is at `current` (0: absent). */
export class Conflict extends RinglineError {
  constructor(
    message: string,
    readonly current: number,
  ) {
    super("conflict", message);
  }
}
/** The token does not grant this. */
export class Forbidden extends RinglineError {}
/** No valid token. */
export class Unauthorized extends RinglineError {}
/** The data is unreachable for now (the client retries subscriptions and writes itself). */
export class Unavailable extends RinglineError {}
/** The service sheds load (`overloaded`, `rate_limited`): retry later, slower. */
export class Overloaded extends RinglineError {}
/** The connection holds as many subscriptions (or presence channels) as it may. */
export class TooManySubscriptions extends RinglineError {}
/** A fault in the service. */
export class Internal extends RinglineError {}
/** More calls wait for a connection than the client may queue. */
export class QueueFull extends RinglineError {
  constructor() {
    super("queue_full", "the queue of calls waiting for a connection is full");
  }
}
/** The client stopped (closed by the application, or by a close code that ends it). */
export class Closed extends RinglineError {
  constructor(message: string) {
    super("closed", message);
  }
}

/** The error for a server's `error` message. */
export function fromServer(code: string, message: string, version?: number): RinglineError {
  switch (code) {
    case "bad_request":
      return new BadRequest(code, message);
    case "too_large":
      return new TooLarge(code, message);
    case "conflict":
      return new Conflict(message, version ?? 0);
    case "forbidden":
      return new Forbidden(code, message);
    case "unauthorized":
      return new Unauthorized(code, message);
    case "unavailable":
      return new Unavailable(code, message);
    case "overloaded":
    case "rate_limited":
      return new Overloaded(code, message);
    case "too_many_subscriptions":
      return new TooManySubscriptions(code, message);
    default:
      return new Internal(code, message);
  }
}
