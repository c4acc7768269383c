//! The HTTP API (`/v1/...`) for backends, sans-IO: request bytes flow into
//! [`head::parse_head`] (a [`Head`] and the body's length), a whole request into
//! [`call::call`] (the client protocol's requests for the hub, or an [`ApiError`]),
//! and the hub's answers into [`answer`] (HTTP responses whose JSON bodies are the
//! WebSocket protocol's own answer objects). Statuses for every refusal and error
//! code are in [`error`], in one place. [`sse`] writes a subscription as Server-Sent
//! Events (`/v1/events`).

pub mod answer;
pub mod call;
pub mod error;
pub mod head;
pub mod sse;

pub use answer::{write_answer, write_batch, write_error};
pub use call::{Call, MAX_BATCH, call};
pub use error::{ApiError, status_of};
pub use head::{
    CONTINUE, Head, continue_owed, parse_head, percent_decode, query_pairs, query_param,
};
