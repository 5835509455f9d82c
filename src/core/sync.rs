//! Sequence vectors and gap tracking.
//!
//! - [`RangeSet`] (in `ranges.rs`): seqs as disjoint inclusive intervals.
//! - [`SeqVector`]: per origin, the seqs held here and a digest of the held
//!   set (XOR of one hash per `(origin, seq, stamp)`), which pings carry so
//!   two peers holding the same seqs find out when their contents differ
//!   (a file rolled back, two files with one peer id).
//! - [`GapTracker`]: what peers claim to hold, what to ask for and whom to
//!   ask, backoff counted in heartbeats, and "gone" answers, accepted only
//!   from the peer that was asked for the range in flight.
//!
//! Seq space: regular seqs are `1..2^50`. A patch that lost an identity
//! clash is re-issued at `seq + k * 2^50` (level `k`, 1..=7), so re-issued
//! identities never meet regular ones. Every pure method here is unit-tested
//! below; the engine calls them instead of editing fields.

use crate::core::ranges::RangeSet;
use std::collections::{BTreeSet, HashMap};

/// Regular seqs are below this; level `k` re-issues live at `k * SHADOW_STEP + seq`.
pub const SHADOW_STEP: u64 = 1 << 50;
/// Highest re-issue level.
pub const MAX_LEVEL: u64 = 7;
/// No seq on the wire or on disk may exceed this (2^53, exact in a JS number).
pub const MAX_SEQ: u64 = 1 << 53;
/// Most origins a peer's claims may name (pings beyond this are ignored).
pub const MAX_CLAIMED_ORIGINS: usize = 4096;
/// Most origins learned from pings in total (data still creates origins).
pub const MAX_LEARNED_ORIGINS: usize = 16384;
/// Most re-issued ranges one claim may carry per origin.
pub const MAX_SHADOW_RANGES: usize = 64;
/// Unanswered requests to one claimer after which its claim is dropped.
pub const CLAIM_PATIENCE: u32 = 6;

/// The re-issue level of a seq (0 = regular).
pub fn level(seq: u64) -> u64 {
    seq / SHADOW_STEP
}

/// A 64-bit mix of one patch identity and stamp (splitmix64 finaliser):
/// stable across builds and platforms.
pub fn patch_hash(origin: u32, seq: u64, at: u64) -> u64 {
    let mut z = (origin as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seq.rotate_left(21))
        ^ at.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What this peer holds of one origin's stream.
#[derive(Debug, Clone, Default)]
pub struct OriginState {
    /// Seqs held (stored and applied, kept, or purged after being held).
    pub held: RangeSet,
    /// XOR of `patch_hash` over every held seq.
    pub digest: u64,
    /// Highest regular seq known to exist from data (patches received, or
    /// refused for drift): the origin holds `1..=max_seen`.
    pub max_seen: u64,
}

impl OriginState {
    /// Highest regular seq held.
    pub fn regular_max(&self) -> u64 {
        self.held.max_below(SHADOW_STEP)
    }
    /// Re-issued ranges held (levels >= 1).
    pub fn shadows(&self, limit: usize) -> Vec<(u64, u64)> {
        self.held.ranges_from(SHADOW_STEP, limit)
    }
}

/// All origins' held seqs.
#[derive(Debug, Clone, Default)]
pub struct SeqVector {
    pub origins: HashMap<u32, OriginState>,
}

impl SeqVector {
    pub fn origin(&mut self, id: u32) -> &mut OriginState {
        self.origins.entry(id).or_default()
    }

    pub fn holds(&self, origin: u32, seq: u64) -> bool {
        self.origins
            .get(&origin)
            .is_some_and(|o| o.held.contains(seq))
    }

    pub fn contiguous(&self, origin: u32) -> u64 {
        self.origins.get(&origin).map_or(0, |o| o.held.contiguous())
    }

    pub fn regular_max(&self, origin: u32) -> u64 {
        self.origins.get(&origin).map_or(0, |o| o.regular_max())
    }

    /// Record a held patch (idempotent only if the caller checks `holds`).
    pub fn hold(&mut self, origin: u32, seq: u64, at: u64) {
        self.hold_all(origin, [(seq, at)]);
    }

    /// [`SeqVector::hold`] of many patches of one origin (one lookup).
    /// Nothing held adds no origin entry (as a loop of `hold` would not).
    pub fn hold_all(&mut self, origin: u32, held: impl IntoIterator<Item = (u64, u64)>) {
        let mut held = held.into_iter().peekable();
        if held.peek().is_none() {
            return;
        }
        let o = self.origin(origin);
        // Consecutive seqs (a local batch) go in as one range.
        let mut run: Option<(u64, u64)> = None;
        for (seq, at) in held {
            run = match run {
                Some((a, b)) if b.checked_add(1) == Some(seq) => Some((a, seq)),
                Some((a, b)) => {
                    o.held.insert_range(a, b);
                    Some((seq, seq))
                }
                None => Some((seq, seq)),
            };
            o.digest ^= patch_hash(origin, seq, at);
            if seq < SHADOW_STEP {
                o.max_seen = o.max_seen.max(seq);
            }
        }
        if let Some((a, b)) = run {
            o.held.insert_range(a, b);
        }
    }

    /// Forget a held patch (it moved to another identity).
    pub fn unhold(&mut self, origin: u32, seq: u64, at: u64) {
        let o = self.origin(origin);
        o.held.remove(seq);
        o.digest ^= patch_hash(origin, seq, at);
    }

    /// Mark `1..=upto` held without digests (a purged prefix whose digest
    /// is restored separately).
    pub fn hold_purged(&mut self, origin: u32, upto: u64, digest: u64) {
        let o = self.origin(origin);
        o.held.insert_range(1, upto);
        o.digest ^= digest;
        o.max_seen = o.max_seen.max(upto.min(SHADOW_STEP - 1));
    }

    /// `(origin, contiguous, regular max held)` for every origin, sorted.
    pub fn ping_vector(&self) -> Vec<(u32, u64, u64)> {
        let mut v: Vec<_> = self
            .origins
            .iter()
            .filter(|(_, o)| !o.held.is_empty())
            .map(|(&id, o)| {
                (
                    id,
                    o.held.contiguous().min(SHADOW_STEP - 1),
                    o.regular_max(),
                )
            })
            .collect();
        v.sort_unstable();
        v
    }
}

/// What a peer said it holds of one origin in its last ping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claim {
    pub contiguous: u64,
    pub max: u64,
    /// Digest of its held set, when sent.
    pub digest: Option<u64>,
    pub shadows: RangeSet,
}

/// Request state of one origin.
#[derive(Debug, Clone, Default)]
pub struct RepairState {
    /// Heartbeat at which the current gaps were first seen (None: no gap).
    pub gap_since: Option<u64>,
    /// Wall-clock ms when the current gaps were first seen (for lag).
    pub gap_since_ms: Option<u64>,
    /// Heartbeat before which no request is repeated.
    pub next_request: u64,
    /// Requests sent since the last progress (drives backoff and rotation).
    pub attempts: u32,
    /// Contiguous seq at the last request, to detect progress.
    pub last_contiguous: u64,
    /// Ranges asked for and not yet timed out, and whom they were asked of.
    pub inflight: RangeSet,
    pub asked: Option<u32>,
    /// Peers that answered the in-flight ranges as gone.
    pub gone_by: BTreeSet<u32>,
    /// Ranges every holder answered as purged: not asked for again.
    pub gone: RangeSet,
}

/// A request to send: ask `target` for `ranges` of the origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub target: u32,
    pub ranges: Vec<(u64, u64)>,
}

/// What an answer "gone" did.
#[derive(Debug, Clone, PartialEq)]
pub enum GoneOutcome {
    /// Not from the peer asked, or not for a range in flight: ignored.
    Ignored,
    /// Noted; other holders are asked next.
    AskOthers,
    /// Every holder said gone: these ranges are lost here for good.
    Gone(Vec<(u64, u64)>),
}

/// Claims of peers and repair state per origin.
#[derive(Debug, Clone, Default)]
pub struct GapTracker {
    pub claims: HashMap<u32, HashMap<u32, Claim>>,
    /// Per origin, the highest `max` and the union of re-issued ranges over
    /// every claim: kept up to date so a heartbeat costs O(origins), not
    /// O(origins x peers).
    claimed_max: HashMap<u32, u64>,
    claimed_shadows: HashMap<u32, RangeSet>,
    pub repair: HashMap<u32, RepairState>,
    /// Unanswered requests per (claimer, origin): a claimer that never
    /// serves what it claims loses its claim.
    pub silent: HashMap<(u32, u32), u32>,
}

impl GapTracker {
    /// Record a peer's claim. A claim without re-issued ranges keeps the
    /// ones the peer claimed before (pings carry them apart, see
    /// `note_shadows`). Returns false when the claim was refused (too many
    /// origins for this peer).
    pub fn note_claim(&mut self, peer: u32, origin: u32, mut claim: Claim) -> bool {
        let m = self.claims.entry(peer).or_default();
        if !m.contains_key(&origin) && m.len() >= MAX_CLAIMED_ORIGINS {
            return false;
        }
        let old = m
            .get_mut(&origin)
            .map(|o| (o.max, std::mem::take(&mut o.shadows)));
        let new_max = claim.max;
        let old_max = old.as_ref().map(|o| o.0);
        let shadows_changed = match old {
            Some((_, old_shadows)) if claim.shadows.is_empty() => {
                claim.shadows = old_shadows;
                false
            }
            Some((_, old_shadows)) => old_shadows != claim.shadows,
            None => !claim.shadows.is_empty(),
        };
        m.insert(origin, claim);
        let cached = self.claimed_max.get(&origin).copied().unwrap_or(0);
        let shrank = old_max.is_some_and(|o| o >= cached && new_max < o);
        if shrank || shadows_changed {
            self.recompute(origin);
        } else if new_max > cached {
            self.claimed_max.insert(origin, new_max);
        }
        true
    }

    /// Rebuild the per-origin caches from every claim (rare: a claim that
    /// shrank or was dropped).
    fn recompute(&mut self, origin: u32) {
        let mut max = 0;
        let mut shadows = RangeSet::new();
        for c in self.claims.values().filter_map(|m| m.get(&origin)) {
            max = max.max(c.max);
            for (a, b) in c.shadows.iter() {
                shadows.insert_range(a, b);
            }
        }
        self.claimed_max.insert(origin, max);
        if shadows.is_empty() {
            self.claimed_shadows.remove(&origin);
        } else {
            self.claimed_shadows.insert(origin, shadows);
        }
    }

    /// Set the re-issued ranges `peer` claims for `origin`.
    pub fn note_shadows(&mut self, peer: u32, origin: u32, shadows: RangeSet) {
        if let Some(c) = self.claims.get_mut(&peer).and_then(|m| m.get_mut(&origin)) {
            c.shadows = shadows;
            self.recompute(origin);
        }
    }

    /// Contiguous seq of `origin` that `peer` said it holds (its ack).
    pub fn acked(&self, peer: u32, origin: u32) -> u64 {
        self.claims
            .get(&peer)
            .and_then(|m| m.get(&origin))
            .map_or(0, |c| c.contiguous)
    }

    /// Drop everything a peer said (removePeer: released for good).
    pub fn forget_peer(&mut self, peer: u32) {
        if let Some(m) = self.claims.remove(&peer) {
            for o in m.keys() {
                self.recompute(*o);
            }
        }
        self.silent.retain(|(p, _), _| *p != peer);
        for r in self.repair.values_mut() {
            r.gone_by.remove(&peer);
            if r.asked == Some(peer) {
                r.asked = None;
            }
        }
    }

    /// Highest regular seq anyone (data or a live claim) says exists.
    pub fn target(&self, origin: u32, st: &OriginState) -> u64 {
        let claimed = self.claimed_max.get(&origin).copied().unwrap_or(0);
        st.max_seen.max(claimed).max(st.regular_max())
    }

    /// Gaps that still need asking for: holes and a lost tail in the regular
    /// range, re-issued ranges others claim, minus what is gone.
    pub fn wanted(&self, origin: u32, st: &OriginState, limit: usize) -> Vec<(u64, u64)> {
        let mut g = st.held.gaps(self.target(origin, st), limit);
        if g.len() < limit {
            if let Some(shadows) = self.claimed_shadows.get(&origin) {
                let extra: Vec<(u64, u64)> = shadows.iter().collect();
                g.extend(
                    st.held
                        .subtract_from(extra)
                        .into_iter()
                        .take(limit - g.len()),
                );
            }
        }
        let mut g = match self.repair.get(&origin) {
            Some(r) if !r.gone.is_empty() => r.gone.subtract_from(g),
            _ => g,
        };
        // Gone ranges can cut the gaps into more pieces than one request
        // may carry: the cap applies after (found by the control fuzzer).
        g.truncate(limit);
        g
    }

    /// Missing count for status (regular range only).
    pub fn missing(&self, origin: u32, st: &OriginState) -> u64 {
        st.held.missing_count(self.target(origin, st))
    }

    /// Peers whose claims cover `seq` of `origin`.
    pub fn holders(&self, origin: u32, seq: u64, among: &[u32]) -> Vec<u32> {
        among
            .iter()
            .copied()
            .filter(|p| {
                *p == origin
                    || self
                        .claims
                        .get(p)
                        .and_then(|m| m.get(&origin))
                        .is_some_and(|c| {
                            if seq < SHADOW_STEP {
                                c.max >= seq
                            } else {
                                c.shadows.contains(seq)
                            }
                        })
            })
            .collect()
    }

    /// Plan a request for `origin`'s gaps. `eager`: a frame just revealed
    /// them (ask only what is not in flight); otherwise a heartbeat (ask
    /// again once the backoff expired, rotating over holders).
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &mut self,
        origin: u32,
        st: &OriginState,
        tick: u64,
        now_ms: u64,
        connected: &[u32],
        hint: Option<u32>,
        eager: bool,
        jitter: u64,
        fit: usize,
    ) -> Option<Ask> {
        let mut wanted = self.wanted(origin, st, fit);
        let contiguous = st.held.contiguous();
        let r = self.repair.entry(origin).or_default();
        if wanted.is_empty() {
            *r = RepairState {
                gone: std::mem::take(&mut r.gone),
                ..Default::default()
            };
            return None;
        }
        if r.gap_since.is_none() {
            r.gap_since = Some(tick);
            r.gap_since_ms = Some(now_ms);
        }
        if contiguous > r.last_contiguous {
            r.attempts = 0;
            r.gone_by.clear();
            r.last_contiguous = contiguous;
        }
        if eager {
            wanted = r.inflight.subtract_from(wanted);
            if wanted.is_empty() {
                return None;
            }
        } else {
            if tick < r.next_request {
                return None;
            }
            // Backoff expired: the peer asked did not answer.
            if let Some(p) = r.asked.take() {
                if !r.inflight.is_empty() {
                    let n = self.silent.entry((p, origin)).or_default();
                    *n += 1;
                    if *n >= CLAIM_PATIENCE {
                        // It claims what it never serves: stop believing it.
                        if let Some(c) = self.claims.get_mut(&p).and_then(|m| m.get_mut(&origin)) {
                            c.max = c.max.min(st.regular_max());
                            c.shadows = RangeSet::new();
                        }
                        self.recompute(origin);
                        self.silent.remove(&(p, origin));
                    }
                }
            }
            let r = self.repair.entry(origin).or_default();
            r.inflight = RangeSet::new();
            wanted = self.wanted(origin, st, fit);
            if wanted.is_empty() {
                return None;
            }
        }
        if connected.is_empty() {
            return None;
        }
        let first = wanted[0].0;
        let mut holders = self.holders(origin, first, connected);
        let r = self.repair.entry(origin).or_default();
        holders.retain(|p| !r.gone_by.contains(p));
        if holders.is_empty() {
            holders = connected
                .iter()
                .copied()
                .filter(|p| !r.gone_by.contains(p))
                .collect();
            if holders.is_empty() {
                return None;
            }
        }
        let rotation = if eager { 0 } else { r.attempts };
        let target = if rotation == 0 && holders.contains(&origin) {
            origin
        } else if let Some(h) = hint.filter(|h| rotation == 0 && holders.contains(h)) {
            h
        } else {
            holders[(rotation as usize) % holders.len()]
        };
        for &(a, b) in &wanted {
            r.inflight.insert_range(a, b);
        }
        r.asked = Some(target);
        if eager {
            r.next_request = r.next_request.max(tick + 1 + jitter);
        } else {
            r.attempts = r.attempts.saturating_add(1);
            r.next_request = tick + backoff_ticks(rotation) + jitter;
        }
        Some(Ask {
            target,
            ranges: wanted,
        })
    }

    /// Progress from `peer` on `origin` (it served something): it is not silent.
    pub fn served(&mut self, peer: u32, origin: u32) {
        self.silent.remove(&(peer, origin));
    }

    /// An answer "gone" from `sender` for `ranges` of `origin`. Linear in the
    /// message: each range costs O(log n) against the in-flight set.
    pub fn on_gone(
        &mut self,
        sender: u32,
        origin: u32,
        ranges: &[(u64, u64)],
        held: &RangeSet,
        holders: &[u32],
    ) -> GoneOutcome {
        let Some(r) = self.repair.get_mut(&origin) else {
            return GoneOutcome::Ignored;
        };
        if r.asked != Some(sender) && !r.gone_by.contains(&sender) {
            return GoneOutcome::Ignored;
        }
        let valid: Vec<(u64, u64)> = ranges
            .iter()
            .copied()
            .filter(|&(a, b)| r.inflight.covers(a, b) && !held.covers(a, b))
            .collect();
        if valid.is_empty() {
            return GoneOutcome::Ignored;
        }
        r.gone_by.insert(sender);
        // Ask the next holder at the next heartbeat.
        r.next_request = 0;
        r.asked = None;
        if holders.iter().all(|p| r.gone_by.contains(p)) {
            for &(a, b) in &valid {
                r.gone.insert_range(a, b);
            }
            r.inflight = RangeSet::new();
            GoneOutcome::Gone(valid)
        } else {
            GoneOutcome::AskOthers
        }
    }
}
/// Backoff in heartbeats after `attempts` unanswered requests: 1, 2, 4, 4...
pub fn backoff_ticks(attempts: u32) -> u64 {
    1u64 << attempts.min(2)
}

#[cfg(test)]
mod tests {
    use super::SeqVector;

    /// `hold_all` (consecutive seqs as one range) holds what one `hold`
    /// per patch holds: same ranges, digest and highest seq seen.
    #[test]
    fn hold_all_matches_holding_one_by_one() {
        let batches: [&[(u64, u64)]; 4] = [
            &[(1, 10), (2, 11), (3, 12), (7, 13), (8, 14), (5, 15)],
            &[(4, 1)],
            &[
                (9, 2),
                (9, 2),
                (10, 3),
                (u64::MAX, 4),
                (1 << 50, 5),
                ((1 << 50) + 1, 6),
            ],
            &[],
        ];
        let mut all = SeqVector::default();
        let mut one = SeqVector::default();
        for b in batches {
            all.hold_all(3, b.iter().copied());
            for &(seq, at) in b {
                one.origin(3).held.insert(seq);
                let o = one.origin(3);
                o.digest ^= super::patch_hash(3, seq, at);
                if seq < super::SHADOW_STEP {
                    o.max_seen = o.max_seen.max(seq);
                }
            }
            let (a, o) = (&all.origins[&3], &one.origins[&3]);
            assert_eq!(
                a.held.ranges_from(0, usize::MAX),
                o.held.ranges_from(0, usize::MAX)
            );
            assert_eq!((a.digest, a.max_seen), (o.digest, o.max_seen));
        }
        assert_eq!(all.contiguous(3), 5);
    }
}
