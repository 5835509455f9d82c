//! Counters and their OpenMetrics rendering (`metrics()`).

use std::collections::BTreeMap;
use std::fmt::Write;

/// Everything counted by a replicator.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub pings_in: u64,
    pub pings_out: u64,
    pub requests_out: u64,
    pub retransmitted: u64,
    pub duplicates: u64,
    pub patches_applied: u64,
    pub local_writes: u64,
    /// Clock rows replayed at open after a run ended with some kept aside.
    pub clocks_replayed: u64,
    pub send_failures: u64,
    pub purged: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Counters {
    pub fn reject(&mut self, code: &'static str) {
        *self.rejected.entry(code).or_default() += 1;
    }
}

/// Gauges sampled at render time.
pub struct Gauges {
    pub peers_connected: usize,
    pub peers_live: usize,
    pub lag: Vec<(u32, f64)>,
    pub pending: u64,
    pub seq: u64,
    pub snapshot_age_s: Option<f64>,
    pub is_leader: bool,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "# HELP {name} {help}");
}

/// OpenMetrics text, ending with `# EOF`.
pub fn render(c: &Counters, g: &Gauges) -> String {
    let mut o = String::new();
    family(&mut o, "quilt_peers", "gauge", "Peers by state.");
    let _ = writeln!(
        o,
        "quilt_peers{{state=\"connected\"}} {}",
        g.peers_connected
    );
    let _ = writeln!(o, "quilt_peers{{state=\"live\"}} {}", g.peers_live);
    family(
        &mut o,
        "quilt_leader",
        "gauge",
        "1 when this peer is the leader.",
    );
    let _ = writeln!(o, "quilt_leader {}", g.is_leader as u8);
    family(
        &mut o,
        "quilt_local_seq",
        "gauge",
        "This peer's last sequence number.",
    );
    let _ = writeln!(o, "quilt_local_seq {}", g.seq);
    family(
        &mut o,
        "quilt_lag_seconds",
        "gauge",
        "Seconds this peer has been missing patches of an origin (0 when caught up).",
    );
    for (origin, lag) in &g.lag {
        let _ = writeln!(o, "quilt_lag_seconds{{origin=\"{origin}\"}} {lag}");
    }
    family(
        &mut o,
        "quilt_frames",
        "counter",
        "Frames received and sent.",
    );
    let _ = writeln!(o, "quilt_frames_total{{direction=\"in\"}} {}", c.frames_in);
    let _ = writeln!(
        o,
        "quilt_frames_total{{direction=\"out\"}} {}",
        c.frames_out
    );
    family(
        &mut o,
        "quilt_bytes",
        "counter",
        "Frame bytes received and sent.",
    );
    let _ = writeln!(o, "quilt_bytes_total{{direction=\"in\"}} {}", c.bytes_in);
    let _ = writeln!(o, "quilt_bytes_total{{direction=\"out\"}} {}", c.bytes_out);
    family(
        &mut o,
        "quilt_retransmissions",
        "counter",
        "Retransmission requests sent and patches served.",
    );
    let _ = writeln!(
        o,
        "quilt_retransmissions_total{{kind=\"requested\"}} {}",
        c.requests_out
    );
    let _ = writeln!(
        o,
        "quilt_retransmissions_total{{kind=\"served\"}} {}",
        c.retransmitted
    );
    family(
        &mut o,
        "quilt_rejected_frames",
        "counter",
        "Frames refused, by error code.",
    );
    for code in ["E_FRAME", "E_AUTH", "E_DRIFT", "E_VERSION", "E_SQLITE"] {
        let _ = writeln!(
            o,
            "quilt_rejected_frames_total{{reason=\"{code}\"}} {}",
            c.rejected.get(code).copied().unwrap_or(0)
        );
    }
    family(
        &mut o,
        "quilt_patches_applied",
        "counter",
        "Remote patches stored and applied.",
    );
    let _ = writeln!(o, "quilt_patches_applied_total {}", c.patches_applied);
    family(
        &mut o,
        "quilt_duplicate_patches",
        "counter",
        "Remote patches already held.",
    );
    let _ = writeln!(o, "quilt_duplicate_patches_total {}", c.duplicates);
    family(
        &mut o,
        "quilt_local_writes",
        "counter",
        "Local patches written.",
    );
    let _ = writeln!(o, "quilt_local_writes_total {}", c.local_writes);
    family(
        &mut o,
        "quilt_clock_rows_replayed",
        "counter",
        "Clock rows replayed at open, left aside when the last run ended.",
    );
    let _ = writeln!(o, "quilt_clock_rows_replayed_total {}", c.clocks_replayed);
    family(
        &mut o,
        "quilt_send_failures",
        "counter",
        "Frames a send callback threw on.",
    );
    let _ = writeln!(o, "quilt_send_failures_total {}", c.send_failures);
    family(
        &mut o,
        "quilt_pending_patches",
        "gauge",
        "Kept patches waiting for a schema that can hold them.",
    );
    let _ = writeln!(o, "quilt_pending_patches {}", g.pending);
    family(
        &mut o,
        "quilt_last_snapshot_age_seconds",
        "gauge",
        "Seconds since the last snapshot (NaN when none).",
    );
    match g.snapshot_age_s {
        Some(a) => {
            let _ = writeln!(o, "quilt_last_snapshot_age_seconds {a}");
        }
        None => {
            let _ = writeln!(o, "quilt_last_snapshot_age_seconds NaN");
        }
    }
    o.push_str("# EOF\n");
    o
}
