//! Pings: what this peer holds (claims per origin with digests, re-issued
//! ranges and the snapshot cover it knows), split to fit maxFrameBytes, and
//! what a received ping tells: claims (bounded in origins and ranges),
//! acknowledgements, the cluster's snapshot cover, and digest mismatches
//! to verify.

use super::*;
use crate::core::sync::{Claim, MAX_LEARNED_ORIGINS, MAX_SHADOW_RANGES};

impl Engine {
    pub(super) fn ping_body(&self) -> Ping {
        let vector = self.vector.ping_vector();
        let digests = vector
            .iter()
            .map(|(o, _, _)| self.vector.origins.get(o).map_or(0, |s| s.digest))
            .collect();
        let mut shadows: Vec<Ranges> = self
            .vector
            .origins
            .iter()
            .filter(|(_, s)| s.held.max() >= crate::core::sync::SHADOW_STEP)
            .map(|(&o, s)| Ranges {
                origin: o,
                ranges: s.shadows(MAX_SHADOW_RANGES),
            })
            .filter(|r| !r.ranges.is_empty())
            .collect();
        shadows.sort_unstable_by_key(|r| r.origin);
        let mut cover: Vec<(u32, u64)> = self.cluster_cover.iter().map(|(&o, &c)| (o, c)).collect();
        cover.sort_unstable();
        cover.truncate(protocol::MAX_PING_ENTRIES);
        Ping {
            own_last_seq: self.seq,
            vector,
            digests,
            shadows,
            cover,
        }
    }

    pub(super) fn ping_to(&mut self, peers: &[u32]) -> Vec<Outgoing> {
        if peers.is_empty() {
            return Vec::new();
        }
        let frames = self.ping_frames();
        let mut out = Vec::new();
        for &p in peers {
            if let Some(ps) = self.peers.get_mut(&p) {
                ps.we_pinged = true;
            }
            for frame in &frames {
                out.push(Outgoing {
                    peer: p,
                    frame: frame.clone(),
                });
            }
        }
        self.counters.pings_out += peers.len() as u64;
        out
    }

    /// The encoded ping, split so each frame fits maxFrameBytes: a vector
    /// entry with its digest is at most ~40 bytes, a range ~20.
    pub(super) fn ping_frames(&self) -> Vec<Vec<u8>> {
        self.frames_of(self.ping_body())
    }

    /// The broadcast ping: only the entries that changed since the last
    /// one, and the whole vector every `FULL_PING_EVERY` heartbeats (a
    /// receiver keeps the claims a ping does not mention). Bytes each peer
    /// receives then grow with what changes, not with N² per heartbeat.
    pub(super) fn delta_ping_frames(&mut self) -> Vec<Vec<u8>> {
        let mut ping = self.ping_body();
        let full = self.tick_no % FULL_PING_EVERY == 0 || self.last_ping.is_empty();
        let (mut vector, mut digests) = (Vec::new(), Vec::new());
        for (e, d) in ping.vector.into_iter().zip(ping.digests) {
            let now = (e.1, e.2, d);
            let changed = self.last_ping.get(&e.0) != Some(&now);
            if changed {
                self.last_ping.insert(e.0, now);
            }
            if full || changed || e.0 == self.peer_id {
                vector.push(e);
                digests.push(d);
            }
        }
        ping.vector = vector;
        ping.digests = digests;
        self.frames_of(ping)
    }

    fn frames_of(&self, ping: Ping) -> Vec<Vec<u8>> {
        let room = self.cfg.max_frame_bytes.saturating_sub(96).max(40);
        let per_frame = (room / 40).clamp(1, protocol::MAX_PING_ENTRIES);
        let mut parts: Vec<Ping> = Vec::new();
        let mut i = 0;
        while i < ping.vector.len() || parts.is_empty() {
            let j = (i + per_frame).min(ping.vector.len());
            parts.push(Ping {
                own_last_seq: ping.own_last_seq,
                vector: ping.vector[i..j].to_vec(),
                digests: ping.digests[i..j].to_vec(),
                ..Default::default()
            });
            i = j;
        }
        // Re-issued ranges and the cover ride in the last frame when they
        // fit, else in one of their own.
        let used = parts.last().map_or(0, |p| p.vector.len() * 40);
        let mut budget = room;
        let mut extra = Ping {
            own_last_seq: ping.own_last_seq,
            ..Default::default()
        };
        for r in ping.shadows {
            let cost = 8 + r.ranges.len() * 20;
            if cost > budget {
                break;
            }
            budget -= cost;
            extra.shadows.push(r);
        }
        for c in ping.cover {
            if budget < 20 {
                break;
            }
            budget -= 20;
            extra.cover.push(c);
        }
        if used <= budget {
            if let Some(last) = parts.last_mut() {
                last.shadows = extra.shadows;
                last.cover = extra.cover;
            }
        } else if !extra.shadows.is_empty() || !extra.cover.is_empty() {
            parts.push(extra);
        }
        parts
            .into_iter()
            .map(|p| {
                let body = Body {
                    schema_version: self.schema_version,
                    ping: Some(p),
                    ..Default::default()
                };
                protocol::encode_frame(self.peer_id, &body, self.key())
            })
            .collect()
    }

    /// Take in a ping: claims per origin (bounded), the cluster's snapshot
    /// cover, and a digest check on origins both sides hold alike.
    pub(super) fn note_ping(&mut self, sender: u32, ping: &Ping, touched: &mut HashSet<u32>) {
        let mut shadows: HashMap<u32, RangeSet> = HashMap::new();
        for r in &ping.shadows {
            let e = shadows.entry(r.origin).or_default();
            for &(a, b) in r.ranges.iter().take(MAX_SHADOW_RANGES) {
                e.insert_range(a, b);
            }
        }

        for (i, &(o, c, m)) in ping.vector.iter().enumerate() {
            let known = self.vector.origins.contains_key(&o);
            if !known && self.vector.origins.len() >= MAX_LEARNED_ORIGINS {
                continue;
            }
            let claim = Claim {
                contiguous: c.min(m),
                max: m.min(SHADOW_STEP - 1),
                digest: ping.digests.get(i).copied(),
                shadows: RangeSet::new(),
            };
            if !self.gaps.note_claim(sender, o, claim) {
                continue;
            }
            self.vector.origin(o);
            touched.insert(o);
            self.maybe_verify(sender, o);
        }
        for (o, set) in shadows {
            if self
                .gaps
                .claims
                .get(&sender)
                .is_some_and(|m| m.contains_key(&o))
            {
                self.gaps.note_shadows(sender, o, set);
                touched.insert(o);
            }
        }
        for &(o, c) in ping.cover.iter() {
            if self.vector.origins.contains_key(&o) {
                let e = self.cluster_cover.entry(o).or_default();
                *e = (*e).max(c.min(SHADOW_STEP - 1));
            }
        }
    }

    pub(super) fn check_synced(&mut self) {
        let ids: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected && p.pinged_us && !p.synced)
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            let caught_up = self.gaps.claims.get(&id).is_none_or(|m| {
                m.iter().all(|(&o, c)| {
                    o == self.peer_id
                        || self.vector.contiguous(o) >= c.contiguous
                        || self.gaps.repair.get(&o).is_some_and(|s| !s.gone.is_empty())
                })
            });
            if caught_up {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.synced = true;
                }
                self.events.push(Event::Synced(id));
            }
        }
    }
}
