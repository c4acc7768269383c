//! Per-worker figures: each worker updates its own atomics (no sharing on the hot
//! path); `GET /metrics` on any worker renders every worker's, in Prometheus text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Close codes counted one by one; others go under "other".
pub const CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 4008, 4401, 4408, 4419,
];

/// One worker's figures.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Connections open (gauge).
    pub connections: AtomicU64,
    /// Connections accepted (by this worker's listener, wherever they were placed).
    pub accepted: AtomicU64,
    /// Of those, handed over to a less-loaded sibling worker.
    pub handed_over: AtomicU64,
    /// Handshakes refused because every worker was full, or draining (503).
    pub rejected_full: AtomicU64,
    /// Requests refused as malformed (4xx).
    pub rejected_bad: AtomicU64,
    /// Connections dropped for not finishing their handshake in time.
    pub rejected_timeout: AtomicU64,
    /// Tokens refused: handshakes answered 401, and `auth` messages answered
    /// `unauthorized`.
    pub rejected_unauthorized: AtomicU64,
    /// Operations refused: `forbidden` (not granted by the connection's token, or
    /// a subscription a refresh no longer allows), or `unauthorized` (before the
    /// first `auth`).
    pub denied: AtomicU64,
    /// Browser handshakes refused with 403: an origin not on the allow-list.
    pub rejected_origin: AtomicU64,
    /// Messages refused as `rate_limited` (over the connection's message rate).
    pub rate_limited: AtomicU64,
    /// Upgrades refused with 429: over the source address's connection limits.
    pub rejected_rate: AtomicU64,
    /// WebSocket handshakes completed.
    pub handshakes: AtomicU64,
    /// TLS handshakes completed.
    pub tls_handshakes: AtomicU64,
    /// Of those, resumed from a session ticket.
    pub tls_resumed: AtomicU64,
    /// TLS sessions failed: an alert, garbage, or a record too large.
    pub tls_failed: AtomicU64,
    /// Store links refused for the cluster secret.
    pub link_auth_failed: AtomicU64,
    /// Plain HTTP requests answered.
    pub http_requests: AtomicU64,
    /// HTTP API requests taken (`/v1/...`).
    pub api_requests: AtomicU64,
    /// Server-Sent Events streams started.
    pub event_streams: AtomicU64,
    /// Deflate runs (`permessage-deflate`): one per message of a connection's own, one
    /// per change for all its subscribers.
    pub compressions: AtomicU64,
    /// Messages sent compressed.
    pub compressed_out: AtomicU64,
    /// Compressed messages received.
    pub compressed_in: AtomicU64,
    /// HTTP API requests refused by the edge itself: malformed, too large, no such
    /// resource or method.
    pub api_refused: AtomicU64,
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Messages sent.
    pub messages_out: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Bytes queued and not yet sent (gauge).
    pub queued_bytes: AtomicU64,
    /// Bytes of receive buffers handed to the kernel (gauge; grows under load up to
    /// its cap, never shrinks).
    pub receive_buffer_bytes: AtomicU64,
    /// Close frames sent, by code (`CLOSE_CODES`, then other).
    pub closes: [AtomicU64; CLOSE_CODES.len() + 1],
    /// Changes delivered to subscribers.
    pub deliveries: AtomicU64,
    /// Resume joins ridden instead of issued (per partition: a subscription resumed
    /// through a join already on its way from the same position).
    pub joins_shared: AtomicU64,
    /// Sends that carried at least one change frame.
    pub change_sends: AtomicU64,
    /// Change frames queued (over `change_sends`: about the mean batch).
    pub change_frames: AtomicU64,
    /// Loop rounds that reached the per-round send limit with connections still
    /// waiting for a send.
    pub rounds_limited: AtomicU64,
    /// Changes of `latest` subscriptions replaced by a newer one of their key while
    /// their connection was behind (never sent).
    pub conflated: AtomicU64,
    /// Changes of `latest` subscriptions held for connections that are behind (gauge).
    pub latest_held: AtomicU64,
    /// Channels joined by this worker's connections (gauge).
    pub presence_joins: AtomicU64,
    /// Presence events waiting for their subscription's batch interval (gauge).
    pub presence_waiting: AtomicU64,
    /// Internal watches open on store links (gauge).
    pub watches: AtomicU64,
    /// Client subscriptions (gauge).
    pub subscriptions: AtomicU64,
    /// Store ids, as the cluster map lists them.
    pub stores: Vec<String>,
    /// Per store: its link's state (0 down, 1 connecting, 2 up).
    pub links: Vec<AtomicU64>,
}

impl WorkerMetrics {
    /// Figures for a worker with links to `stores`.
    pub fn for_stores(stores: Vec<String>) -> Self {
        let links = stores.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            stores,
            links,
            ..Self::default()
        }
    }

    /// Add to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtract from a gauge.
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }

    /// Count a close frame sent with `code`.
    pub fn close_sent(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(CLOSE_CODES.len());
        if let Some(c) = self.closes.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// (name, type, help, which atomic) of one per-worker series.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerMetrics) -> &AtomicU64,
);

/// Every per-worker counter and gauge: name, type, help, and where it is kept.
static SERIES: [Series; 40] = [
    (
        "ringline_edge_connections",
        "gauge",
        "Connections open.",
        |m| &m.connections,
    ),
    (
        "ringline_edge_accepted_total",
        "counter",
        "Connections accepted by this worker's listener, wherever they were placed.",
        |m| &m.accepted,
    ),
    (
        "ringline_edge_handed_over_total",
        "counter",
        "Connections accepted here and handed over to a less-loaded worker.",
        |m| &m.handed_over,
    ),
    (
        "ringline_edge_rejected_full_total",
        "counter",
        "Handshakes refused with 503: every worker full, or draining.",
        |m| &m.rejected_full,
    ),
    (
        "ringline_edge_rejected_bad_total",
        "counter",
        "Requests refused as malformed.",
        |m| &m.rejected_bad,
    ),
    (
        "ringline_edge_rejected_unauthorized_total",
        "counter",
        "Tokens refused: handshakes answered 401, auth messages answered unauthorized.",
        |m| &m.rejected_unauthorized,
    ),
    (
        "ringline_edge_rejected_origin_total",
        "counter",
        "Browser handshakes refused with 403: an origin not on the allow-list.",
        |m| &m.rejected_origin,
    ),
    (
        "ringline_edge_rate_limited_total",
        "counter",
        "Messages refused as rate_limited: over the connection's message rate.",
        |m| &m.rate_limited,
    ),
    (
        "ringline_edge_rejected_rate_total",
        "counter",
        "Upgrades refused with 429: over the source address's connection limits.",
        |m| &m.rejected_rate,
    ),
    (
        "ringline_edge_denied_total",
        "counter",
        "Operations refused: forbidden by the connection's grant, or before its first auth.",
        |m| &m.denied,
    ),
    (
        "ringline_edge_rejected_timeout_total",
        "counter",
        "Connections dropped for a handshake not finished in time.",
        |m| &m.rejected_timeout,
    ),
    (
        "ringline_edge_handshakes_total",
        "counter",
        "WebSocket handshakes completed.",
        |m| &m.handshakes,
    ),
    (
        "ringline_edge_tls_handshakes_total",
        "counter",
        "TLS handshakes completed.",
        |m| &m.tls_handshakes,
    ),
    (
        "ringline_edge_tls_resumed_total",
        "counter",
        "TLS handshakes that resumed a session from a ticket (no certificate signature).",
        |m| &m.tls_resumed,
    ),
    (
        "ringline_edge_tls_failed_total",
        "counter",
        "TLS sessions failed: a TLS alert from the client, bytes that are not TLS, or a record too large.",
        |m| &m.tls_failed,
    ),
    (
        "ringline_edge_link_auth_failed_total",
        "counter",
        "Store links refused for the cluster secret: the store did not prove it, or asked for one this edge does not have.",
        |m| &m.link_auth_failed,
    ),
    (
        "ringline_edge_http_requests_total",
        "counter",
        "Plain HTTP requests answered.",
        |m| &m.http_requests,
    ),
    (
        "ringline_edge_api_requests_total",
        "counter",
        "HTTP API requests taken (/v1/...).",
        |m| &m.api_requests,
    ),
    (
        "ringline_edge_compressions_total",
        "counter",
        "Deflate runs (permessage-deflate): one per message of a connection's own (answers, snapshots, echoes), one per change for all its compressed subscribers of a worker (one per subscriber for those that limited the server's window below 15 bits).",
        |m| &m.compressions,
    ),
    (
        "ringline_edge_compressed_out_total",
        "counter",
        "Messages sent compressed (permessage-deflate).",
        |m| &m.compressed_out,
    ),
    (
        "ringline_edge_compressed_in_total",
        "counter",
        "Compressed messages received (permessage-deflate).",
        |m| &m.compressed_in,
    ),
    (
        "ringline_edge_event_streams_total",
        "counter",
        "Server-Sent Events streams started (/v1/events).",
        |m| &m.event_streams,
    ),
    (
        "ringline_edge_api_refused_total",
        "counter",
        "HTTP API requests refused by the edge itself: malformed, too large, no such resource or method.",
        |m| &m.api_refused,
    ),
    (
        "ringline_edge_messages_in_total",
        "counter",
        "WebSocket messages received.",
        |m| &m.messages_in,
    ),
    (
        "ringline_edge_messages_out_total",
        "counter",
        "WebSocket messages sent.",
        |m| &m.messages_out,
    ),
    (
        "ringline_edge_bytes_in_total",
        "counter",
        "Bytes received.",
        |m| &m.bytes_in,
    ),
    (
        "ringline_edge_bytes_out_total",
        "counter",
        "Bytes sent.",
        |m| &m.bytes_out,
    ),
    (
        "ringline_edge_queued_bytes",
        "gauge",
        "Bytes queued for connections and not yet sent.",
        |m| &m.queued_bytes,
    ),
    (
        "ringline_edge_receive_buffer_bytes",
        "gauge",
        "Bytes of receive buffers handed to the kernel (grows under load to its cap).",
        |m| &m.receive_buffer_bytes,
    ),
    (
        "ringline_edge_deliveries_total",
        "counter",
        "Changes delivered to subscribers.",
        |m| &m.deliveries,
    ),
    (
        "ringline_edge_resume_joins_shared_total",
        "counter",
        "Resume joins ridden: a subscription resuming a partition of its target from the position a join already on its way resumes from used that join instead of its own (counted per partition; a reconnect storm's clients of one key then cost the store one resume, not one each).",
        |m| &m.joins_shared,
    ),
    (
        "ringline_edge_change_sends_total",
        "counter",
        "Sends to WebSocket connections that carried at least one change frame (changes queued for a connection before its next send share that send: change_frames_total over this is about the mean batch).",
        |m| &m.change_sends,
    ),
    (
        "ringline_edge_change_frames_total",
        "counter",
        "Change frames queued for WebSocket connections (a slow consumer's may be dropped with it instead of sent).",
        |m| &m.change_frames,
    ),
    (
        "ringline_edge_rounds_send_limited_total",
        "counter",
        "Loop rounds that reached the send limit (1,024 sends a round, so that a large fan-out does not hold the loop) with connections still waiting for a send: they go next round.",
        |m| &m.rounds_limited,
    ),
    (
        "ringline_edge_conflated_total",
        "counter",
        "Changes of latest-mode subscriptions replaced by a newer one of their key while their connection was behind.",
        |m| &m.conflated,
    ),
    (
        "ringline_edge_latest_held",
        "gauge",
        "Changes of latest-mode subscriptions held for connections that are behind.",
        |m| &m.latest_held,
    ),
    (
        "ringline_edge_presence_joins",
        "gauge",
        "Channels joined by connections (one per connection and channel).",
        |m| &m.presence_joins,
    ),
    (
        "ringline_edge_presence_waiting",
        "gauge",
        "Presence events waiting for their subscription's batch interval.",
        |m| &m.presence_waiting,
    ),
    (
        "ringline_edge_watches",
        "gauge",
        "Internal watches open on store links (one per key or prefix per worker).",
        |m| &m.watches,
    ),
    (
        "ringline_edge_subscriptions",
        "gauge",
        "Client subscriptions.",
        |m| &m.subscriptions,
    ),
];

/// Render every worker's figures.
pub fn render(workers: &[std::sync::Arc<WorkerMetrics>]) -> String {
    let mut o = String::with_capacity(4096);
    for &(name, kind, help, get) in &SERIES {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (w, m) in workers.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}{{worker=\"{w}\"}} {}",
                get(m).load(Ordering::Relaxed)
            );
        }
    }
    render_links(&mut o, workers);
    render_closes(&mut o, workers);
    o
}

/// Each worker's link to each store.
fn render_links(o: &mut String, workers: &[std::sync::Arc<WorkerMetrics>]) {
    let name = "ringline_edge_link_state";
    let _ = writeln!(
        o,
        "# HELP {name} Each worker's link to each store: 0 down, 1 connecting, 2 up.\n# TYPE {name} gauge"
    );
    for (w, m) in workers.iter().enumerate() {
        for (store, state) in m.stores.iter().zip(&m.links) {
            let _ = writeln!(
                o,
                "{name}{{worker=\"{w}\",store=\"{store}\"}} {}",
                state.load(Ordering::Relaxed)
            );
        }
    }
}

/// Close frames sent, by code.
fn render_closes(o: &mut String, workers: &[std::sync::Arc<WorkerMetrics>]) {
    let name = "ringline_edge_close_frames_sent_total";
    let _ = writeln!(
        o,
        "# HELP {name} Close frames sent, by code.\n# TYPE {name} counter"
    );
    for (w, m) in workers.iter().enumerate() {
        for (i, c) in m.closes.iter().enumerate() {
            let code = CLOSE_CODES
                .get(i)
                .map_or_else(|| "other".to_string(), u16::to_string);
            let _ = writeln!(
                o,
                "{name}{{worker=\"{w}\",code=\"{code}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
}
