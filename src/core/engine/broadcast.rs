//! Broadcast and acknowledgements: what a transport that reaches every peer
//! with one `send` (a pub/sub subject, a JetStream stream, UDP multicast)
//! needs from the core, and what `waitForPeers` reads.
//!
//! Broadcast changes no protocol step: data frames and pings are still
//! encoded once, but instead of one copy per connected peer the binding gets
//! one frame addressed to [`BROADCAST`]. Directed traffic (hello pings, gap
//! requests and their answers) keeps its single destination. Acks are the
//! peers' pings: `GapTracker::acked` is each peer's contiguous seq per origin.

use super::*;

/// The `peer` of an [`Outgoing`] frame meant for every peer at once.
pub const BROADCAST: u32 = 0;

/// One peer's acknowledgement of one origin's writes (`waitForPeers`).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerAck {
    pub peer_id: u32,
    /// Its contiguous seq of the origin, from its last ping (the origin
    /// itself holds every write it made).
    pub seq: u64,
    pub connected: bool,
}

impl Engine {
    /// Queued local patches as frames for [`BROADCAST`]: each frame once.
    pub fn drain_broadcast(&mut self) -> Vec<Outgoing> {
        let Some(&first) = self.connected().first() else {
            // Nobody to reach: drain_outbox drops the queue the same way.
            return self.drain_outbox();
        };
        // drain_outbox encodes each frame once and copies it per peer:
        // keep the copies of one peer.
        self.drain_outbox()
            .into_iter()
            .filter(|o| o.peer == first)
            .map(|o| Outgoing {
                peer: BROADCAST,
                frame: o.frame,
            })
            .collect()
    }

    /// `tick()` for a broadcast transport: queued patches and pings go once
    /// to [`BROADCAST`]; gap requests stay directed. With one connected peer
    /// a ping and a request to it cannot be told apart, so everything but
    /// the patches stays directed then (it reaches the same peer).
    pub fn tick_broadcast(&mut self) -> Result<Vec<Outgoing>> {
        let mut out = self.drain_broadcast();
        let peers = self.connected();
        if peers.len() < 2 {
            let rest = self.tick()?;
            out.extend(self.collapse_to_broadcast(rest));
            return Ok(out);
        }
        // The ping is encoded once for everyone, not once per peer, and
        // carries only what changed (the whole vector now and then).
        let rest = self.tick_with(false)?;
        out.extend(rest);
        for frame in self.delta_ping_frames() {
            out.push(Outgoing {
                peer: BROADCAST,
                frame,
            });
        }
        for p in &peers {
            if let Some(ps) = self.peers.get_mut(p) {
                ps.we_pinged = true;
            }
        }
        self.counters.pings_out += peers.len() as u64;
        Ok(out)
    }

    /// `add_peer()` for a broadcast transport: queued patches go to
    /// [`BROADCAST`], the hello ping to the new peer alone.
    pub fn add_peer_broadcast(&mut self, id: u32) -> Result<Vec<Outgoing>> {
        self.check_open()?;
        let mut out = self.drain_broadcast();
        out.extend(self.add_peer(id)?);
        Ok(out)
    }

    /// Frames that go, byte for byte, to every connected peer (two or more)
    /// become one frame for [`BROADCAST`], at the place of its first copy.
    fn collapse_to_broadcast(&self, out: Vec<Outgoing>) -> Vec<Outgoing> {
        let peers = self.connected();
        if peers.len() < 2 || out.is_empty() {
            return out;
        }
        let first = peers[0];
        // Candidates: what the first peer gets. A candidate is broadcast when
        // every other connected peer gets an identical frame.
        let cands: Vec<usize> = (0..out.len()).filter(|&i| out[i].peer == first).collect();
        let mut copies: Vec<Vec<usize>> = vec![Vec::new(); cands.len()];
        let mut got: Vec<HashSet<u32>> = vec![HashSet::new(); cands.len()];
        for (i, o) in out.iter().enumerate() {
            if o.peer == first {
                continue;
            }
            // Each peer gets at most one copy of a broadcast frame; a second
            // identical frame to the same peer is a copy of the next candidate.
            for (k, &c) in cands.iter().enumerate() {
                if out[c].frame == o.frame && !got[k].contains(&o.peer) {
                    got[k].insert(o.peer);
                    copies[k].push(i);
                    break;
                }
            }
        }
        let mut drop = vec![false; out.len()];
        let mut is_broadcast = vec![false; out.len()];
        for (k, &c) in cands.iter().enumerate() {
            if copies[k].len() + 1 == peers.len() {
                is_broadcast[c] = true;
                for &i in &copies[k] {
                    drop[i] = true;
                }
            }
        }
        out.into_iter()
            .enumerate()
            .filter(|(i, _)| !drop[*i])
            .map(|(i, o)| {
                if is_broadcast[i] {
                    Outgoing {
                        peer: BROADCAST,
                        frame: o.frame,
                    }
                } else {
                    o
                }
            })
            .collect()
    }

    /// Per peer we know (connected or not), its contiguous seq of `origin`'s
    /// writes as its last ping showed. `waitForPeers` counts these.
    pub fn peer_acks(&self, origin: u32) -> Vec<PeerAck> {
        self.peers
            .iter()
            .filter(|(&id, _)| id != self.peer_id && id != BROADCAST)
            .map(|(&id, p)| PeerAck {
                peer_id: id,
                seq: if id == origin {
                    u64::MAX
                } else {
                    self.gaps.acked(id, origin)
                },
                connected: p.connected,
            })
            .collect()
    }

    /// `status().peers[i].ackedSeq`: the peer's contiguous seq of this
    /// peer's writes, from its last ping (0 when never heard).
    pub fn acked_seq(&self, peer: u32) -> u64 {
        self.gaps.acked(peer, self.peer_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(id: u32) -> Engine {
        let mut e = Engine::open(Config {
            peer_id: Some(id),
            ..Config::default()
        })
        .expect("open");
        e.migrate(&[Migration {
            up: "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT) STRICT;
                 CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL,
                   _peerId INTEGER NOT NULL, id INTEGER, v TEXT) STRICT;"
                .into(),
            ..Default::default()
        }])
        .expect("migrate");
        e
    }

    fn row(id: i64) -> Vec<(String, Value)> {
        vec![
            ("id".into(), Value::Int(id)),
            ("v".into(), Value::Text("x".into())),
        ]
    }

    #[test]
    fn patches_and_pings_go_once() {
        let mut a = engine(1);
        for p in 2..=5 {
            a.add_peer_broadcast(p).expect("add");
        }
        a.upsert("t", vec![row(1), row(2)]).expect("write");
        let out = a.tick_broadcast().expect("tick");
        let bc: Vec<_> = out.iter().filter(|o| o.peer == BROADCAST).collect();
        // One patch frame and one ping frame, nothing per peer.
        assert_eq!(bc.len(), 2, "{out:?}");
        assert!(out.iter().all(|o| o.peer == BROADCAST));
    }

    #[test]
    fn broadcast_frames_converge_and_ack() {
        let mut a = engine(1);
        let mut b = engine(2);
        let mut c = engine(3);
        a.add_peer_broadcast(2).expect("add");
        a.add_peer_broadcast(3).expect("add");
        b.add_peer(1).expect("add");
        c.add_peer(1).expect("add");
        a.upsert("t", vec![row(1)]).expect("write");
        for _ in 0..3 {
            for o in a.tick_broadcast().expect("tick") {
                for (id, r) in [(2u32, &mut b), (3, &mut c)] {
                    if o.peer == BROADCAST || o.peer == id {
                        let (_, back) = r.apply_frame(&o.frame).expect("apply");
                        for f in back {
                            a.apply_frame(&f.frame).expect("apply back");
                        }
                    }
                }
            }
            for r in [&mut b, &mut c] {
                for f in r.tick().expect("tick") {
                    a.apply_frame(&f.frame).expect("apply ping");
                }
            }
        }
        assert!(b.has(1, 1) && c.has(1, 1));
        assert_eq!(a.acked_seq(2), 1);
        let acks = a.peer_acks(1);
        assert_eq!(acks.iter().filter(|x| x.seq >= 1).count(), 2);
    }

    #[test]
    fn directed_requests_stay_directed() {
        let mut a = engine(1);
        a.add_peer_broadcast(2).expect("add");
        a.add_peer_broadcast(3).expect("add");
        let out = vec![
            Outgoing {
                peer: 2,
                frame: vec![1, 2, 3],
            },
            Outgoing {
                peer: 3,
                frame: vec![9],
            },
        ];
        let got = a.collapse_to_broadcast(out);
        assert!(got.iter().all(|o| o.peer != BROADCAST));
        assert_eq!(got.len(), 2);
    }
}
