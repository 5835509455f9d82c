//! Peers and frames: hello pings, outgoing batches, `applyPatches` (decode
//! and check, store and merge), and the heartbeat. What a stored frame
//! changes and its control messages are in `received.rs`, pings in
//! `ping.rs`, clashes in `clash.rs`.

use super::*;
use crate::core::protocol::PatchGroup;

/// What storing one frame's groups did, for the bookkeeping step.
#[derive(Default)]
pub(super) struct Stored {
    pub res: ApplyResult,
    /// `(origin, seq, at)` newly held.
    pub held: Vec<(u32, u64, u64)>,
    pub refused: u64,
    /// Identity moves made while settling clashes: `(origin, from, to, at)`.
    pub moves: Vec<(u32, u64, u64, u64)>,
    /// Stored versions that lost a clash to the incoming one, to send back.
    pub clashes: Vec<(u32, u64)>,
    /// Patches refused because kept patches are over their cap.
    pub over_cap: u64,
    /// Events raised while storing (moved to the engine after commit).
    pub events: Vec<Event>,
    /// Atomic units of the frame held only in part: their patches wait.
    pub hold: Vec<crate::core::atomic::Atomic>,
    /// Rows changed, for `'change'` (only while someone listens; txn.rs).
    pub changes: Vec<super::Change>,
}

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
        p.added = true;
        if fresh {
            p.synced = false;
            p.we_pinged = false;
        }
        // Say hello: our vector lets the peer find what it lacks at once.
        let mut out = self.drain_outbox();
        out.extend(self.ping_to(&[id]));
        Ok(out)
    }

    /// Release a peer for good: it is no longer sent to, asked, or waited
    /// for by retention.
    pub fn remove_peer(&mut self, id: u32) -> Result<()> {
        self.check_open()?;
        if let Some(p) = self.peers.get_mut(&id) {
            p.connected = false;
            p.added = false;
            p.synced = false;
        }
        self.gaps.forget_peer(id);
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

    /// Queued local patches as frames for every connected peer.
    pub fn drain_outbox(&mut self) -> Vec<Outgoing> {
        let atomic = std::mem::take(&mut self.out_atomic);
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
        b.set_atomic(atomic);
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
        self.check_drift(sender, &body, now)?;
        let mut stored = self.store_frame(sender, &body)?;
        self.note_remote_changes(std::mem::take(&mut stored.changes));
        self.counters.frames_in += 1;
        self.counters.bytes_in += bytes.len() as u64;
        let mut out = Vec::new();
        let (mut res, mut touched) = self.note_stored(sender, &body, stored, &mut out)?;
        if sender != self.peer_id {
            self.note_control(sender, &body, now, &mut touched, &mut out)?;
        }
        for (peer, ranges) in std::mem::take(&mut self.verify_queue) {
            out.push(self.request_frame(peer, ranges));
        }
        // Ask at once for what this frame showed is missing.
        let mut origins: Vec<u32> = touched.into_iter().collect();
        origins.sort_unstable();
        let connected = self.connected();
        for o in origins {
            let (reqs, n) = self.request_gaps(o, Some(sender), true, &connected);
            res.requested += n;
            out.extend(reqs);
        }
        self.check_synced();
        Ok((res, out))
    }

    /// Drift: refuse the whole frame, but remember the seqs exist so the
    /// gap protocol fetches them again once the clocks agree.
    fn check_drift(&mut self, sender: u32, body: &Body, now: u64) -> Result<()> {
        let too_far = body
            .groups
            .iter()
            .flat_map(|g| g.patches())
            .find(|p| !Hlc::within_drift(p.at, now, self.cfg.max_drift_ms));
        let Some(p) = too_far else {
            return Ok(());
        };
        for g in &body.groups {
            for q in g.patches() {
                if q.seq < SHADOW_STEP {
                    let o = self.vector.origin(q.origin);
                    o.max_seen = o.max_seen.max(q.seq);
                }
            }
        }
        self.counters.reject("E_DRIFT");
        Err(Error::Drift(format!(
            "frame from peer {sender} is stamped {} ms ahead of the local clock (maxDriftMs {})",
            hlc::to_unix_ms(p.at).saturating_sub(now),
            self.cfg.max_drift_ms
        )))
    }

    /// Store and merge every new patch of the frame in one transaction. A
    /// patch the local table refuses (a type or NOT NULL constraint the
    /// origin's schema does not have) must not poison the whole frame: the
    /// fast pass runs without savepoints; if a constraint fails, the frame
    /// runs again with a savepoint per patch, and refused patches are kept
    /// whole (pending) instead of applied.
    fn store_frame(&mut self, sender: u32, body: &Body) -> Result<Stored> {
        let hlc_before = self.hlc.clone();
        let pending_before = self.pending;
        let kept_before = self.kept_bytes.clone();
        let hold = self.atomic_to_hold(body);
        let mut careful = false;
        loop {
            let mut st = Stored {
                hold: hold.clone(),
                ..Default::default()
            };
            self.begin_tx()?;
            let mut seen: HashSet<(u32, u64)> = HashSet::new();
            let result = body.groups.iter().try_for_each(|g| {
                self.store_group(g, body.schema_version, careful, &mut seen, &mut st)
            });
            let result = result.and_then(|_| self.settle_atomic(body, &st));
            let result = result.and_then(|x| {
                self.runs.borrow_mut().flush(&self.conn)?;
                Ok(x)
            });
            match result.and_then(|x| {
                tx::commit(&self.conn)?;
                Ok(x)
            }) {
                Ok((waiting, applied, changes)) => {
                    self.waiting = waiting;
                    st.changes.extend(changes);
                    if applied {
                        self.recount_pending()?;
                        self.load_kept_bytes()?;
                    }
                    if st.refused > 0 {
                        self.events.push(Event::Error {
                            code: "E_SCHEMA",
                            message: format!(
                                "{} patch(es) from peer {sender} break a constraint of the local tables (a column type or NOT NULL the writer's schema lacks); they are kept whole and retried after migrate()",
                                st.refused
                            ),
                        });
                    }
                    return Ok(st);
                }
                Err(e) => {
                    tx::rollback(&self.conn);
                    self.runs.borrow_mut().discard();
                    self.pending = pending_before;
                    self.hlc = hlc_before.clone();
                    self.kept_bytes = kept_before.clone();
                    if !careful && is_constraint(&e) {
                        careful = true;
                        continue;
                    }
                    self.counters.reject(e.code());
                    return Err(e);
                }
            }
        }
    }

    fn store_group(
        &mut self,
        g: &PatchGroup,
        schema_version: u32,
        careful: bool,
        seen: &mut HashSet<(u32, u64)>,
        st: &mut Stored,
    ) -> Result<()> {
        let local_table = self.tables.get(&g.table).cloned();
        let mapped: Vec<String> = g
            .columns
            .iter()
            .map(|c| self.map_column(&g.table, c, schema_version))
            .collect();
        let idx: Vec<Option<usize>> = mapped
            .iter()
            .map(|c| local_table.as_ref().and_then(|t| t.index.get(c).copied()))
            .collect();
        let known: Vec<usize> = idx
            .iter()
            .enumerate()
            .filter(|(_, i)| i.is_some())
            .map(|(k, _)| k)
            .collect();
        // A row deletion: the key, then the reserved deletion column.
        let is_delete = g.columns.last().map(String::as_str) == Some(schema::DELETED_COL);
        let whole =
            local_table.is_some() && known.len() + usize::from(is_delete) == g.columns.len();
        let cols: Vec<usize> = known.iter().filter_map(|&k| idx[k]).collect();
        if is_delete
            && local_table
                .as_ref()
                .is_some_and(|t| cols.len() != t.pk.len())
        {
            return Err(frame_err("a row deletion names only the primary key"));
        }
        if let Some(t) = &local_table {
            if let Some(pk) = t.pk.iter().find(|p| !cols.contains(&t.index[*p])) {
                return Err(frame_err(format!(
                    "patch for {} lacks primary-key column {pk}",
                    t.name
                )));
            }
        }
        let sqls = local_table.as_ref().map(|t| {
            (
                store::patch_insert_sql(t, &cols),
                store::upsert_sql(t, &cols),
            )
        });
        let pk_pos: Vec<usize> = local_table
            .as_ref()
            .map(|t| {
                t.pk_index
                    .iter()
                    .filter_map(|i| cols.iter().position(|c| c == i))
                    .collect()
            })
            .unwrap_or_default();
        let (mut at, mut seq) = (0i64, 0i64);
        let mut whole_cols: Option<Arc<Vec<String>>> = None;
        // Statements prepared once for the group (dropped around the rare
        // calls that need the engine mutably: clashes and kept patches).
        let mut prepared: Option<(rusqlite::CachedStatement, store::RemoteStatements)> = None;
        for r in &g.rows {
            at = at.wrapping_add(r.0);
            seq = seq.wrapping_add(r.1);
            let (at, wire_seq) = (at as u64, seq as u64);
            if !seen.insert((g.origin, wire_seq)) {
                st.res.duplicates += 1;
                continue;
            }
            // Same identity held, a re-issued identity, or a base with
            // re-issued versions: settle where this version belongs.
            let seq =
                if self.vector.holds(g.origin, wire_seq) || self.has_versions(g.origin, wire_seq) {
                    match self.place_version(g.origin, wire_seq, at, st)? {
                        Some(s) => s,
                        None => {
                            st.res.duplicates += 1;
                            continue;
                        }
                    }
                } else {
                    wire_seq
                };
            // Part of an atomic group this peer does not hold whole yet:
            // kept unapplied until the rest arrives (atomic.rs).
            // (A version placed elsewhere by an identity clash applies at
            // once: clashing histories give up atomicity, never data.)
            let held_back = seq == wire_seq
                && st
                    .hold
                    .iter()
                    .any(|&(o, a, b)| o == g.origin && a <= seq && seq <= b);
            // (Parts of atomic groups are bounded by their size cap, not
            // by the kept cap: refusing them would stall the group.)
            if !whole && !held_back && !self.kept_room(g.origin, protocol::estimate_row(r.2.iter()))
            {
                // Over the kept cap: not stored, not held; the gap protocol
                // asks for it again later (after migrate() frees room).
                st.over_cap += 1;
                continue;
            }
            self.hlc.observe(at);
            let mut kept_whole = held_back;
            let target = if held_back {
                None
            } else {
                local_table.as_ref()
            };
            if let (Some(t), Some((ins, ups))) = (target, sqls.as_ref()) {
                let picked: Vec<Value>;
                let vals: &[Value] = if whole && !is_delete {
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
                if prepared.is_none() {
                    prepared = Some((
                        self.conn.prepare_cached(ins)?,
                        store::RemoteStatements::new(&self.conn, t, ups)?,
                    ));
                }
                let Some((ins_st, rem)) = prepared.as_mut() else {
                    return Err(frame_err("internal: no prepared statements"));
                };
                let mut rowid = 0;
                let mut write = || -> Result<usize> {
                    if is_delete {
                        store::bind_deletion_row(ins_st, rp.stamp, rp.values)?;
                    } else {
                        let nulls =
                            store::nulls_bitmap(t, rp.cols, rp.values.iter().map(Value::is_null));
                        let values = rp.values.iter().map(Value::to_ref);
                        store::bind_patch_row(ins_st, rp.stamp, nulls.as_deref(), values)?;
                    }
                    ins_st.raw_execute()?;
                    rowid = self.conn.last_insert_rowid();
                    if is_delete {
                        let pk: Vec<Value> = pk_pos.iter().map(|&i| rp.values[i].clone()).collect();
                        return Ok(usize::from(store::apply_delete(
                            &self.conn, t, &pk, rp.stamp,
                        )?));
                    }
                    store::apply_remote_with(&self.conn, rem, t, &rp)
                };
                let mut won = 0;
                if careful {
                    tx::savepoint(&self.conn, &tx::PATCH)?;
                    match write() {
                        Ok(n) => {
                            won = n;
                            tx::release(&self.conn, &tx::PATCH)?
                        }
                        Err(e) if is_constraint(&e) => {
                            tx::rollback_to(&self.conn, &tx::PATCH)?;
                            st.refused += 1;
                            kept_whole = true;
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    won = write()?;
                }
                if won > 0 && self.collecting_changes() {
                    st.changes.push(if is_delete {
                        Change::deletion(t, g.origin, &rp)
                    } else {
                        self.remote_change(t, &rp)?
                    });
                }
                if !kept_whole {
                    st.res.applied += 1;
                    if t.rowid {
                        self.runs
                            .borrow_mut()
                            .note(&t.name_arc, g.origin, seq, rowid);
                    }
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
                let n = store::insert_kept(&self.conn, &p, schema_version)?;
                *self.kept_bytes.entry(p.origin).or_default() += n as u64;
                // Waiting for the rest of its group is not a schema matter.
                if !held_back && !self.is_replic_ping(&g.table) {
                    self.pending += 1;
                }
            }
            st.res.stored += 1;
            st.held.push((g.origin, seq, at));
        }
        Ok(())
    }

    /// One heartbeat: gap requests with backoff, pings, retention.
    pub fn tick(&mut self) -> Result<Vec<Outgoing>> {
        self.tick_with(true)
    }

    /// A heartbeat; `ping`: false when the caller sends the ping itself
    /// (once for every peer, see `broadcast.rs`).
    pub(super) fn tick_with(&mut self, ping: bool) -> Result<Vec<Outgoing>> {
        self.check_open()?;
        self.settle_clock()?;
        self.tick_no += 1;
        self.served_bytes.clear();
        let mut out = self.drain_outbox();
        let mut origins: Vec<u32> = self.vector.origins.keys().copied().collect();
        origins.sort_unstable();
        let connected = self.connected();
        for o in origins {
            let (reqs, _) = self.request_gaps(o, None, false, &connected);
            out.extend(reqs);
        }
        if ping {
            out.extend(self.ping_to(&connected));
        }
        self.purge()?;
        self.save_state()?;
        self.check_synced();
        Ok(out)
    }
}

/// A constraint failure (type, NOT NULL, CHECK...) raised by SQLite.
pub(super) fn is_constraint(e: &Error) -> bool {
    matches!(e, Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}
