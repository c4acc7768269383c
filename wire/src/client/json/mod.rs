//! The client protocol's JSON text form: one JSON object per WebSocket text frame, with an
//! `op` naming the message. Client → edge:
//!
//! ```text
//! {"op":"sub","id":1,"key":"room/{42}/title"}                  exact key
//! {"op":"sub","id":2,"prefix":"room/{42}/"}                     prefix
//! {"op":"sub","id":3,"key":"k","from":"<token>"}                resume after a position
//! {"op":"unsub","id":1}
//! {"op":"get","id":4,"key":"k"}
//! {"op":"put","id":5,"key":"k","value":<JSON>,"if_version":7}  if_version optional
//! {"op":"del","id":6,"key":"k"}                                 if_version optional
//! {"op":"pub","id":7,"key":"room/{42}/chat","value":<JSON>}     log-only message
//! ```
//!
//! Edge → client:
//!
//! ```text
//! {"op":"snapshot","id":1,"entries":[{"key":"k","value":<JSON>,"version":17}],"token":"<t>"}
//!     (split snapshots: every part but the last ends with "more":true)
//! {"op":"change","id":1,"key":"k","value":<JSON>,"version":18,"token":"<t>"}
//! {"op":"change","id":1,"key":"k","deleted":true,"version":19,"token":"<t>"}
//! {"op":"change","id":1,"key":"k","value":<JSON>,"pub":true,"token":"<t>"}
//! {"op":"resumed","id":3,"token":"<t>"}
//! {"op":"reset","id":3,"reason":"..."}
//! {"op":"value","id":4,"key":"k","value":<JSON>,"version":17}   or "value":null when absent
//! {"op":"ok","id":5,"version":18,"token":"<t>"}                 version, token when known
//! {"op":"error","id":5,"code":"conflict","message":"...","version":17}
//!     (no id when the request had none; version only for conflict)
//! ```
//!
//! The compact form (subprotocol `ringline.v2.json`) differs only in changes, the
//! messages a fan-out multiplies: short field names and no `op` (an object with `c` is a
//! change):
//!
//! ```text
//! {"c":1,"k":"k","v":<JSON>,"n":18,"t":"<t>"}
//! {"c":1,"k":"k","d":true,"n":19,"t":"<t>"}
//! {"c":1,"k":"k","v":<JSON>,"p":true,"t":"<t>"}
//! ```
//!
//! [`decode_response`] reads both forms.
//!
//! Values travel as raw JSON: a request's `value` is kept as the exact JSON text the client
//! sent (no re-serialisation), and a response embeds a stored value verbatim when its bytes
//! are valid JSON. Bytes that are not (written through the binary form) are sent as
//! `{"b64":"<standard base64>"}`; [`decode_response`] turns exactly that shape back into
//! bytes, [`decode_request`] never does (a JSON client's `{"b64":...}` is just JSON).
//! Unknown fields are ignored.
//!
//! Encoders append to a caller-owned buffer and write the JSON by hand (escaping strings
//! themselves); decoders borrow strings and values from the input where escaping allows.

mod decode;
mod encode;
mod write;

pub use decode::{decode_request, decode_response};
pub use encode::{PreparedChange, encode_request, encode_response, encode_response_compact};
pub use write::is_json;
