//! The replicator core: one SQLite connection, one HLC, the sequence vector
//! and the peer table. It is synchronous and transport-free: calls return the
//! frames to hand to each peer's `send`, plus events, and the binding does
//! the handing. That keeps every protocol step deterministic and testable
//! from `cargo test` (see `tests/sim.rs`).

use crate::core::error::{frame_err, schema_err, Error, Result};
use crate::core::hlc::{self, Hlc};
use crate::core::meta;
use crate::core::metrics::Counters;
use crate::core::ordinals;
use crate::core::patches;
use crate::core::protocol::{self, Body, FrameBuilder, Patch, Ping, Ranges};
use crate::core::ranges::RangeSet;
use crate::core::runs::Runs;
use crate::core::schema::{self, TableInfo};
use crate::core::store::{self, RowPatch, Stamp};
use crate::core::sync::{GapTracker, SeqVector, SHADOW_STEP};
use crate::core::tx;
use crate::core::value::Value;
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

mod atomic;
pub mod broadcast;
mod capture;
mod clash;
mod defer;
mod fence;
mod gaps;
mod kept;
mod migrate;
pub mod persist;
mod ping;
mod read;
mod received;
mod replication;
mod retention;
mod txn;
mod write;

pub use capture::{PreparedSql, SqlMode, SqlOutput, StatementInfo};
pub use txn::Change;

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
    /// Hard cap: patches older than this are purged even when a peer still
    /// lacks them (with an `'error'` event naming that peer). None: never.
    pub max_retention_ms: Option<u64>,
    /// Cap on kept patches (whole patches the schema cannot hold yet) in
    /// bytes; one origin may use a quarter of it.
    pub max_kept_bytes: u64,
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
            max_retention_ms: None,
            max_kept_bytes: 256 << 20,
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

/// Query parameters.
pub enum Params<'a> {
    Positional(&'a [Value]),
    Named(&'a [(String, Value)]),
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
    /// Added with addPeer and not removed: retention waits for it.
    pub added: bool,
    pub heard_tick: Option<u64>,
    pub heard_ms: u64,
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
    /// Highest contiguous seq of this peer's own writes it acknowledged.
    pub acked_seq: u64,
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
    /// Patches re-issued under a new identity after a clash (a file rolled
    /// back, or two files with one peer id).
    pub reissued: u64,
}

/// Ticks within which a peer must have been heard to count as live.
pub const LIVE_TICKS: u64 = 3;
/// Most patches served for one request message.
const SERVE_LIMIT: usize = 20_000;
/// Most bytes served for one request message.
const SERVE_BYTES_PER_REQUEST: usize = 1 << 20;
/// Most bytes served to one peer per heartbeat.
const SERVE_BYTES_PER_TICK: usize = 4 << 20;
/// Heartbeats between two broadcast pings carrying the whole vector.
const FULL_PING_EVERY: u64 = 10;
/// Kept patches read per page (never the whole table at once).
const KEPT_PAGE: usize = 1000;
/// Most heartbeats between two verifications of one origin with one peer
/// while their digests differ (the interval doubles from 1 up to this).
const VERIFY_EVERY: u64 = 32;
/// Rows deleted per table per heartbeat by retention.
const PURGE_BATCH: usize = 500;

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
    gaps: GapTracker,
    purged: HashMap<u32, u64>,
    /// Per origin, the XOR of the patch hashes retention removed.
    purged_digest: HashMap<u32, u64>,
    /// Highest snapshot cover known anywhere in the cluster, per origin.
    cluster_cover: HashMap<u32, u64>,
    /// What the last broadcast ping said per origin (contiguous, max,
    /// digest): the next one carries only what changed.
    last_ping: HashMap<u32, (u64, u64, u64)>,
    /// Per origin, the stamp of its oldest stored patch (retention looks at
    /// an origin only once the cutoff passes it).
    oldest_at: HashMap<u32, u64>,
    /// Cover of this peer's own last snapshot, if it took one.
    own_cover: Option<HashMap<u32, u64>>,
    /// Seq when this file was opened: own writes above it are this run's.
    open_seq: u64,
    reissued: u64,
    /// Bytes served per peer during the current heartbeat.
    served_bytes: HashMap<u32, usize>,
    /// Next heartbeat at which (peer, origin) may be verified again.
    verify_after: HashMap<(u32, u32), (u64, u64)>,
    /// Verification requests decided while reading a ping, sent after it.
    verify_queue: Vec<(u32, Ranges)>,
    /// Bytes of kept patches per origin.
    kept_bytes: HashMap<u32, u64>,
    behind_warned: bool,
    peers: BTreeMap<u32, PeerState>,
    outbox: Vec<Patch>,
    /// Open units of work and what they keep aside (txn.rs).
    units: txn::Units,
    tick_no: u64,
    rng: u64,
    pending: u64,
    events: Vec<Event>,
    pending_warned: bool,
    pub counters: Counters,
    closed: bool,
    /// State last written to `_quilt_state` (skip identical writes).
    saved: std::cell::Cell<Option<(u32, u64, u64, u32)>>,
    /// Where patch rows sit (runs/); borrowed only for one call at a time.
    runs: std::cell::RefCell<Runs>,
    /// Atomic units held in part (units.rs), and local ones not yet sent.
    waiting: Vec<crate::core::atomic::Atomic>,
    out_atomic: Vec<crate::core::atomic::Atomic>,
    /// Marks of the vector last saved (persist.rs).
    saved_marks: std::cell::RefCell<Option<persist::Marks>>,
    /// Clock rows of autocommit writes kept aside (defer.rs).
    defer: defer::Deferred,
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
            return Err(Error::Type(
                "options.path must be a non-empty string".into(),
            ));
        }
        let conn = Connection::open(&cfg.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if cfg.path != ":memory:" {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every write dirties a few pages (patch row, its index, base row,
        // clock row): checkpoint less often so the WAL is synced less often.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
        conn.set_prepared_statement_cache_capacity(512);
        read::install(&conn);
        schema::ensure_meta(&conn)?;
        let (peer_id, seq, hlc_last, schema_version) = match meta::load_state(&conn)? {
            Some(state) => state,
            None => {
                let id = cfg.peer_id.unwrap_or_else(random_peer_id);
                meta::create_state(&conn, id, protocol::PROTOCOL_VERSION)?;
                (id, 0, 0, 0)
            }
        };
        let mut e = Engine {
            conn,
            peer_id,
            seq,
            hlc: Hlc::with_salt(hlc_last, random_peer_id() as u64),
            schema_version,
            tables: BTreeMap::new(),
            renames: Vec::new(),
            vector: SeqVector::default(),
            gaps: GapTracker::default(),
            purged: HashMap::new(),
            purged_digest: HashMap::new(),
            cluster_cover: HashMap::new(),
            own_cover: None,
            oldest_at: HashMap::new(),
            last_ping: HashMap::new(),
            open_seq: 0,
            reissued: 0,
            served_bytes: HashMap::new(),
            verify_after: HashMap::new(),
            verify_queue: Vec::new(),
            kept_bytes: HashMap::new(),
            behind_warned: false,
            peers: BTreeMap::new(),
            outbox: Vec::new(),
            units: txn::Units::default(),
            tick_no: 0,
            rng: (peer_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            pending: 0,
            events: Vec::new(),
            pending_warned: false,
            counters: Counters::default(),
            closed: false,
            saved: std::cell::Cell::new(None),
            runs: std::cell::RefCell::new(Runs::default()),
            saved_marks: std::cell::RefCell::new(None),
            waiting: Vec::new(),
            out_atomic: Vec::new(),
            defer: Default::default(),
            cfg,
        };
        e.adopt_replic()?;
        e.refresh_schema(false)?;
        e.recover_clock()?;
        e.rebuild_vector()?;
        if let Some(id) = e.cfg.peer_id {
            if id != e.peer_id {
                e.peer_id = id;
                e.seq = e.vector.regular_max(id);
                e.save_state()?;
            }
        }
        let own = e.vector.regular_max(e.peer_id);
        e.seq = e.seq.max(own);
        e.open_seq = e.seq;
        e.waiting = crate::core::atomic::waiting(&e.conn)?;
        e.recount_pending()?;
        e.load_kept_bytes()?;
        e.load_snapshot_cover()?;
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
        // Runs kept in memory are written now (runs/tail.rs).
        self.runs.borrow_mut().flush_all(&self.conn)?;
        let now = (self.peer_id, self.seq, self.hlc.last(), self.schema_version);
        if self.saved.get() == Some(now) {
            return self.save_vector();
        }
        meta::save_state(&self.conn, now)?;
        self.saved.set(Some(now));
        self.save_vector()
    }

    /// Reload the replicated tables after a schema change. `rebuild_runs`:
    /// the patch tables may have been rewritten (a migration), so their
    /// runs are rebuilt from the rows.
    fn refresh_schema(&mut self, rebuild_runs: bool) -> Result<()> {
        // Cached statements read their column lists before the first step;
        // after a schema change they must be prepared anew.
        self.conn.flush_prepared_statement_cache();
        self.load_renames()?;
        let mut tables = schema::load_tables(&self.conn)?;
        let rebuild = rebuild_runs || !schema::runs_built(&self.conn)?;
        // Ordinals, the one-time clock upgrade, the run map and the
        // internal tables go together or not at all (a savepoint also works
        // inside migrate's transaction).
        tx::savepoint(&self.conn, &tx::SCHEMA)?;
        let res = (|| -> Result<()> {
            ordinals::ensure(&self.conn)?;
            ordinals::assign(&self.conn, &mut tables, self.schema_version, &self.renames)?;
            ordinals::upgrade_clocks(&self.conn, &tables)?;
            if rebuild {
                self.runs.borrow_mut().clear(&self.conn)?;
            }
            for t in tables.values() {
                ordinals::ensure_nulls_column(&self.conn, t)?;
                if rebuild && t.rowid {
                    patches::rebuild_runs(&self.conn, &mut self.runs.borrow_mut(), t)?;
                }
                if schema::ensure_internal(&self.conn, t)? {
                    store::rebuild_clock(&self.conn, t)?;
                }
            }
            if rebuild {
                schema::set_runs_built(&self.conn)?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => tx::release(&self.conn, &tx::SCHEMA)?,
            Err(e) => {
                let _ = tx::rollback_to(&self.conn, &tx::SCHEMA);
                self.runs.borrow_mut().discard();
                return Err(e);
            }
        }
        self.set_tables(tables);
        Ok(())
    }

    /// Replace the replicated tables (the fence's list of names is rebuilt
    /// on next use).
    fn set_tables(&mut self, tables: BTreeMap<String, TableInfo>) {
        self.tables = tables;
        *self.units.fence.borrow_mut() = None;
    }

    /// The declared renames of every recorded migration, in version order.
    fn load_renames(&mut self) -> Result<()> {
        self.renames = meta::renames(&self.conn)?;
        Ok(())
    }

    /// `"<peerId>.<seq>"` of the last local write.
    pub fn token(&self) -> String {
        format!("{}.{}", self.peer_id, self.seq)
    }

    /// True once the write named by `(origin, seq)` is held here.
    pub fn has(&self, origin: u32, seq: u64) -> bool {
        seq == 0 || self.vector.holds(origin, seq)
    }

    // ----- status ---------------------------------------------------------

    fn is_live(&self, p: &PeerState) -> bool {
        p.connected
            && p.heard_tick
                .is_some_and(|t| self.tick_no.saturating_sub(t) <= LIVE_TICKS)
    }

    /// The lowest live peer id (this one included) leads.
    pub fn is_leader(&self) -> bool {
        !self
            .peers
            .iter()
            .any(|(&id, p)| id < self.peer_id && self.is_live(p))
    }

    /// True when every live peer has acknowledged our last seq.
    /// Peers counted: connected ones that are live, or not heard from yet
    /// (just added); peers that went quiet are not waited for.
    pub fn all_acked(&self) -> bool {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected && (p.heard_tick.is_none() || self.is_live(p)))
            .all(|(id, _)| self.gaps.acked(*id, self.peer_id) >= self.seq)
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
                let o = self.vector.origins.get(&id).cloned().unwrap_or_default();
                PeerStatus {
                    peer_id: id,
                    connected: ps.is_some_and(|p| p.connected),
                    last_seq: self.gaps.target(id, &o),
                    contiguous_seq: o.held.contiguous().min(SHADOW_STEP - 1),
                    missing: self.gaps.missing(id, &o),
                    last_seen_ms: ps.and_then(|p| p.heard_tick.map(|_| p.heard_ms)),
                    acked_seq: self.gaps.acked(id, self.peer_id),
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
            reissued: self.reissued,
        }
    }

    /// Lag per origin in seconds: time since the oldest missing patch was
    /// noticed (0 when caught up), for metrics.
    pub fn lag(&self) -> Vec<(u32, f64)> {
        let now = hlc::wall_ms();
        let mut v: Vec<(u32, f64)> = self
            .vector
            .origins
            .iter()
            .filter(|(&o, _)| o != self.peer_id)
            .map(|(&o, s)| {
                let behind = self.gaps.missing(o, s) > 0;
                let since = self
                    .gaps
                    .repair
                    .get(&o)
                    .and_then(|r| r.gap_since_ms)
                    .unwrap_or(now);
                (
                    o,
                    if behind {
                        now.saturating_sub(since) as f64 / 1000.0
                    } else {
                        0.0
                    },
                )
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
        meta::get::<i64>(&self.conn, retention::SNAPSHOT_AT_KEY)
            .ok()
            .flatten()
            .map(|v| v as u64)
    }

    /// Persist state and close the connection. Idempotent.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        // When this fails the marks stay and the next open replays them.
        let _ = self.settle_clock();
        self.save_state()?;
        self.closed = true;
        meta::optimize(&self.conn);
        Ok(())
    }
}
