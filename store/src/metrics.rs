//! What the store counts, and its Prometheus text rendering. The core, the committer
//! and the link server update plain atomics (no lock on any hot path); the admin
//! server ([`crate::admin`]) renders them on `GET /metrics`. Per-partition figures are
//! published by the core once a second.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dedup::DedupStats;

/// A histogram with fixed upper bounds, in Prometheus' cumulative form when rendered.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, as f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with these upper bounds (ascending); a `+Inf` bucket is implied.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|&b| b < v);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // Only one thread observes each histogram, so load + store does not lose sums.
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + v;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(b) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// One owned partition's log, as last published by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLog {
    /// The partition.
    pub partition: u32,
    /// First retained seq (everything before it is trimmed).
    pub first_seq: u64,
    /// Last committed seq.
    pub last_seq: u64,
}

const SIZE_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];
const SECONDS_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every figure the store exports.
#[derive(Debug)]
pub struct Metrics {
    /// Writes committed.
    pub writes: AtomicU64,
    /// Writes refused (conflict, wrong partition, too large) or failed.
    pub write_errors: AtomicU64,
    /// Engine batches committed.
    pub commits: AtomicU64,
    /// Of those, committed with fsync.
    pub fsyncs: AtomicU64,
    /// Writes per committed batch (the group-commit size).
    pub commit_writes: Histogram,
    /// Time for the engine to commit one batch (fsync included).
    pub commit_seconds: Histogram,
    /// Reads answered (get).
    pub gets: AtomicU64,
    /// Reads (gets, watch starts) refused (wrong partition) or failed.
    pub read_errors: AtomicU64,
    /// Watches started, by how: snapshot, resumed, reset.
    pub watch_snapshot: AtomicU64,
    /// Watches resumed from a position.
    pub watch_resumed: AtomicU64,
    /// Watches whose position could not be resumed (reset + snapshot).
    pub watch_reset: AtomicU64,
    /// Of the resumed watches, those that took an earlier watch's read of the same
    /// target and position (the partition had not moved since).
    pub resumes_shared: AtomicU64,
    /// Change entries sent to links.
    pub deliveries: AtomicU64,
    /// Links open now.
    pub links: AtomicU64,
    /// Links accepted since start.
    pub links_accepted: AtomicU64,
    /// Links dropped because their peer stopped reading.
    pub links_dropped_stuck: AtomicU64,
    /// Links closed for a malformed frame.
    pub links_dropped_malformed: AtomicU64,
    /// Times a link's reader stopped reading because the core held as much of the
    /// link's requests as it may (`core::intake`).
    pub link_reads_paused: AtomicU64,
    /// Links refused: no proof of the cluster secret, a wrong one, or none in time.
    pub links_dropped_unauthenticated: AtomicU64,
    /// Links whose TLS handshake failed (link TLS on).
    pub links_dropped_tls: AtomicU64,
    /// Watches registered now.
    pub watches: AtomicU64,
    /// Writes waiting for the next batch.
    pub queued_writes: AtomicU64,
    /// Bytes handed to link writers and not yet written, over all links.
    pub link_queue_bytes: AtomicU64,
    /// Per owned partition: the retained log.
    pub partitions: Mutex<Vec<PartitionLog>>,
    /// Writes remembered by msg_id, as last published by the core.
    pub dedup: Mutex<DedupStats>,
    /// Presence members held now.
    pub presence_members: AtomicU64,
    /// Channels with presence members now.
    pub presence_channels: AtomicU64,
    /// Members that left because their edge was gone past the grace period.
    pub presence_expired: AtomicU64,
    /// Members that left because their relinked worker no longer announced them.
    pub presence_stale: AtomicU64,
    /// The link listener is up: `GET /health` says ok (503 before).
    pub serving: std::sync::atomic::AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            writes: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            commit_writes: Histogram::new(SIZE_BOUNDS),
            commit_seconds: Histogram::new(SECONDS_BOUNDS),
            gets: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            watch_snapshot: AtomicU64::new(0),
            watch_resumed: AtomicU64::new(0),
            watch_reset: AtomicU64::new(0),
            resumes_shared: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            links: AtomicU64::new(0),
            links_accepted: AtomicU64::new(0),
            links_dropped_stuck: AtomicU64::new(0),
            links_dropped_malformed: AtomicU64::new(0),
            link_reads_paused: AtomicU64::new(0),
            links_dropped_unauthenticated: AtomicU64::new(0),
            links_dropped_tls: AtomicU64::new(0),
            watches: AtomicU64::new(0),
            queued_writes: AtomicU64::new(0),
            link_queue_bytes: AtomicU64::new(0),
            partitions: Mutex::new(Vec::new()),
            dedup: Mutex::new(DedupStats::default()),
            presence_members: AtomicU64::new(0),
            presence_channels: AtomicU64::new(0),
            presence_expired: AtomicU64::new(0),
            presence_stale: AtomicU64::new(0),
            serving: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, kind: &str, v: &AtomicU64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
        v.load(Ordering::Relaxed)
    );
}

/// A counter with one label, one sample per label value.
fn labeled(out: &mut String, name: &str, help: &str, label: &str, values: &[(&str, &AtomicU64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, v) in values {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{value}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

impl Metrics {
    /// Add `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Set a gauge.
    pub fn set(g: &AtomicU64, v: u64) {
        g.store(v, Ordering::Relaxed);
    }

    /// Publish the owned partitions' logs.
    pub fn publish_partitions(&self, logs: Vec<PartitionLog>) {
        if let Ok(mut p) = self.partitions.lock() {
            *p = logs;
        }
    }

    /// Publish the figures of writes remembered by msg_id.
    pub fn publish_dedup(&self, stats: DedupStats) {
        if let Ok(mut d) = self.dedup.lock() {
            *d = stats;
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(16 * 1024);
        self.render_writes(&mut o);
        self.render_reads(&mut o);
        self.render_links(&mut o);
        self.render_partitions(&mut o);
        self.render_dedup(&mut o);
        self.render_presence(&mut o);
        o
    }

    /// Presence: members and channels held, and members the store made leave.
    fn render_presence(&self, o: &mut String) {
        counter(
            o,
            "ringline_store_presence_members",
            "Presence members held.",
            "gauge",
            &self.presence_members,
        );
        counter(
            o,
            "ringline_store_presence_channels",
            "Channels with presence members.",
            "gauge",
            &self.presence_channels,
        );
        labeled(
            o,
            "ringline_store_presence_removed_total",
            "Presence members the store made leave: their edge gone past the grace period (expired), or no longer announced by their relinked worker (stale).",
            "reason",
            &[
                ("expired", &self.presence_expired),
                ("stale", &self.presence_stale),
            ],
        );
    }

    /// Writes remembered by msg_id: held, repeats, and why entries left.
    fn render_dedup(&self, o: &mut String) {
        let d = self.dedup.lock().map(|d| *d).unwrap_or_default();
        let _ = writeln!(
            o,
            "# HELP ringline_store_dedup_entries Writes remembered by msg_id.\n# TYPE ringline_store_dedup_entries gauge\nringline_store_dedup_entries {}",
            d.entries
        );
        let _ = writeln!(
            o,
            "# HELP ringline_store_dedup_repeats_total Writes repeating a remembered msg_id: answered with the first outcome, or refused (a different write).\n# TYPE ringline_store_dedup_repeats_total counter\nringline_store_dedup_repeats_total{{outcome=\"answered\"}} {}\nringline_store_dedup_repeats_total{{outcome=\"refused\"}} {}",
            d.repeats, d.mismatched
        );
        let _ = writeln!(
            o,
            "# HELP ringline_store_dedup_removed_total Remembered writes forgotten: after the window, or early past the bound.\n# TYPE ringline_store_dedup_removed_total counter\nringline_store_dedup_removed_total{{reason=\"expired\"}} {}\nringline_store_dedup_removed_total{{reason=\"evicted\"}} {}",
            d.expired, d.evicted
        );
    }

    /// Writes, their errors and their commits.
    fn render_writes(&self, o: &mut String) {
        let c = "counter";
        counter(
            o,
            "ringline_store_writes_total",
            "Writes committed.",
            c,
            &self.writes,
        );
        counter(
            o,
            "ringline_store_write_errors_total",
            "Writes refused or failed.",
            c,
            &self.write_errors,
        );
        counter(
            o,
            "ringline_store_commits_total",
            "Engine batches committed (group commits).",
            c,
            &self.commits,
        );
        counter(
            o,
            "ringline_store_fsyncs_total",
            "Batches committed with fsync.",
            c,
            &self.fsyncs,
        );
        self.commit_writes.render(
            o,
            "ringline_store_commit_writes",
            "Writes per committed batch (group-commit size).",
        );
        self.commit_seconds.render(
            o,
            "ringline_store_commit_seconds",
            "Time to commit one batch, fsync included.",
        );
    }

    /// Reads, watch starts and what the watches were sent.
    fn render_reads(&self, o: &mut String) {
        let c = "counter";
        counter(
            o,
            "ringline_store_gets_total",
            "Reads answered.",
            c,
            &self.gets,
        );
        counter(
            o,
            "ringline_store_read_errors_total",
            "Reads (gets, watch starts) refused or failed.",
            c,
            &self.read_errors,
        );
        labeled(
            o,
            "ringline_store_watch_starts_total",
            "Watches started, by how they started.",
            "how",
            &[
                ("snapshot", &self.watch_snapshot),
                ("resumed", &self.watch_resumed),
                ("reset", &self.watch_reset),
            ],
        );
        counter(
            o,
            "ringline_store_resumes_shared_total",
            "Watches resumed from an earlier watch's read of the same target and position (the partition had not moved since): a reconnect storm's clients of one key cost one read.",
            c,
            &self.resumes_shared,
        );
        counter(
            o,
            "ringline_store_deliveries_total",
            "Change entries sent to links.",
            c,
            &self.deliveries,
        );
    }

    /// Links, their watches and their queues.
    fn render_links(&self, o: &mut String) {
        let (c, g) = ("counter", "gauge");
        counter(
            o,
            "ringline_store_links",
            "Edge links open.",
            g,
            &self.links,
        );
        counter(
            o,
            "ringline_store_links_accepted_total",
            "Edge links accepted.",
            c,
            &self.links_accepted,
        );
        labeled(
            o,
            "ringline_store_links_dropped_total",
            "Links the store dropped, by reason.",
            "reason",
            &[
                ("stuck", &self.links_dropped_stuck),
                ("malformed", &self.links_dropped_malformed),
                ("unauthenticated", &self.links_dropped_unauthenticated),
                ("tls", &self.links_dropped_tls),
            ],
        );
        counter(
            o,
            "ringline_store_link_reads_paused_total",
            "Times a link's reader stopped reading: the store held as many of its requests unanswered as it may.",
            c,
            &self.link_reads_paused,
        );
        counter(
            o,
            "ringline_store_watches",
            "Watches registered.",
            g,
            &self.watches,
        );
        counter(
            o,
            "ringline_store_queued_writes",
            "Writes waiting for the next batch.",
            g,
            &self.queued_writes,
        );
        counter(
            o,
            "ringline_store_link_queue_bytes",
            "Bytes queued for links and not yet written.",
            g,
            &self.link_queue_bytes,
        );
    }

    /// Per owned partition: its retained log, as last published.
    fn render_partitions(&self, o: &mut String) {
        let parts = self
            .partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "# HELP ringline_store_log_entries Entries retained in a partition's change log.\n# TYPE ringline_store_log_entries gauge"
        );
        for p in &parts {
            let n = (p.last_seq + 1).saturating_sub(p.first_seq);
            let _ = writeln!(
                o,
                "ringline_store_log_entries{{partition=\"{}\"}} {n}",
                p.partition
            );
        }
        let _ = writeln!(
            o,
            "# HELP ringline_store_log_last_seq Last committed seq of a partition.\n# TYPE ringline_store_log_last_seq gauge"
        );
        for p in &parts {
            let _ = writeln!(
                o,
                "ringline_store_log_last_seq{{partition=\"{}\"}} {}",
                p.partition, p.last_seq
            );
        }
        let _ = writeln!(
            o,
            "# HELP ringline_store_log_trimmed_seq Last trimmed seq of a partition (positions at or before it get a reset).\n# TYPE ringline_store_log_trimmed_seq gauge"
        );
        for p in &parts {
            let _ = writeln!(
                o,
                "ringline_store_log_trimmed_seq{{partition=\"{}\"}} {}",
                p.partition,
                p.first_seq.saturating_sub(1)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 5.0, 50.0] {
            h.observe(v);
        }
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"10\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_sum 56.5\n"), "{s}");
        assert!(s.contains("x_count 4\n"), "{s}");
    }

    #[test]
    fn render_lists_every_partition() {
        let m = Metrics::default();
        Metrics::add(&m.writes, 3);
        m.publish_partitions(vec![PartitionLog {
            partition: 7,
            first_seq: 11,
            last_seq: 20,
        }]);
        let s = m.render();
        assert!(s.contains("ringline_store_writes_total 3\n"));
        assert!(s.contains("ringline_store_log_entries{partition=\"7\"} 10\n"));
        assert!(s.contains("ringline_store_log_trimmed_seq{partition=\"7\"} 10\n"));
        m.publish_dedup(DedupStats {
            entries: 5,
            repeats: 2,
            mismatched: 1,
            expired: 4,
            evicted: 3,
        });
        let s = m.render();
        for line in [
            "ringline_store_dedup_entries 5\n",
            "ringline_store_dedup_repeats_total{outcome=\"answered\"} 2\n",
            "ringline_store_dedup_repeats_total{outcome=\"refused\"} 1\n",
            "ringline_store_dedup_removed_total{reason=\"expired\"} 4\n",
            "ringline_store_dedup_removed_total{reason=\"evicted\"} 3\n",
        ] {
            assert!(s.contains(line), "{line}");
        }
    }
}
