//! The replicator core: one SQLite connection, one HLC, the sequence vector
//! and the peer table. It is synchronous and transport-free: calls return the
//! frames to hand to each peer's `send`, plus events, and the binding does
//! the handing. That keeps every protocol step deterministic and testable
//! from `cargo test` (see `tests/sim.rs`).

use crate::core::error::{frame_err, schema_err, Error, Result};
use crate::core::hlc::{self, Hlc};
use crate::core::metrics::Counters;
use crate::core::protocol::{self, Body, FrameBuilder, Patch, Ping, Ranges};
use crate::core::schema::{self, q, TableInfo};
use crate::core::store::{self, RowPatch, Stamp};
use crate::core::sync::{backoff_ticks, RangeSet, SeqVector};
use crate::core::value::Value;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Options of a replicator (API.md, `new Replicator(options)`).
#[derive(Debug, Clone)]
pub struct Config {
    pub path: String,
    pub peer_id: Option<u32>,
    pub cluster_key: Option<Vec<u8>>,
    pub heartbeat_ms: u64,
    pub retention_ms: u64,
    pub max_drift_ms: u64,
    pub max_frame_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            path: ":memory:".into(),
            peer_id: None,
            cluster_key: None,
            heartbeat_ms: 1000,
            retention_ms: 25 * 3600 * 1000,
            max_drift_ms: 60_000,
            max_frame_bytes: 1 << 20,
        }
    }
}

/// One migration step (API.md `migrate`), with optional column renames
/// `(table, old, new)` that kept patches and older peers' patches follow.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    pub up: String,
    pub down: Option<String>,
    pub renames: Vec<(String, String, String)>,
}

/// Something that happened and did not throw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Synced(u32),
    Error { code: &'static str, message: String },
}

/// Frames to hand to one peer's `send`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub peer: u32,
    pub frame: Vec<u8>,
}

/// The answer of `apply_frame` (API.md `applyPatches`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplyResult {
    pub applied: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub requested: u64,
}

/// What we know of one directly connected (or formerly connected) peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    pub connected: bool,
    pub heard_tick: Option<u64>,
    pub heard_ms: u64,
    /// Its contiguous seq per origin, from its last ping.
    pub holds: HashMap<u32, u64>,
    pub pinged_us: bool,
    pub we_pinged: bool,
    pub synced: bool,
    pub schema_version: u32,
}

/// Peer status row (API.md `status().peers`).
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer_id: u32,
    pub connected: bool,
    pub last_seq: u64,
    pub contiguous_seq: u64,
    pub missing: u64,
    pub last_seen_ms: Option<u64>,
}

/// `status()`.
#[derive(Debug, Clone)]
pub struct Status {
    pub peer_id: u32,
    pub schema_version: u32,
    pub seq: u64,
    pub is_leader: bool,
    pub peers: Vec<PeerStatus>,
    pub pending: u64,
}

/// Ticks within which a peer must have been heard to count as live.
pub const LIVE_TICKS: u64 = 3;
/// Most patches served for one request message.
const SERVE_LIMIT: usize = 20_000;
/// Rows deleted per table per heartbeat by retention.
const PURGE_BATCH: i64 = 500;

/// The replicator core.
pub struct Engine {
    conn: Connection,
    cfg: Config,
    peer_id: u32,
    seq: u64,
    hlc: Hlc,
    schema_version: u32,
    tables: BTreeMap<String, TableInfo>,
    renames: Vec<(u32, String, String, String)>,
    vector: SeqVector,
    purged: HashMap<u32, u64>,
    peers: BTreeMap<u32, PeerState>,
    outbox: Vec<Patch>,
    tick_no: u64,
    rng: u64,
    pending: u64,
    events: Vec<Event>,
    pending_warned: bool,
    pub counters: Counters,
    closed: bool,
}

fn random_peer_id() -> u32 {
    let mut b = [0u8; 4];
    loop {
        if getrandom::fill(&mut b).is_err() {
            // No OS RNG: fall back on time and pid, still never 0.
            let t = hlc::wall_ms() as u32 ^ std::process::id().rotate_left(16);
            return t.max(1);
        }
        let v = u32::from_le_bytes(b) & 0x7fff_ffff;
        if v != 0 {
            return v;
        }
    }
}

impl Engine {
    /// Open (or create) the database and rebuild in-memory state from it.
    pub fn open(cfg: Config) -> Result<Engine> {
        if cfg.path.is_empty() {
            return Err(Error::Type("options.path must be a non-empty string".into()));
        }
        let conn = Connection::open(&cfg.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if cfg.path != ":memory:" {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(512);
        store::register_functions(&conn)?;
        schema::ensure_meta(&conn)?;
        let state: Option<(i64, i64, i64, i64)> = conn
            .query_row(
                "SELECT peer_id, seq, hlc, schema_version FROM _quilt_state WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let (peer_id, seq, hlc_last, schema_version) = match state {
            Some((p, s, h, v)) => (p as u32, s as u64, h as u64, v as u32),
            None => {
                let id = cfg.peer_id.unwrap_or_else(random_peer_id);
                conn.execute(
                    "INSERT INTO _quilt_state(id, peer_id, seq, hlc, schema_version, protocol) VALUES(1, ?, 0, 0, 0, ?)",
                    rusqlite::params![id as i64, protocol::PROTOCOL_VERSION as i64],
                )?;
                (id, 0, 0, 0)
            }
        };
        let mut e = Engine {
            conn,
            peer_id,
            seq,
            hlc: Hlc::new(hlc_last),
            schema_version,
            tables: BTreeMap::new(),
            renames: Vec::new(),
            vector: SeqVector::default(),
            purged: HashMap::new(),
            peers: BTreeMap::new(),
            outbox: Vec::new(),
            tick_no: 0,
            rng: (peer_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            pending: 0,
            events: Vec::new(),
            pending_warned: false,
            counters: Counters::default(),
            closed: false,
            cfg,
        };
        e.refresh_schema()?;
        e.rebuild_vector()?;
        if let Some(id) = e.cfg.peer_id {
            if id != e.peer_id {
                e.peer_id = id;
                e.seq = e.vector.origins.get(&id).map_or(0, |o| o.held.max());
                e.save_state()?;
            }
        }
        let own = e.vector.origins.get(&e.peer_id).map_or(0, |o| o.held.max());
        e.seq = e.seq.max(own);
        e.recount_pending()?;
        Ok(e)
    }

    pub fn peer_id(&self) -> u32 {
        self.peer_id
    }
    pub fn seq(&self) -> u64 {
        self.seq
    }
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
    pub fn tables(&self) -> &BTreeMap<String, TableInfo> {
        &self.tables
    }
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Events raised since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn save_state(&self) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE _quilt_state SET peer_id=?, seq=?, hlc=?, schema_version=? WHERE id=1")?
            .execute(rusqlite::params![
                self.peer_id as i64,
                self.seq as i64,
                self.hlc.last() as i64,
                self.schema_version as i64
            ])?;
        Ok(())
    }

    fn refresh_schema(&mut self) -> Result<()> {
        let tables = schema::load_tables(&self.conn)?;
        for t in tables.values() {
            if schema::ensure_internal(&self.conn, t)? {
                store::rebuild_clock(&self.conn, t)?;
            }
        }
        self.tables = tables;
        let mut st = self.conn.prepare("SELECT version, renames FROM _quilt_migrations ORDER BY version")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))?;
        let mut renames = Vec::new();
        for row in rows {
            let (v, blob) = row?;
            if let Some(b) = blob {
                if let Ok(list) = rmp_serde::from_slice::<Vec<(String, String, String)>>(&b) {
                    renames.extend(list.into_iter().map(|(t, o, n)| (v as u32, t, o, n)));
                }
            }
        }
        self.renames = renames;
        Ok(())
    }

    fn rebuild_vector(&mut self) -> Result<()> {
        let mut v = SeqVector::default();
        let mut max_at = self.hlc.last();
        let mut sqls: Vec<String> = self
            .tables
            .values()
            .map(|t| format!("SELECT _peerId, _sequenceId, _patchedAt FROM {} ORDER BY _peerId, _sequenceId", q(&t.patches())))
            .collect();
        sqls.push("SELECT origin, seq, at FROM _quilt_kept".into());
        for sql in sqls {
            let mut st = self.conn.prepare(&sql)?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let (o, s, at): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                if o > 0 && s > 0 {
                    v.hold(o as u32, s as u64);
                }
                max_at = max_at.max(at.max(0) as u64);
            }
        }
        let mut st = self.conn.prepare("SELECT origin, upto FROM _quilt_purged")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (o, upto) = row?;
            if o > 0 && upto > 0 {
                v.origin(o as u32).held.insert_range(1, upto as u64);
                v.origin(o as u32).max_seen = v.origin(o as u32).max_seen.max(upto as u64);
                self.purged.insert(o as u32, upto as u64);
            }
        }
        self.hlc.observe(max_at.min(hlc::MAX_HLC));
        self.vector = v;
        Ok(())
    }

    fn recount_pending(&mut self) -> Result<()> {
        let kept = store::read_kept(&self.conn, None)?;
        self.pending = kept.iter().filter(|k| !self.fully_known(k)).count() as u64;
        Ok(())
    }

    fn fully_known(&self, k: &store::Kept) -> bool {
        let Some(t) = self.tables.get(&*k.patch.table) else {
            return false;
        };
        k.patch
            .columns
            .iter()
            .all(|c| t.has(&self.map_column(&k.patch.table, c, k.schema_version)))
    }

    /// Map a column name written at schema `from` to the local schema,
    /// following declared renames forward (or backward on a downgrade).
    fn map_column(&self, table: &str, col: &str, from: u32) -> String {
        let to = self.schema_version;
        let mut name = col.to_string();
        if from < to {
            for (v, t, o, n) in &self.renames {
                if *v > from && *v <= to && t == table && *o == name {
                    name = n.clone();
                }
            }
        } else if from > to {
            for (v, t, o, n) in self.renames.iter().rev() {
                if *v > to && *v <= from && t == table && *n == name {
                    name = o.clone();
                }
            }
        }
        name
    }

    // ----- schema ---------------------------------------------------------

    /// Bring the schema to `migrations.len()`, forward or backward, in one
    /// transaction; keep whole every patch value a migration drops; then
    /// re-merge kept patches the new schema can hold.
    pub fn migrate(&mut self, migrations: &[Migration]) -> Result<(u32, u32)> {
        self.check_open()?;
        let from = self.schema_version;
        let to = u32::try_from(migrations.len()).map_err(|_| Error::Range("too many migrations".into()))?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let res = self.migrate_in_tx(migrations, from, to);
        match res {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                self.recount_pending()?;
                Ok((from, to))
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.schema_version = from;
                let _ = self.refresh_schema();
                Err(e)
            }
        }
    }

    fn migrate_in_tx(&mut self, migrations: &[Migration], from: u32, to: u32) -> Result<()> {
        let tx = &self.conn;
        let mut steps: Vec<(u32, String)> = Vec::new();
        if to > from {
            for (i, m) in migrations.iter().enumerate().skip(from as usize) {
                let v = i as u32 + 1;
                let renames = rmp_serde::to_vec(&m.renames).unwrap_or_default();
                tx.execute(
                    "INSERT OR REPLACE INTO _quilt_migrations(version, up, down, renames) VALUES(?,?,?,?)",
                    rusqlite::params![v as i64, m.up, m.down, renames],
                )?;
                steps.push((v, m.up.clone()));
            }
        } else if to < from {
            for v in ((to + 1)..=from).rev() {
                let down: Option<Option<String>> = tx
                    .query_row("SELECT down FROM _quilt_migrations WHERE version=?", [v as i64], |r| r.get(0))
                    .optional()?;
                let down = match down.flatten() {
                    Some(d) => d,
                    None => migrations
                        .get(v as usize - 1)
                        .and_then(|m| m.down.clone())
                        .ok_or_else(|| schema_err(format!("migration {v} has no down step; cannot go back to version {to}")))?,
                };
                steps.push((v - 1, down));
            }
        }
        for (v, sql) in &steps {
            self.keep_dropped(sql)?;
            self.conn
                .execute_batch(sql)
                .map_err(|e| schema_err(format!("migration to version {v} failed: {e}")))?;
        }
        self.schema_version = to;
        self.refresh_schema()?;
        self.save_state()?;
        self.replay_kept()?;
        Ok(())
    }

    /// Dry-run a migration step in a savepoint to learn which replicated
    /// tables and columns it drops, then copy the patches holding values for
    /// them into `_quilt_kept` before the step runs for real.
    fn keep_dropped(&mut self, sql: &str) -> Result<()> {
        if self.tables.is_empty() {
            return Ok(());
        }
        self.conn.execute_batch("SAVEPOINT quilt_probe")?;
        let probe = self.conn.execute_batch(sql).map_err(Error::from).and_then(|_| schema::load_tables(&self.conn));
        self.conn.execute_batch("ROLLBACK TO quilt_probe; RELEASE quilt_probe")?;
        let after = match probe {
            Ok(t) => t,
            Err(_) => return Ok(()), // the real run reports the error
        };
        for t in self.tables.values() {
            let dropped: Vec<&String> = match after.get(&t.name) {
                None => t.columns.iter().collect(),
                Some(a) => t.columns.iter().filter(|c| !a.has(c)).collect(),
            };
            if dropped.is_empty() {
                continue;
            }
            let cond = if after.contains_key(&t.name) {
                dropped
                    .iter()
                    .map(|c| format!("{0} IS NOT NULL OR instr(','||ifnull({1},'')||',', ','||'{2}'||',')>0", q(c), schema::NULLS_COL, c.replace('\'', "''")))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            } else {
                "1".into()
            };
            let sql = format!("SELECT DISTINCT _peerId FROM {} WHERE {cond}", q(&t.patches()));
            let origins: Vec<i64> = {
                let mut st = self.conn.prepare(&sql)?;
                let r = st.query_map([], |r| r.get(0))?;
                r.collect::<rusqlite::Result<_>>()?
            };
            for o in origins {
                for p in store::read_patches(&self.conn, t, o as u32, 1, u64::MAX >> 1, usize::MAX >> 1)? {
                    let touches = p.columns.iter().any(|c| dropped.contains(&c));
                    if touches {
                        store::insert_kept(&self.conn, &p, self.schema_version)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-merge every kept patch the schema can now hold (LWW makes this
    /// idempotent and order-free).
    fn replay_kept(&mut self) -> Result<()> {
        for k in store::read_kept(&self.conn, None)? {
            let Some(t) = self.tables.get(&*k.patch.table) else { continue };
            let mut cols = Vec::new();
            let mut vals = Vec::new();
            for (c, v) in k.patch.columns.iter().zip(&k.patch.values) {
                if let Some(&i) = t.index.get(&self.map_column(&t.name, c, k.schema_version)) {
                    cols.push(i);
                    vals.push(v.clone());
                }
            }
            if !t.pk.iter().all(|p| cols.contains(&t.index[p])) {
                continue;
            }
            let stamp = Stamp { at: k.patch.at, peer: k.patch.origin, seq: k.patch.seq };
            store::apply_remote(&self.conn, t, &RowPatch { stamp, cols: &cols, values: &vals }, None)?;
        }
        Ok(())
    }

    // ----- local writes ---------------------------------------------------

    /// Resolve a JS row into column indices, checking names and the key.
    fn resolve_row<'t>(t: &'t TableInfo, row: &[(String, Value)]) -> Result<Vec<usize>> {
        let mut cols = Vec::with_capacity(row.len());
        for (c, _) in row {
            match t.index.get(c) {
                Some(&i) => cols.push(i),
                None => return Err(schema_err(format!("table {} has no column {c}", t.name))),
            }
        }
        for pk in &t.pk {
            let i = t.index[pk];
            match cols.iter().position(|&c| c == i) {
                Some(p) if !row[p].1.is_null() => {}
                _ => return Err(Error::Type(format!("row for {} must give primary-key column {pk} (not null)", t.name))),
            }
        }
        Ok(cols)
    }

    /// `upsert`/`upsertMany`: one transaction, one patch per row. Returns
    /// the token of the last row.
    pub fn upsert(&mut self, table: &str, rows: Vec<Vec<(String, Value)>>) -> Result<String> {
        self.check_open()?;
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| schema_err(format!("unknown table {table} (no {table}_patches table; did migrate() run?)")))?;
        let mut resolved = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        let budget = self.cfg.max_frame_bytes.saturating_sub(64 + t.name.len());
        for row in rows {
            let cols = Self::resolve_row(t, &row)?;
            let vals: Vec<Value> = row.into_iter().map(|r| r.1).collect();
            let size = protocol::estimate_row(vals.iter()) + cols.iter().map(|&i| t.columns[i].len() + 2).sum::<usize>();
            if size > budget {
                return Err(Error::Range(format!(
                    "a patch of about {size} bytes cannot fit maxFrameBytes ({})",
                    self.cfg.max_frame_bytes
                )));
            }
            resolved.push(cols);
            values.push(vals);
        }
        if values.is_empty() {
            return Ok(self.token());
        }
        let n = values.len();
        let (seq0, out0) = (self.seq, self.outbox.len());
        let res = self.write_rows(table, values, &resolved);
        if res.is_err() {
            self.seq = seq0;
            self.outbox.truncate(out0);
        }
        res?;
        self.vector.origin(self.peer_id).held.insert_range(seq0 + 1, self.seq);
        self.vector.origin(self.peer_id).max_seen = self.seq;
        self.counters.local_writes += n as u64;
        Ok(self.token())
    }

    fn write_rows(&mut self, table: &str, rows: Vec<Vec<Value>>, resolved: &[Vec<usize>]) -> Result<()> {
        let t = &self.tables[table];
        let tx = self.conn.unchecked_transaction()?;
        let mut sql_cache: Option<(&Vec<usize>, String, String, Arc<Vec<String>>)> = None;
        let now = hlc::wall_ms();
        for (values, cols) in rows.into_iter().zip(resolved) {
            if sql_cache.as_ref().is_none_or(|c| c.0 != cols) {
                let names = Arc::new(cols.iter().map(|&i| t.columns[i].clone()).collect());
                sql_cache = Some((cols, store::patch_insert_sql(t, cols), store::upsert_sql(t, cols), names));
            }
            let (_, ins, ups, names) = sql_cache.as_ref().ok_or_else(|| frame_err("internal"))?;
            let at = self.hlc.tick(now);
            self.seq += 1;
            let stamp = Stamp { at, peer: self.peer_id, seq: self.seq };
            let p = RowPatch { stamp, cols, values: &values };
            store::insert_patch_row(&tx, t, ins, &p)?;
            store::apply_local(&tx, t, ups, &p)?;
            self.outbox.push(Patch {
                table: t.name_arc.clone(),
                origin: self.peer_id,
                seq: self.seq,
                at,
                columns: names.clone(),
                values,
            });
        }
        self.save_state()?;
        tx.commit()?;
        Ok(())
    }

    /// A tombstone: sets `deletedAt` to now.
    pub fn delete(&mut self, table: &str, pk: Vec<(String, Value)>) -> Result<String> {
        self.check_open()?;
        let t = self.tables.get(table).ok_or_else(|| schema_err(format!("unknown table {table}")))?;
        if !t.has("deletedAt") {
            return Err(schema_err(format!("table {table} has no deletedAt column; delete() needs one")));
        }
        for (c, _) in &pk {
            if !t.is_pk(c) {
                return Err(Error::Type(format!("delete() takes only primary-key columns of {table}; {c} is not one")));
            }
        }
        let mut row = pk;
        row.push(("deletedAt".into(), Value::Int(hlc::wall_ms() as i64)));
        self.upsert(table, vec![row])
    }

    /// `"<peerId>.<seq>"` of the last local write.
    pub fn token(&self) -> String {
        format!("{}.{}", self.peer_id, self.seq)
    }

    /// True once the write named by `(origin, seq)` is held here.
    pub fn has(&self, origin: u32, seq: u64) -> bool {
        seq == 0 || self.vector.holds(origin, seq)
    }

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

    fn connected(&self) -> Vec<u32> {
        self.peers.iter().filter(|(id, p)| p.connected && **id != self.peer_id).map(|(id, _)| *id).collect()
    }

    fn key(&self) -> Option<&[u8]> {
        self.cfg.cluster_key.as_deref()
    }

    fn ping_body(&self) -> Ping {
        let mut vector = self.vector.ping_vector();
        vector.retain(|v| v.0 != self.peer_id);
        vector.push((self.peer_id, self.seq, self.seq));
        Ping { own_last_seq: self.seq, vector }
    }

    fn ping_to(&mut self, peers: &[u32]) -> Vec<Outgoing> {
        if peers.is_empty() {
            return Vec::new();
        }
        let body = Body { schema_version: self.schema_version, ping: Some(self.ping_body()), ..Default::default() };
        let frame = protocol::encode_frame(self.peer_id, &body, self.key());
        let mut out = Vec::new();
        for &p in peers {
            if let Some(ps) = self.peers.get_mut(&p) {
                ps.we_pinged = true;
            }
            out.push(Outgoing { peer: p, frame: frame.clone() });
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
        let mut b = FrameBuilder::new(self.peer_id, self.schema_version, self.cfg.cluster_key.as_deref(), self.cfg.max_frame_bytes);
        for p in &patches {
            b.push(p);
        }
        let frames = b.finish();
        let mut out = Vec::with_capacity(frames.len() * peers.len());
        for f in &frames {
            for &p in &peers {
                out.push(Outgoing { peer: p, frame: f.clone() });
            }
        }
        out
    }

    /// Count a frame `send` failed to take (the gap protocol repairs it).
    pub fn note_send_failure(&mut self) {
        self.counters.send_failures += 1;
    }

    /// Count bytes handed to `send`.
    pub fn note_sent(&mut self, frames: &[Outgoing]) {
        self.counters.frames_out += frames.len() as u64;
        self.counters.bytes_out += frames.iter().map(|f| f.frame.len() as u64).sum::<u64>();
    }

    /// `applyPatches`: check, decode, store and apply a frame in one
    /// transaction, then answer it. A frame that is not valid changes nothing.
    pub fn apply_frame(&mut self, bytes: &[u8]) -> Result<(ApplyResult, Vec<Outgoing>)> {
        self.check_open()?;
        let frame = match protocol::decode_frame(bytes, self.cfg.cluster_key.as_deref(), self.cfg.max_frame_bytes) {
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
        let mut res = ApplyResult::default();
        let mut new_held: Vec<(u32, u64)> = Vec::new();
        let mut seen: HashSet<(u32, u64)> = HashSet::new();
        let hlc_before = self.hlc.clone();
        let pending_before = self.pending;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = (|| -> Result<()> {
            for g in &body.groups {
                let local_table = self.tables.get(&g.table);
                let mapped: Vec<String> = g
                    .columns
                    .iter()
                    .map(|c| self.map_column(&g.table, c, body.schema_version))
                    .collect();
                let idx: Vec<Option<usize>> = mapped.iter().map(|c| local_table.and_then(|t| t.index.get(c).copied())).collect();
                let known: Vec<usize> = idx.iter().enumerate().filter(|(_, i)| i.is_some()).map(|(k, _)| k).collect();
                let whole = local_table.is_some() && known.len() == g.columns.len();
                let cols: Vec<usize> = known.iter().filter_map(|&k| idx[k]).collect();
                if let Some(t) = local_table {
                    if let Some(pk) = t.pk.iter().find(|p| !cols.contains(&t.index[*p])) {
                        return Err(frame_err(format!("patch for {} lacks primary-key column {pk}", t.name)));
                    }
                }
                let sqls = local_table.map(|t| (store::patch_insert_sql(t, &cols), store::upsert_sql(t, &cols)));
                let pk_pos: Vec<usize> = local_table
                    .map(|t| t.pk_index.iter().filter_map(|i| cols.iter().position(|c| c == i)).collect())
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
                    if let (Some(t), Some((ins, ups))) = (local_table, sqls.as_ref()) {
                        let picked: Vec<Value>;
                        let vals: &[Value] = if whole {
                            &r.2
                        } else {
                            picked = known.iter().map(|&k| r.2[k].clone()).collect();
                            &picked
                        };
                        if pk_pos.iter().any(|&i| vals[i].is_null()) {
                            return Err(frame_err(format!("patch for {} has a NULL primary key", t.name)));
                        }
                        let rp = RowPatch { stamp: Stamp { at, peer: g.origin, seq }, cols: &cols, values: vals };
                        store::insert_patch_row(&self.conn, t, ins, &rp)?;
                        store::apply_remote(&self.conn, t, &rp, Some(ups))?;
                        res.applied += 1;
                    }
                    if !whole {
                        let columns = whole_cols.get_or_insert_with(|| Arc::new(g.columns.clone())).clone();
                        let p = Patch { table: Arc::from(g.table.as_str()), origin: g.origin, seq, at, columns, values: r.2.clone() };
                        store::insert_kept(&self.conn, &p, body.schema_version)?;
                        self.pending += 1;
                    }
                    res.stored += 1;
                    new_held.push((g.origin, seq));
                }
            }
            if res.stored > 0 {
                self.save_state()?;
            }
            Ok(())
        })();
        match result.and_then(|_| self.conn.execute_batch("COMMIT").map_err(Error::from)) {
            Ok(()) => {}
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.pending = pending_before;
                self.hlc = hlc_before;
                self.counters.reject(e.code());
                return Err(e);
            }
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
                    if st.held.gaps(b, usize::MAX).iter().any(|&(x, y)| y >= a && x <= b) && !st.gone.contains(a) {
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
        let mut origins: Vec<u32> = touched.into_iter().filter(|&o| o != self.peer_id).collect();
        origins.sort_unstable();
        for o in origins {
            let (reqs, n) = self.request_gaps(o, Some(sender), true);
            res.requested += n;
            out.extend(reqs);
        }
        self.check_synced();
        Ok((res, out))
    }

    /// Serve requested ranges from the `_patches` tables and kept patches;
    /// purged ranges are answered as gone.
    fn serve(&mut self, to: u32, requests: &[Ranges]) -> Result<Vec<Outgoing>> {
        if requests.is_empty() || !self.peers.get(&to).is_some_and(|p| p.connected) {
            return Ok(Vec::new());
        }
        let mut b = FrameBuilder::new(self.peer_id, self.schema_version, self.cfg.cluster_key.as_deref(), self.cfg.max_frame_bytes);
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
                    for p in store::read_patches(&self.conn, t, r.origin, a, bnd, SERVE_LIMIT - served)? {
                        found.insert(p.seq, p);
                    }
                }
                for k in store::read_kept(&self.conn, Some((r.origin, a, bnd)))? {
                    let mut p = k.patch;
                    p.columns = Arc::new(p.columns.iter().map(|c| self.map_column(&p.table, c, k.schema_version)).collect());
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
                        gone.push(Ranges { origin: r.origin, ranges: missing });
                    }
                }
            }
        }
        self.counters.retransmitted += served as u64;
        if !gone.is_empty() {
            b.body_mut().gone = gone;
        }
        Ok(b.finish().into_iter().map(|frame| Outgoing { peer: to, frame }).collect())
    }

    fn jitter(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng & 1
    }

    /// Ask for the gaps of one origin, if its backoff allows. `hint` is the
    /// peer that just spoke (it likely holds what it told us of).
    fn request_gaps(&mut self, origin: u32, hint: Option<u32>, eager: bool) -> (Vec<Outgoing>, u64) {
        let tick = self.tick_no;
        let connected = self.connected();
        let st = self.vector.origin(origin);
        let wanted = st.wanted(64);
        if wanted.is_empty() {
            st.gap_since = None;
            st.attempts = 0;
            return (Vec::new(), 0);
        }
        if st.gap_since.is_none() {
            st.gap_since = Some(tick);
        }
        let contiguous = st.held.contiguous();
        if contiguous > st.last_contiguous {
            st.attempts = 0;
            st.last_contiguous = contiguous;
        }
        if eager && st.attempts > 0 {
            return (Vec::new(), 0);
        }
        if tick < st.next_request && !eager {
            return (Vec::new(), 0);
        }
        if connected.is_empty() {
            return (Vec::new(), 0);
        }
        let attempts = st.attempts;
        let first = wanted[0];
        let mut holders: Vec<u32> = connected
            .iter()
            .copied()
            .filter(|p| *p == origin || self.peers.get(p).and_then(|s| s.holds.get(&origin)).is_some_and(|&c| c >= first.0))
            .collect();
        if holders.is_empty() {
            holders = connected.clone();
        }
        let target = if attempts == 0 && connected.contains(&origin) {
            origin
        } else if let Some(h) = hint.filter(|h| attempts == 0 && holders.contains(h)) {
            h
        } else {
            holders[(attempts as usize) % holders.len()]
        };
        let jitter = self.jitter();
        let st = self.vector.origin(origin);
        st.attempts = st.attempts.saturating_add(1);
        st.next_request = tick + backoff_ticks(attempts) + jitter;
        let n = wanted.len() as u64;
        let body = Body {
            schema_version: self.schema_version,
            requests: vec![Ranges { origin, ranges: wanted }],
            ..Default::default()
        };
        self.counters.requests_out += 1;
        let frame = protocol::encode_frame(self.peer_id, &body, self.key());
        (vec![Outgoing { peer: target, frame }], n)
    }

    fn check_synced(&mut self) {
        let ids: Vec<u32> = self.peers.iter().filter(|(_, p)| p.connected && p.pinged_us && !p.synced).map(|(i, _)| *i).collect();
        for id in ids {
            let caught_up = self.peers[&id]
                .holds
                .iter()
                .all(|(&o, &c)| o == self.peer_id || self.vector.contiguous(o) >= c || self.vector.origins.get(&o).is_some_and(|s| !s.gone.is_empty()));
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
        let mut origins: Vec<u32> = self.vector.origins.keys().copied().filter(|&o| o != self.peer_id).collect();
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

    /// Retention: delete, in small batches, patches older than
    /// `retentionMs` that are below every origin's contiguous seq and covered
    /// by the last snapshot (when one exists).
    fn purge(&mut self) -> Result<()> {
        let cutoff = hlc::from_unix_ms(hlc::wall_ms().saturating_sub(self.cfg.retention_ms)) as i64;
        let cover: Option<HashMap<u32, u64>> = self
            .conn
            .query_row("SELECT value FROM _quilt_meta WHERE key='snapshot_vector'", [], |r| r.get::<_, Vec<u8>>(0))
            .optional()?
            .and_then(|b| rmp_serde::from_slice(&b).ok());
        let origins: Vec<(u32, u64)> = self.vector.origins.keys().map(|&o| (o, self.vector.contiguous(o))).collect();
        for (o, contiguous) in origins {
            let limit = match &cover {
                Some(c) => contiguous.min(c.get(&o).copied().unwrap_or(0)),
                None => contiguous,
            };
            if limit == 0 {
                continue;
            }
            let mut max_deleted = 0i64;
            let mut sqls: Vec<String> = self
                .tables
                .values()
                .map(|t| {
                    format!(
                        "DELETE FROM {0} WHERE rowid IN (SELECT rowid FROM {0} WHERE _peerId=?1 AND _sequenceId<=?2 AND _patchedAt<?3 LIMIT {PURGE_BATCH}) RETURNING _sequenceId",
                        q(&t.patches())
                    )
                })
                .collect();
            sqls.push(format!("DELETE FROM _quilt_kept WHERE (origin, seq) IN (SELECT origin, seq FROM _quilt_kept WHERE origin=?1 AND seq<=?2 AND at<?3 LIMIT {PURGE_BATCH}) RETURNING seq"));
            for sql in sqls {
                let mut st = self.conn.prepare_cached(&sql)?;
                let rows = st.query_map(rusqlite::params![o as i64, limit as i64, cutoff], |r| r.get::<_, i64>(0))?;
                for s in rows {
                    max_deleted = max_deleted.max(s?);
                }
            }
            if max_deleted > 0 {
                let upto = (max_deleted as u64).max(self.purged.get(&o).copied().unwrap_or(0));
                self.purged.insert(o, upto);
                self.conn
                    .prepare_cached("INSERT OR REPLACE INTO _quilt_purged(origin, upto) VALUES(?, ?)")?
                    .execute(rusqlite::params![o as i64, upto as i64])?;
                self.counters.purged += 1;
            }
        }
        Ok(())
    }

    /// Record the seq vector a snapshot covers (retention never purges
    /// beyond it).
    pub fn set_snapshot_cover(&self, vector: &HashMap<u32, u64>, created_ms: u64) -> Result<()> {
        let blob = rmp_serde::to_vec(vector).unwrap_or_default();
        self.conn.execute("INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES('snapshot_vector', ?)", [blob])?;
        self.conn.execute(
            "INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES('snapshot_at', ?)",
            [created_ms as i64],
        )?;
        Ok(())
    }

    /// Contiguous seq per origin (what a snapshot taken now covers).
    pub fn contiguous_vector(&self) -> HashMap<u32, u64> {
        let mut v: HashMap<u32, u64> = self.vector.origins.keys().map(|&o| (o, self.vector.contiguous(o))).collect();
        v.insert(self.peer_id, self.seq);
        v
    }

    // ----- status ---------------------------------------------------------

    fn is_live(&self, p: &PeerState) -> bool {
        p.connected && p.heard_tick.is_some_and(|t| self.tick_no.saturating_sub(t) <= LIVE_TICKS)
    }

    /// The lowest live peer id (this one included) leads.
    pub fn is_leader(&self) -> bool {
        !self.peers.iter().any(|(&id, p)| id < self.peer_id && self.is_live(p))
    }

    /// True when every live peer has acknowledged our last seq.
    pub fn all_acked(&self) -> bool {
        self.peers
            .values()
            .filter(|p| self.is_live(p))
            .all(|p| p.holds.get(&self.peer_id).copied().unwrap_or(0) >= self.seq)
    }

    pub fn pending(&self) -> u64 {
        self.pending
    }

    pub fn status(&self) -> Status {
        let mut ids: Vec<u32> = self.peers.keys().copied().collect();
        ids.extend(self.vector.origins.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|&i| i != self.peer_id);
        let peers = ids
            .into_iter()
            .map(|id| {
                let ps = self.peers.get(&id);
                let o = self.vector.origins.get(&id);
                let last = o.map_or(0, |o| o.max_seen.max(o.held.max()));
                PeerStatus {
                    peer_id: id,
                    connected: ps.is_some_and(|p| p.connected),
                    last_seq: last,
                    contiguous_seq: o.map_or(0, |o| o.held.contiguous()),
                    missing: o.map_or(0, |o| o.held.missing_count(last)),
                    last_seen_ms: ps.and_then(|p| p.heard_tick.map(|_| p.heard_ms)),
                }
            })
            .collect();
        Status {
            peer_id: self.peer_id,
            schema_version: self.schema_version,
            seq: self.seq,
            is_leader: self.is_leader(),
            peers,
            pending: self.pending,
        }
    }

    /// Lag per origin in seconds: time since the oldest missing patch was
    /// noticed (0 when caught up), for metrics.
    pub fn lag(&self) -> Vec<(u32, f64)> {
        let mut v: Vec<(u32, f64)> = self
            .vector
            .origins
            .iter()
            .filter(|(&o, _)| o != self.peer_id)
            .map(|(&o, s)| {
                let behind = s.held.missing_count(s.max_seen) > 0;
                let ticks = s.gap_since.map_or(0, |t| self.tick_no.saturating_sub(t));
                (o, if behind { (ticks * self.cfg.heartbeat_ms.max(1)) as f64 / 1000.0 } else { 0.0 })
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v
    }

    pub fn peer_count(&self) -> (usize, usize) {
        let connected = self.peers.values().filter(|p| p.connected).count();
        let live = self.peers.values().filter(|p| self.is_live(p)).count();
        (connected, live)
    }

    pub fn last_snapshot_ms(&self) -> Option<u64> {
        self.conn
            .query_row("SELECT value FROM _quilt_meta WHERE key='snapshot_at'", [], |r| r.get::<_, i64>(0))
            .optional()
            .ok()
            .flatten()
            .map(|v| v as u64)
    }

    /// `all`/`get`: read-only statements only.
    pub fn query(&self, sql: &str, params: &[Value], one: bool) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        self.check_open()?;
        let mut st = self.conn.prepare(sql)?;
        if !st.readonly() {
            return Err(Error::ReadOnly(format!("all()/get() run read-only statements only: {sql}")));
        }
        let expected = st.parameter_count();
        if params.len() != expected {
            return Err(Error::Range(format!("statement takes {expected} parameters, {} given", params.len())));
        }
        let names: Vec<String> = st.column_names().into_iter().map(String::from).collect();
        let n = names.len();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(r.get::<_, Value>(i)?);
            }
            out.push(row);
            if one {
                break;
            }
        }
        Ok((names, out))
    }

    /// Persist state and close the connection. Idempotent.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.save_state()?;
        self.closed = true;
        let _ = self.conn.execute_batch("PRAGMA optimize");
        Ok(())
    }
}
