//! Gap repair: asking for missing ranges (eagerly when a frame reveals them,
//! again with backoff counted in heartbeats, rotating over the peers that
//! hold them) and serving any origin's patches to whoever asks.

use super::*;

impl Engine {
    /// Serve requested ranges from the `_patches` tables and kept patches;
    /// purged ranges are answered as gone.
    pub(super) fn serve(&mut self, to: u32, requests: &[Ranges]) -> Result<Vec<Outgoing>> {
        if requests.is_empty() || !self.peers.get(&to).is_some_and(|p| p.connected) {
            return Ok(Vec::new());
        }
        let mut b = FrameBuilder::new(
            self.peer_id,
            self.schema_version,
            self.cfg.cluster_key.as_deref(),
            self.cfg.max_frame_bytes,
        );
        let mut gone: Vec<Ranges> = Vec::new();
        let mut served = 0usize;
        for r in requests {
            let mut found_set = RangeSet::new();
            for &(a, bnd) in r.ranges.iter().take(256) {
                if served >= SERVE_LIMIT {
                    break;
                }
                let mut found: BTreeMap<u64, Patch> = BTreeMap::new();
                for t in self.tables.values() {
                    for p in
                        store::read_patches(&self.conn, t, r.origin, a, bnd, SERVE_LIMIT - served)?
                    {
                        found.insert(p.seq, p);
                    }
                }
                for k in store::read_kept(&self.conn, Some((r.origin, a, bnd)))? {
                    let mut p = k.patch;
                    p.columns = Arc::new(
                        p.columns
                            .iter()
                            .map(|c| self.map_column(&p.table, c, k.schema_version))
                            .collect(),
                    );
                    found.insert(p.seq, p);
                }
                for p in found.values().take(SERVE_LIMIT - served) {
                    b.push(p);
                    found_set.insert(p.seq);
                    served += 1;
                }
                let upto = self.purged.get(&r.origin).copied().unwrap_or(0);
                if a <= upto && served < SERVE_LIMIT {
                    let missing = found_set.subtract_from(vec![(a, bnd.min(upto))]);
                    if !missing.is_empty() {
                        gone.push(Ranges {
                            origin: r.origin,
                            ranges: missing,
                        });
                    }
                }
            }
        }
        self.counters.retransmitted += served as u64;
        if !gone.is_empty() {
            let fit = (self.cfg.max_frame_bytes.saturating_sub(96) / 24).max(1);
            let mut n = 0;
            for g in gone.iter_mut() {
                g.ranges.truncate(fit.saturating_sub(n).max(1));
                n += g.ranges.len();
            }
            gone.retain(|g| !g.ranges.is_empty());
            gone.truncate(fit);
        }
        let mut frames = b.finish();
        if !gone.is_empty() {
            // In a frame of its own, so it never pushes a full frame over the limit.
            let body = Body {
                schema_version: self.schema_version,
                gone,
                ..Default::default()
            };
            frames.push(protocol::encode_frame(self.peer_id, &body, self.key()));
        }
        Ok(frames
            .into_iter()
            .map(|frame| Outgoing { peer: to, frame })
            .collect())
    }

    pub(super) fn jitter(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng & 1
    }

    /// Ask for the gaps of one origin, if its backoff allows. `hint` is the
    /// peer that just spoke (it likely holds what it told us of).
    pub(super) fn request_gaps(
        &mut self,
        origin: u32,
        hint: Option<u32>,
        eager: bool,
    ) -> (Vec<Outgoing>, u64) {
        let tick = self.tick_no;
        let connected = self.connected();
        let st = self.vector.origin(origin);
        // A range is two MessagePack ints (~20 bytes): ask for as many as fit.
        let fit = (self.cfg.max_frame_bytes.saturating_sub(96) / 20).clamp(1, 64);
        let mut wanted = st.wanted(fit);
        if wanted.is_empty() {
            st.gap_since = None;
            st.gap_since_ms = None;
            st.attempts = 0;
            st.inflight = RangeSet::new();
            return (Vec::new(), 0);
        }
        if st.gap_since.is_none() {
            st.gap_since = Some(tick);
            st.gap_since_ms = Some(hlc::wall_ms());
        }
        let contiguous = st.held.contiguous();
        if contiguous > st.last_contiguous {
            st.attempts = 0;
            st.last_contiguous = contiguous;
        }
        if eager {
            // Only gaps not already asked for: answers to earlier requests
            // are on their way, asking again would multiply the resends.
            wanted = st.inflight.subtract_from(wanted);
            if wanted.is_empty() {
                return (Vec::new(), 0);
            }
        } else {
            if tick < st.next_request {
                return (Vec::new(), 0);
            }
            // Backoff expired: whatever is still missing is asked again.
            st.inflight = RangeSet::new();
        }
        if connected.is_empty() {
            return (Vec::new(), 0);
        }
        let rotation = if eager { 0 } else { st.attempts };
        let first = wanted[0];
        let mut holders: Vec<u32> = connected
            .iter()
            .copied()
            .filter(|p| {
                *p == origin
                    || self
                        .peers
                        .get(p)
                        .and_then(|s| s.holds.get(&origin))
                        .is_some_and(|&c| c >= first.0)
            })
            .collect();
        if holders.is_empty() {
            holders = connected.clone();
        }
        let target = if rotation == 0 && connected.contains(&origin) {
            origin
        } else if let Some(h) = hint.filter(|h| rotation == 0 && holders.contains(h)) {
            h
        } else {
            holders[(rotation as usize) % holders.len()]
        };
        let jitter = self.jitter();
        let st = self.vector.origin(origin);
        for &(a, b) in &wanted {
            st.inflight.insert_range(a, b);
        }
        if eager {
            st.next_request = st.next_request.max(tick + 1 + jitter);
        } else {
            st.attempts = st.attempts.saturating_add(1);
            st.next_request = tick + backoff_ticks(rotation) + jitter;
        }
        let n = wanted.len() as u64;
        let body = Body {
            schema_version: self.schema_version,
            requests: vec![Ranges {
                origin,
                ranges: wanted,
            }],
            ..Default::default()
        };
        self.counters.requests_out += 1;
        let frame = protocol::encode_frame(self.peer_id, &body, self.key());
        (
            vec![Outgoing {
                peer: target,
                frame,
            }],
            n,
        )
    }
}
