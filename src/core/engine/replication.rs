//! Peers and frames: hello pings, outgoing batches, `applyPatches`,
//! serving retransmissions from any peer, gap requests with backoff counted
//! in heartbeats, the heartbeat itself and retention.

use super::*;

impl Engine {
    // ----- peers and frames -------------------------------------------------

    pub fn add_peer(&mut self, id: u32) -> Result<Vec<Outgoing>> {
        self.check_open()?;
        if id == 0 {
            return Err(Error::Range("peerId must be a u32 > 0".into()));
        }
        let p = self.peers.entry(id).or_default();
        let fresh = !p.connected;
        p.connected = true;
        if fresh {
            p.synced = false;
            p.we_pinged = false;
        }
        // Say hello: our vector lets the peer find what it lacks at once.
        let mut out = self.drain_outbox();
        out.extend(self.ping_to(&[id]));
        Ok(out)
    }

    pub fn remove_peer(&mut self, id: u32) -> Result<()> {
        self.check_open()?;
        if let Some(p) = self.peers.get_mut(&id) {
            p.connected = false;
            p.synced = false;
        }
        Ok(())
    }

    pub(super) fn connected(&self) -> Vec<u32> {
        self.peers
            .iter()
            .filter(|(id, p)| p.connected && **id != self.peer_id)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(super) fn key(&self) -> Option<&[u8]> {
        self.cfg.cluster_key.as_deref()
    }

    pub(super) fn ping_body(&self) -> Ping {
        let mut vector = self.vector.ping_vector();
        vector.retain(|v| v.0 != self.peer_id);
        vector.push((
            self.peer_id,
            self.vector.contiguous(self.peer_id).min(self.seq),
            self.seq,
        ));
        Ping {
            own_last_seq: self.seq,
            vector,
        }
    }

    pub(super) fn ping_to(&mut self, peers: &[u32]) -> Vec<Outgoing> {
        if peers.is_empty() {
            return Vec::new();
        }
        // A vector entry is at most 3 MessagePack ints (~30 bytes): split a
        // long vector over several pings so each frame fits maxFrameBytes.
        let ping = self.ping_body();
        let per_frame = (self.cfg.max_frame_bytes.saturating_sub(96) / 30).max(1);
        let frames: Vec<Vec<u8>> = ping
            .vector
            .chunks(per_frame)
            .map(|part| {
                let body = Body {
                    schema_version: self.schema_version,
                    ping: Some(Ping {
                        own_last_seq: ping.own_last_seq,
                        vector: part.to_vec(),
                    }),
                    ..Default::default()
                };
                protocol::encode_frame(self.peer_id, &body, self.key())
            })
            .collect();
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

    /// Queued local patches as frames for every connected peer.
    pub fn drain_outbox(&mut self) -> Vec<Outgoing> {
        if self.outbox.is_empty() {
            return Vec::new();
        }
        let patches = std::mem::take(&mut self.outbox);
        let peers = self.connected();
        if peers.is_empty() {
            return Vec::new();
        }
        let mut b = FrameBuilder::new(
            self.peer_id,
            self.schema_version,
            self.cfg.cluster_key.as_deref(),
            self.cfg.max_frame_bytes,
        );
        for p in &patches {
            b.push(p);
        }
        let frames = b.finish();
        let mut out = Vec::with_capacity(frames.len() * peers.len());
        for f in &frames {
            for &p in &peers {
                out.push(Outgoing {
                    peer: p,
                    frame: f.clone(),
                });
            }
        }
        out
    }

    /// Count frames handed to `send`, their bytes, and sends that threw
    /// (those are retried, and the gap protocol repairs what stays lost).
    pub fn count_sent(&mut self, frames: u64, bytes: u64, failures: u64) {
        self.counters.frames_out += frames;
        self.counters.bytes_out += bytes;
        self.counters.send_failures += failures;
    }

    /// `applyPatches`: check, decode, store and apply a frame in one
    /// transaction, then answer it. A frame that is not valid changes nothing.
    pub fn apply_frame(&mut self, bytes: &[u8]) -> Result<(ApplyResult, Vec<Outgoing>)> {
        self.check_open()?;
        let frame = match protocol::decode_frame(
            bytes,
            self.cfg.cluster_key.as_deref(),
            self.cfg.max_frame_bytes,
        ) {
            Ok(f) => f,
            Err(e) => {
                self.counters.reject(e.code());
                return Err(e);
            }
        };
        let sender = frame.sender;
        let body = frame.body;
        let now = hlc::wall_ms();
        // Drift: refuse the whole frame, but remember the seqs exist so the
        // gap protocol fetches them again once the clocks agree.
        let too_far = body
            .groups
            .iter()
            .flat_map(|g| g.patches())
            .find(|p| !Hlc::within_drift(p.at, now, self.cfg.max_drift_ms));
        if let Some(p) = too_far {
            for g in &body.groups {
                for q in g.patches() {
                    let o = self.vector.origin(q.origin);
                    o.max_seen = o.max_seen.max(q.seq);
                }
            }
            self.counters.reject("E_DRIFT");
            return Err(Error::Drift(format!(
                "frame from peer {sender} is stamped {} ms ahead of the local clock (maxDriftMs {})",
                hlc::to_unix_ms(p.at).saturating_sub(now),
                self.cfg.max_drift_ms
            )));
        }
        let mut res;
        let mut new_held: Vec<(u32, u64)> = Vec::new();
        let mut seen: HashSet<(u32, u64)> = HashSet::new();
        let hlc_before = self.hlc.clone();
        let pending_before = self.pending;
        // A patch the local table refuses (a type or NOT NULL constraint the
        // origin's schema does not have) must not poison the whole frame: the
        // fast pass runs without savepoints; if a constraint fails, the frame
        // runs again with a savepoint per patch, and refused patches are kept
        // whole (pending) instead of applied.
        let mut careful = false;
        let mut refused;
        loop {
            res = ApplyResult::default();
            new_held.clear();
            seen.clear();
            refused = 0;
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let result = (|| -> Result<()> {
                for g in &body.groups {
                    let local_table = self.tables.get(&g.table);
                    let mapped: Vec<String> = g
                        .columns
                        .iter()
                        .map(|c| self.map_column(&g.table, c, body.schema_version))
                        .collect();
                    let idx: Vec<Option<usize>> = mapped
                        .iter()
                        .map(|c| local_table.and_then(|t| t.index.get(c).copied()))
                        .collect();
                    let known: Vec<usize> = idx
                        .iter()
                        .enumerate()
                        .filter(|(_, i)| i.is_some())
                        .map(|(k, _)| k)
                        .collect();
                    let whole = local_table.is_some() && known.len() == g.columns.len();
                    let cols: Vec<usize> = known.iter().filter_map(|&k| idx[k]).collect();
                    if let Some(t) = local_table {
                        if let Some(pk) = t.pk.iter().find(|p| !cols.contains(&t.index[*p])) {
                            return Err(frame_err(format!(
                                "patch for {} lacks primary-key column {pk}",
                                t.name
                            )));
                        }
                    }
                    let sqls = local_table.map(|t| {
                        (
                            store::patch_insert_sql(t, &cols),
                            store::upsert_sql(t, &cols),
                        )
                    });
                    let pk_pos: Vec<usize> = local_table
                        .map(|t| {
                            t.pk_index
                                .iter()
                                .filter_map(|i| cols.iter().position(|c| c == i))
                                .collect()
                        })
                        .unwrap_or_default();
                    let (mut at, mut seq) = (0i64, 0i64);
                    let mut whole_cols: Option<Arc<Vec<String>>> = None;
                    for r in &g.rows {
                        at = at.wrapping_add(r.0);
                        seq = seq.wrapping_add(r.1);
                        let (at, seq) = (at as u64, seq as u64);
                        if self.vector.holds(g.origin, seq) || !seen.insert((g.origin, seq)) {
                            res.duplicates += 1;
                            continue;
                        }
                        self.hlc.observe(at);
                        let mut kept_whole = false;
                        if let (Some(t), Some((ins, ups))) = (local_table, sqls.as_ref()) {
                            let picked: Vec<Value>;
                            let vals: &[Value] = if whole {
                                &r.2
                            } else {
                                picked = known.iter().map(|&k| r.2[k].clone()).collect();
                                &picked
                            };
                            if pk_pos.iter().any(|&i| vals[i].is_null()) {
                                return Err(frame_err(format!(
                                    "patch for {} has a NULL primary key",
                                    t.name
                                )));
                            }
                            let rp = RowPatch {
                                stamp: Stamp {
                                    at,
                                    peer: g.origin,
                                    seq,
                                },
                                cols: &cols,
                                values: vals,
                            };
                            let mut ok = true;
                            if careful {
                                self.conn.execute_batch("SAVEPOINT quilt_patch")?;
                                let r = store::insert_patch_row(&self.conn, t, ins, &rp).and_then(
                                    |_| store::apply_remote(&self.conn, t, &rp, Some(ups)),
                                );
                                match r {
                                    Ok(_) => self.conn.execute_batch("RELEASE quilt_patch")?,
                                    Err(e) if is_constraint(&e) => {
                                        self.conn.execute_batch(
                                            "ROLLBACK TO quilt_patch; RELEASE quilt_patch",
                                        )?;
                                        refused += 1;
                                        ok = false;
                                    }
                                    Err(e) => return Err(e),
                                }
                            } else {
                                store::insert_patch_row(&self.conn, t, ins, &rp)?;
                                store::apply_remote(&self.conn, t, &rp, Some(ups))?;
                            }
                            if ok {
                                res.applied += 1;
                            } else {
                                kept_whole = true;
                            }
                        }
                        if !whole || kept_whole {
                            let columns = whole_cols
                                .get_or_insert_with(|| Arc::new(g.columns.clone()))
                                .clone();
                            let p = Patch {
                                table: Arc::from(g.table.as_str()),
                                origin: g.origin,
                                seq,
                                at,
                                columns,
                                values: r.2.clone(),
                            };
                            store::insert_kept(&self.conn, &p, body.schema_version)?;
                            self.pending += 1;
                        }
                        res.stored += 1;
                        new_held.push((g.origin, seq));
                    }
                }
                Ok(())
            })();
            match result.and_then(|_| self.conn.execute_batch("COMMIT").map_err(Error::from)) {
                Ok(()) => break,
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.pending = pending_before;
                    self.hlc = hlc_before.clone();
                    if !careful && is_constraint(&e) {
                        careful = true;
                        continue;
                    }
                    self.counters.reject(e.code());
                    return Err(e);
                }
            }
        }
        if refused > 0 {
            self.events.push(Event::Error {
                code: "E_SCHEMA",
                message: format!(
                    "{refused} patch(es) from peer {sender} break a constraint of the local tables (a column type or NOT NULL the writer's schema lacks); they are kept whole and retried after migrate()"
                ),
            });
        }
        self.counters.frames_in += 1;
        self.counters.bytes_in += bytes.len() as u64;
        self.counters.patches_applied += res.applied;
        self.counters.duplicates += res.duplicates;
        let mut touched: HashSet<u32> = HashSet::new();
        for (o, s) in new_held {
            self.vector.hold(o, s);
            touched.insert(o);
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
        let mut out = Vec::new();
        if sender != self.peer_id {
            let ps = self.peers.entry(sender).or_default();
            ps.heard_tick = Some(self.tick_no);
            ps.heard_ms = now;
            ps.schema_version = body.schema_version;
            if let Some(ping) = &body.ping {
                ps.pinged_us = true;
                for &(o, c, _) in &ping.vector {
                    ps.holds.insert(o, c);
                }
                let reply = ps.connected && !ps.we_pinged;
                for &(o, _, m) in &ping.vector {
                    if o != self.peer_id {
                        let st = self.vector.origin(o);
                        st.max_seen = st.max_seen.max(m);
                        touched.insert(o);
                    } else if m > self.seq {
                        // The cluster holds writes of ours this file does not
                        // (an older copy of the file, or a reused peerId):
                        // never reuse their seqs, and fetch them back.
                        let old = self.seq;
                        self.seq = m;
                        let st = self.vector.origin(o);
                        st.max_seen = st.max_seen.max(m);
                        touched.insert(o);
                        self.save_state()?;
                        self.events.push(Event::Error {
                            code: "E_SEQ",
                            message: format!(
                                "peer {sender} holds writes of this peer ({}) up to seq {m}, but this database stopped at {old}: it was restored from an older copy or the peerId is reused; new writes continue from {m} and the missing ones are fetched back",
                                self.peer_id
                            ),
                        });
                    }
                }
                let st = self.vector.origin(sender);
                st.max_seen = st.max_seen.max(ping.own_last_seq);
                touched.insert(sender);
                self.counters.pings_in += 1;
                if reply {
                    out.extend(self.ping_to(&[sender]));
                }
            }
            out.extend(self.serve(sender, &body.requests)?);
            for g in &body.gone {
                for &(a, b) in &g.ranges {
                    let st = self.vector.origin(g.origin);
                    if st
                        .held
                        .gaps(b, usize::MAX)
                        .iter()
                        .any(|&(x, y)| y >= a && x <= b)
                        && !st.gone.contains(a)
                    {
                        st.gone.insert_range(a, b);
                        self.events.push(Event::Error {
                            code: "E_GONE",
                            message: format!(
                                "peer {sender} no longer holds patches {a}..{b} of peer {}; restore this peer from a snapshot",
                                g.origin
                            ),
                        });
                    }
                }
            }
        }
        // Ask at once for what this frame showed is missing.
        let mut origins: Vec<u32> = touched.into_iter().collect();
        origins.sort_unstable();
        for o in origins {
            let (reqs, n) = self.request_gaps(o, Some(sender), true);
            res.requested += n;
            out.extend(reqs);
        }
        self.check_synced();
        Ok((res, out))
    }

    pub(super) fn check_synced(&mut self) {
        let ids: Vec<u32> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected && p.pinged_us && !p.synced)
            .map(|(i, _)| *i)
            .collect();
        for id in ids {
            let caught_up = self.peers[&id].holds.iter().all(|(&o, &c)| {
                o == self.peer_id
                    || self.vector.contiguous(o) >= c
                    || self
                        .vector
                        .origins
                        .get(&o)
                        .is_some_and(|s| !s.gone.is_empty())
            });
            if caught_up {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.synced = true;
                }
                self.events.push(Event::Synced(id));
            }
        }
    }

    /// One heartbeat: gap requests with backoff, pings, retention.
    pub fn tick(&mut self) -> Result<Vec<Outgoing>> {
        self.check_open()?;
        self.tick_no += 1;
        let mut out = self.drain_outbox();
        let mut origins: Vec<u32> = self.vector.origins.keys().copied().collect();
        origins.sort_unstable();
        for o in origins {
            let (reqs, _) = self.request_gaps(o, None, false);
            out.extend(reqs);
        }
        let peers = self.connected();
        out.extend(self.ping_to(&peers));
        self.purge()?;
        self.save_state()?;
        self.check_synced();
        Ok(out)
    }
}

/// A constraint failure (type, NOT NULL, CHECK...) raised by SQLite.
fn is_constraint(e: &Error) -> bool {
    matches!(e, Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}
