//! Gap repair: asking for missing ranges (eagerly when a frame reveals them,
//! again with backoff counted in heartbeats, rotating over the peers that
//! claim them; the decisions are `sync::GapTracker`'s) and serving any
//! origin's patches to whoever asks, within a byte budget per request and
//! per peer per heartbeat.

use super::*;

impl Engine {
    /// Serve requested ranges from the `_patches` tables and kept patches;
    /// purged ranges are answered as gone.
    pub(super) fn serve(&mut self, to: u32, requests: &[Ranges]) -> Result<Vec<Outgoing>> {
        if requests.is_empty() || !self.peers.get(&to).is_some_and(|p| p.connected) {
            return Ok(Vec::new());
        }
        let spent = self.served_bytes.get(&to).copied().unwrap_or(0);
        let budget = SERVE_BYTES_PER_TICK
            .saturating_sub(spent)
            .min(SERVE_BYTES_PER_REQUEST);
        let mut bytes = 0usize;
        let mut b = FrameBuilder::new(
            self.peer_id,
            self.schema_version,
            self.cfg.cluster_key.as_deref(),
            self.cfg.max_frame_bytes,
        );
        b.set_atomic(self.atomic_for(requests)?);
        let mut gone: Vec<Ranges> = Vec::new();
        let mut served = 0usize;
        'outer: for r in requests {
            let mut found_set = RangeSet::new();
            for &(a, bnd) in r.ranges.iter().take(256) {
                if served >= SERVE_LIMIT || bytes >= budget {
                    break 'outer;
                }
                let mut found: BTreeMap<u64, Patch> = BTreeMap::new();
                for t in self.tables.values() {
                    for p in patches::read_patches(
                        &self.conn,
                        &mut self.runs.borrow_mut(),
                        t,
                        r.origin,
                        a,
                        bnd,
                        SERVE_LIMIT - served,
                    )? {
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
                    // A patch partly applied has a row holding what the local
                    // schema can hold and is kept whole: serve it whole.
                    match found.get(&p.seq) {
                        Some(f) if f.at != p.at || f.columns.len() >= p.columns.len() => {}
                        _ => {
                            found.insert(p.seq, p);
                        }
                    }
                }
                for p in found.values().take(SERVE_LIMIT - served) {
                    if bytes >= budget {
                        break;
                    }
                    bytes += protocol::estimate_row(p.values.iter()) + 18;
                    b.push(p);
                    found_set.insert(p.seq);
                    served += 1;
                }
                let upto = self.purged.get(&r.origin).copied().unwrap_or(0);
                if a <= upto && served < SERVE_LIMIT && bytes < budget {
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
        *self.served_bytes.entry(to).or_default() += bytes;
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

    /// The next jitter (0 or 1 heartbeat) and the rng state after it; the
    /// state is kept only when a request is made.
    fn peek_jitter(&self) -> (u64, u64) {
        let mut r = self.rng;
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        (r & 1, r)
    }

    /// One request frame for `peer`.
    pub(super) fn request_frame(&mut self, peer: u32, ranges: Ranges) -> Outgoing {
        let body = Body {
            schema_version: self.schema_version,
            requests: vec![ranges],
            ..Default::default()
        };
        self.counters.requests_out += 1;
        Outgoing {
            peer,
            frame: protocol::encode_frame(self.peer_id, &body, self.key()),
        }
    }

    /// Ask for the gaps of one origin, if its backoff allows. `hint` is the
    /// peer that just spoke (it likely holds what it told us of).
    pub(super) fn request_gaps(
        &mut self,
        origin: u32,
        hint: Option<u32>,
        eager: bool,
        connected: &[u32],
    ) -> (Vec<Outgoing>, u64) {
        let (jitter, next_rng) = self.peek_jitter();
        // A range is two MessagePack ints (~20 bytes): ask for as many as fit.
        let fit = (self.cfg.max_frame_bytes.saturating_sub(96) / 20).clamp(1, 64);
        let Some(st) = self.vector.origins.get(&origin) else {
            return (Vec::new(), 0);
        };
        let ask = self.gaps.plan(
            origin,
            st,
            self.tick_no,
            hlc::wall_ms(),
            connected,
            hint,
            eager,
            jitter,
            fit,
        );
        match ask {
            Some(a) => {
                self.rng = next_rng;
                let n = a.ranges.len() as u64;
                let out = self.request_frame(
                    a.target,
                    Ranges {
                        origin,
                        ranges: a.ranges,
                    },
                );
                (vec![out], n)
            }
            None => (Vec::new(), 0),
        }
    }
}
