//! After `applyPatches` stored a frame (replication.rs): the bookkeeping of
//! what it brought (held seqs, counters, events, answers to identity
//! clashes) and the frame's control messages (pings, requests, gone
//! answers).

use super::replication::Stored;
use super::*;
use crate::core::sync::GoneOutcome;

impl Engine {
    /// After commit: held seqs, counters, events, and clash answers.
    pub(super) fn note_stored(
        &mut self,
        sender: u32,
        body: &Body,
        st: Stored,
        out: &mut Vec<Outgoing>,
    ) -> Result<(ApplyResult, HashSet<u32>)> {
        let res = st.res;
        self.events.extend(st.events);
        self.counters.patches_applied += res.applied;
        self.counters.duplicates += res.duplicates;
        let mut touched: HashSet<u32> = HashSet::new();
        // An atomic group says its last seq exists: the rest is fetched
        // like any gap (and released if it is gone everywhere).
        for &(o, _, b) in &body.atomic {
            if b < SHADOW_STEP && self.waiting.iter().any(|w| w.0 == o && w.2 == b) {
                let os = self.vector.origin(o);
                if b > os.max_seen {
                    os.max_seen = b;
                    touched.insert(o);
                }
            }
        }
        // Every source first: a move may land where another one left.
        for &(o, from, _, at) in &st.moves {
            self.vector.unhold(o, from, at);
            touched.insert(o);
        }
        for &(o, _, to, at) in &st.moves {
            if !self.vector.holds(o, to) {
                self.vector.hold(o, to, at);
            }
        }
        for (o, s, at) in st.held {
            if !self.vector.holds(o, s) {
                self.vector.hold(o, s, at);
            }
            let e = self.oldest_at.entry(o).or_insert(at);
            *e = (*e).min(at);
            if touched.insert(o) {
                self.gaps.served(sender, o);
            }
        }
        if !st.moves.is_empty() || !st.clashes.is_empty() {
            self.reissued += st.moves.len() as u64;
            self.events.push(Event::Error {
                code: "E_SEQ",
                message: format!(
                    "two versions of the same patch identity met ({} clash(es), e.g. patch {}): a peer's file went back to an older copy, or two files use one peerId. Every version is kept; the later ones are re-issued under identities at seq + k*2^50. If no restore happened, give each server its own peerId.",
                    st.moves.len().max(st.clashes.len()),
                    st.moves
                        .first()
                        .map(|m| format!("{}.{}", m.0, m.1))
                        .or_else(|| st.clashes.first().map(|c| format!("{}.{}", c.0, c.1)))
                        .unwrap_or_default()
                ),
            });
        }
        if st.over_cap > 0 {
            self.events.push(Event::Error {
                code: "E_LIMIT",
                message: format!(
                    "{} patch(es) from peer {sender} were not kept: kept patches for unknown tables or columns are over their cap; run migrate() to apply them, they are fetched again afterwards",
                    st.over_cap
                ),
            });
        }
        if self.pending > 0 && !self.pending_warned {
            self.pending_warned = true;
            self.events.push(Event::Error {
                code: "E_SCHEMA",
                message: format!(
                    "patches from peer {sender} (schema version {}) name tables or columns this peer (schema version {}) lacks; they are kept and applied after migrate()",
                    body.schema_version, self.schema_version
                ),
            });
        }
        // The sender holds a different version of what it sent: show it ours.
        if !st.clashes.is_empty() && sender != self.peer_id {
            let mut asks: Vec<Ranges> = Vec::new();
            for (o, s) in st.clashes.iter().take(64) {
                let base = s % SHADOW_STEP;
                let ranges = (0..=crate::core::sync::MAX_LEVEL)
                    .map(|k| base + k * SHADOW_STEP)
                    .filter(|q| self.vector.holds(*o, *q))
                    .map(|q| (q, q))
                    .collect();
                asks.push(Ranges { origin: *o, ranges });
            }
            out.extend(self.serve(sender, &asks)?);
        }
        // Own writes held beyond our seq: this file is behind the cluster.
        let own = self.vector.regular_max(self.peer_id);
        if own > self.seq {
            let old = self.seq;
            self.seq = own;
            self.save_state()?;
            if !self.behind_warned {
                self.behind_warned = true;
                self.events.push(Event::Error {
                    code: "E_SEQ",
                    message: format!(
                        "peers held writes of this peer ({}) up to seq {own}, but this database stopped at {old}: it was restored from an older copy or its peerId is used by another file. The writes were fetched back; new writes continue from {own}. Writes made meanwhile under the same seqs are kept and re-issued.",
                        self.peer_id
                    ),
                });
            }
        }
        Ok((res, touched))
    }

    /// Pings, requests and gone answers from a peer.
    pub(super) fn note_control(
        &mut self,
        sender: u32,
        body: &Body,
        now: u64,
        touched: &mut HashSet<u32>,
        out: &mut Vec<Outgoing>,
    ) -> Result<()> {
        let ps = self.peers.entry(sender).or_default();
        ps.heard_tick = Some(self.tick_no);
        ps.heard_ms = now;
        ps.schema_version = body.schema_version;
        if let Some(ping) = &body.ping {
            self.counters.pings_in += 1;
            // Claims count only from peers added with addPeer: a ping from
            // any other sender id costs nothing to keep (a stream of pings
            // from made-up ids must not grow state or heartbeats).
            if !ps.added {
                return Ok(());
            }
            ps.pinged_us = true;
            let reply = ps.connected && !ps.we_pinged;
            self.note_ping(sender, ping, touched);
            if reply {
                out.extend(self.ping_to(&[sender]));
            }
        }
        if !body.requests.is_empty() {
            out.extend(self.serve(sender, &body.requests)?);
        }
        for g in &body.gone {
            let st = self.vector.origin(g.origin).clone();
            let first = g.ranges.first().map_or(0, |r| r.0);
            let holders = self.gaps.holders(g.origin, first, &self.connected());
            match self
                .gaps
                .on_gone(sender, g.origin, &g.ranges, &st.held, &holders)
            {
                GoneOutcome::Gone(ranges) => {
                    for &(a, b) in &ranges {
                        self.release_waiting(g.origin, a, b)?;
                    }
                    for (a, b) in ranges.into_iter().take(8) {
                        self.events.push(Event::Error {
                            code: "E_GONE",
                            message: format!(
                                "every peer asked no longer holds patches {a}..{b} of peer {}: restore this peer from a snapshot (Replicator.restore) or accept the loss",
                                g.origin
                            ),
                        });
                    }
                }
                GoneOutcome::AskOthers => {
                    touched.insert(g.origin);
                }
                GoneOutcome::Ignored => {}
            }
        }
        Ok(())
    }
}
