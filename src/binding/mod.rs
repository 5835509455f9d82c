//! The thin napi layer: argument conversion, one mapping from core errors to
//! JS errors, and `///` docs that reach the generated `binding.d.ts`. The
//! public JS class (`index.js`) wraps `NativeReplicator`: it owns the `send`
//! callbacks, timers and events, and turns the encoded errors below into
//! `Error`/`TypeError`/`RangeError` objects with a string `code`.

use crate::core::engine::{Config, Engine, Event, Migration, Outgoing, Params};
use crate::core::error::Error as CoreError;
use crate::core::metrics;
use crate::core::value::Value;
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use std::collections::HashMap;

mod snapshot;
mod sql;
mod values;

pub use values::{JsBytes, JsCells, JsParams, JsRow, JsRows};

/// Errors cross as `QUILT\x1f<code>\x1f<class>\x1f<message>`; index.js
/// rebuilds a proper error object with `code`.
pub fn to_napi(e: CoreError) -> napi::Error {
    let class = match e {
        CoreError::Type(_) => "TypeError",
        CoreError::Range(_) => "RangeError",
        _ => "Error",
    };
    napi::Error::from_reason(format!("QUILT\x1f{}\x1f{class}\x1f{e}", e.code()))
}

pub(super) fn type_err(msg: impl Into<String>) -> napi::Error {
    to_napi(CoreError::Type(msg.into()))
}

pub(super) fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(type_err(format!("could not read {what}")))
    }
}

/// Options accepted by the native constructor (validated again in index.js).
#[napi(object)]
pub struct NativeOptions {
    pub path: String,
    pub peer_id: Option<u32>,
    pub cluster_key: Option<Buffer>,
    pub heartbeat_ms: Option<f64>,
    pub retention_ms: Option<f64>,
    /// Hard cap: past this age a patch is purged even if a peer lacks it.
    pub max_retention_ms: Option<f64>,
    /// Cap in bytes on kept patches (a quarter per origin).
    pub max_kept_bytes: Option<f64>,
    pub max_drift_ms: Option<f64>,
    pub max_frame_bytes: Option<f64>,
}

/// One migration.
#[napi(object)]
pub struct NativeMigration {
    pub up: String,
    pub down: Option<String>,
    /// `{ table: { oldName: 'newName' } }`
    pub renames: Option<HashMap<String, HashMap<String, String>>>,
}

/// `{ from, to }` of `migrate()`.
#[napi(object)]
pub struct MigrateResult {
    pub from: u32,
    pub to: u32,
}

/// A frame to hand to one peer's `send` (peer 0: the broadcast send).
#[napi(object)]
pub struct OutFrame {
    pub peer: u32,
    pub frame: Buffer,
}

/// Result of `applyPatches` plus the frames to send.
#[napi(object)]
pub struct NativeApply {
    pub applied: u32,
    pub stored: u32,
    pub duplicates: u32,
    pub requested: u32,
    pub out: Vec<OutFrame>,
}

/// An event raised inside the core.
#[napi(object)]
pub struct NativeEvent {
    pub kind: String,
    pub peer_id: Option<u32>,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One row of `status().peers`.
#[napi(object)]
pub struct NativePeerStatus {
    pub peer_id: u32,
    pub connected: bool,
    pub last_seq: f64,
    pub contiguous_seq: f64,
    pub missing: f64,
    pub last_seen_ms: Option<f64>,
    /// Highest contiguous seq of this peer's own writes that peer acknowledged.
    pub acked_seq: f64,
}

/// One peer's acknowledgement of one origin's writes.
#[napi(object)]
pub struct NativePeerAck {
    pub peer_id: u32,
    /// Contiguous seq it holds of the origin (the origin itself: all).
    pub seq: f64,
    pub connected: bool,
}

/// `status()`.
#[napi(object)]
pub struct NativeStatus {
    pub peer_id: u32,
    pub schema_version: u32,
    pub seq: f64,
    pub is_leader: bool,
    pub peers: Vec<NativePeerStatus>,
    pub pending: f64,
    /// Patches re-issued under a new identity after an identity clash.
    pub reissued: f64,
}

type Rows = (Vec<String>, Vec<Vec<Value>>);

fn query(e: &Engine, sql: &str, params: Option<JsParams>, one: bool) -> Result<Rows> {
    let r = match &params {
        None => e.query_with(sql, Params::Positional(&[]), one),
        Some(JsParams::Positional(p)) => e.query_with(sql, Params::Positional(p), one),
        Some(JsParams::Named(n)) => e.query_with(sql, Params::Named(n), one),
    };
    r.map_err(to_napi)
}

fn out_frames(v: Vec<Outgoing>) -> Vec<OutFrame> {
    v.into_iter()
        .map(|o| OutFrame {
            peer: o.peer,
            frame: o.frame.into(),
        })
        .collect()
}

/// The native replicator. Use the `Replicator` class from `quilt-sqlite`,
/// which wraps this one.
#[napi]
pub struct NativeReplicator {
    engine: Option<Engine>,
    /// A broadcast send is registered: patches and pings go to peer 0 once.
    broadcast: bool,
}

impl NativeReplicator {
    fn e(&mut self) -> Result<&mut Engine> {
        self.engine
            .as_mut()
            .ok_or_else(|| to_napi(CoreError::Closed))
    }
}

fn ms(v: Option<f64>, name: &str, default: u64) -> Result<u64> {
    match v {
        None => Ok(default),
        Some(x) if x.is_finite() && x >= 0.0 => Ok(x as u64),
        Some(_) => Err(to_napi(CoreError::Range(format!(
            "{name} must be a finite number >= 0"
        )))),
    }
}

#[napi]
impl NativeReplicator {
    /// Open or create the database at `options.path`.
    #[napi(constructor, catch_unwind)]
    pub fn new(options: NativeOptions) -> Result<Self> {
        let d = Config::default();
        let max_frame = ms(
            options.max_frame_bytes,
            "maxFrameBytes",
            d.max_frame_bytes as u64,
        )?;
        if max_frame < 256 {
            return Err(to_napi(CoreError::Range(
                "maxFrameBytes must be at least 256".into(),
            )));
        }
        let cfg = Config {
            path: options.path,
            peer_id: options.peer_id,
            cluster_key: options.cluster_key.map(|b| b.to_vec()),
            heartbeat_ms: ms(options.heartbeat_ms, "heartbeatMs", d.heartbeat_ms)?,
            retention_ms: ms(options.retention_ms, "retentionMs", d.retention_ms)?,
            max_drift_ms: ms(options.max_drift_ms, "maxDriftMs", d.max_drift_ms)?,
            max_frame_bytes: max_frame as usize,
            max_retention_ms: match options.max_retention_ms {
                Some(v) => Some(ms(Some(v), "maxRetentionMs", 0)?),
                None => None,
            },
            max_kept_bytes: ms(options.max_kept_bytes, "maxKeptBytes", d.max_kept_bytes)?,
        };
        Ok(NativeReplicator {
            engine: Some(Engine::open(cfg).map_err(to_napi)?),
            broadcast: false,
        })
    }

    /// This replicator's peer id.
    #[napi(getter)]
    pub fn peer_id(&mut self) -> Result<u32> {
        Ok(self.e()?.peer_id())
    }

    /// Bring the schema to `migrations.length`.
    #[napi(catch_unwind)]
    pub fn migrate(&mut self, migrations: Vec<NativeMigration>) -> Result<MigrateResult> {
        let list: Vec<Migration> = migrations
            .into_iter()
            .map(|m| Migration {
                up: m.up,
                down: m.down,
                renames: m
                    .renames
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(t, cols)| cols.into_iter().map(move |(o, n)| (t.clone(), o, n)))
                    .collect(),
            })
            .collect();
        let (from, to) = self.e()?.migrate(&list).map_err(to_napi)?;
        Ok(MigrateResult { from, to })
    }

    /// Write one row; returns the token.
    #[napi(catch_unwind)]
    pub fn upsert(&mut self, table: String, row: JsRow) -> Result<String> {
        self.e()?.upsert(&table, vec![row.0]).map_err(to_napi)
    }

    /// Write many rows in one transaction; returns the last token.
    #[napi(catch_unwind)]
    pub fn upsert_many(&mut self, table: String, rows: Vec<JsRow>) -> Result<String> {
        let rows: Vec<Vec<(String, Value)>> = rows.into_iter().map(|r| r.0).collect();
        self.e()?.upsert(&table, rows).map_err(to_napi)
    }

    /// Write many rows in one transaction, given as column names once and
    /// a flat array of `columns.length` values per row (`undefined`: that
    /// row does not give the column). Returns the last token.
    #[napi(catch_unwind)]
    pub fn upsert_columns(
        &mut self,
        table: String,
        columns: Vec<String>,
        values: JsCells,
    ) -> Result<String> {
        let n = columns.len();
        if n == 0 || values.len() % n != 0 {
            return Err(type_err("values must hold columns.length values per row"));
        }
        let mut rows = Vec::with_capacity(values.len() / n);
        let mut it = values.values(&columns)?.into_iter();
        loop {
            let row: Vec<Option<Value>> = it.by_ref().take(n).collect();
            if row.is_empty() {
                break;
            }
            rows.push(row);
        }
        self.e()?
            .upsert_columns(&table, &columns, rows)
            .map_err(to_napi)
    }

    /// Tombstone a row.
    #[napi(catch_unwind)]
    pub fn delete(&mut self, table: String, pk: JsRow) -> Result<String> {
        self.e()?.delete(&table, pk.0).map_err(to_napi)
    }

    /// Register a peer; returns the hello frames to send.
    #[napi(catch_unwind)]
    pub fn add_peer(&mut self, peer_id: u32) -> Result<Vec<OutFrame>> {
        let bc = self.broadcast;
        let e = self.e()?;
        let out = if bc {
            e.add_peer_broadcast(peer_id)
        } else {
            e.add_peer(peer_id)
        };
        Ok(out_frames(out.map_err(to_napi)?))
    }

    /// Send patches and pings once to peer 0 (the broadcast send) from now on.
    #[napi]
    pub fn set_broadcast(&mut self, on: bool) -> Result<()> {
        self.e()?;
        self.broadcast = on;
        Ok(())
    }

    /// Per known peer, its contiguous seq of `origin`'s writes.
    #[napi]
    pub fn peer_acks(&mut self, origin: u32) -> Result<Vec<NativePeerAck>> {
        Ok(self
            .e()?
            .peer_acks(origin)
            .into_iter()
            .map(|a| NativePeerAck {
                peer_id: a.peer_id,
                seq: if a.seq == u64::MAX {
                    f64::MAX
                } else {
                    a.seq as f64
                },
                connected: a.connected,
            })
            .collect())
    }

    /// Forget a peer's send callback.
    #[napi(catch_unwind)]
    pub fn remove_peer(&mut self, peer_id: u32) -> Result<()> {
        self.e()?.remove_peer(peer_id).map_err(to_napi)
    }

    /// Take in a frame.
    #[napi(catch_unwind)]
    pub fn apply_patches(&mut self, frame: JsBytes) -> Result<NativeApply> {
        let (r, out) = self.e()?.apply_frame(&frame.0).map_err(to_napi)?;
        Ok(NativeApply {
            applied: r.applied as u32,
            stored: r.stored as u32,
            duplicates: r.duplicates as u32,
            requested: r.requested as u32,
            out: out_frames(out),
        })
    }

    /// Queued local patches as frames.
    #[napi(catch_unwind)]
    pub fn flush(&mut self) -> Result<Vec<OutFrame>> {
        let bc = self.broadcast;
        let e = self.e()?;
        Ok(out_frames(if bc {
            e.drain_broadcast()
        } else {
            e.drain_outbox()
        }))
    }

    /// One heartbeat.
    #[napi(catch_unwind)]
    pub fn tick(&mut self) -> Result<Vec<OutFrame>> {
        let bc = self.broadcast;
        let e = self.e()?;
        let out = if bc { e.tick_broadcast() } else { e.tick() };
        Ok(out_frames(out.map_err(to_napi)?))
    }

    /// Count frames handed to send (bytes) and send failures.
    #[napi]
    pub fn note_sent(&mut self, frames: u32, bytes: f64, failures: u32) -> Result<()> {
        self.e()?
            .count_sent(frames as u64, bytes as u64, failures as u64);
        Ok(())
    }

    /// Events since the last call.
    #[napi]
    pub fn take_events(&mut self) -> Result<Vec<NativeEvent>> {
        let Some(e) = self.engine.as_mut() else {
            return Ok(Vec::new());
        };
        Ok(e.take_events()
            .into_iter()
            .map(|ev| match ev {
                Event::Synced(p) => NativeEvent {
                    kind: "synced".into(),
                    peer_id: Some(p),
                    code: None,
                    message: None,
                },
                Event::Error { code, message } => NativeEvent {
                    kind: "error".into(),
                    peer_id: None,
                    code: Some(code.into()),
                    message: Some(message),
                },
            })
            .collect())
    }

    /// Read-only query, all rows.
    #[napi(catch_unwind)]
    pub fn all(&mut self, sql: String, params: Option<JsParams>) -> Result<JsRows> {
        let (names, rows) = query(self.e()?, &sql, params, false)?;
        Ok(JsRows {
            names,
            rows,
            one: false,
        })
    }

    /// Read-only query, first row or undefined.
    #[napi(catch_unwind)]
    pub fn get(&mut self, sql: String, params: Option<JsParams>) -> Result<JsRows> {
        let (names, rows) = query(self.e()?, &sql, params, true)?;
        Ok(JsRows {
            names,
            rows,
            one: true,
        })
    }

    /// True once `(origin, seq)` is applied here.
    #[napi]
    pub fn has(&mut self, origin: u32, seq: f64) -> Result<bool> {
        Ok(self.e()?.has(origin, seq as u64))
    }

    /// Cluster status.
    #[napi(catch_unwind)]
    pub fn status(&mut self) -> Result<NativeStatus> {
        let e = self.e()?;
        let s = e.status();
        let acked: HashMap<u32, u64> = s
            .peers
            .iter()
            .map(|p| (p.peer_id, e.acked_seq(p.peer_id)))
            .collect();
        Ok(NativeStatus {
            peer_id: s.peer_id,
            schema_version: s.schema_version,
            seq: s.seq as f64,
            is_leader: s.is_leader,
            pending: s.pending as f64,
            peers: s
                .peers
                .into_iter()
                .map(|p| NativePeerStatus {
                    peer_id: p.peer_id,
                    connected: p.connected,
                    last_seq: p.last_seq as f64,
                    contiguous_seq: p.contiguous_seq as f64,
                    missing: p.missing as f64,
                    last_seen_ms: p.last_seen_ms.map(|v| v as f64),
                    acked_seq: acked.get(&p.peer_id).copied().unwrap_or(0) as f64,
                })
                .collect(),
            reissued: s.reissued as f64,
        })
    }

    /// The lowest live peer id leads.
    #[napi]
    pub fn is_leader(&mut self) -> Result<bool> {
        Ok(self.e()?.is_leader())
    }

    /// Every live peer acknowledged our last seq.
    #[napi]
    pub fn all_acked(&mut self) -> Result<bool> {
        Ok(self.e()?.all_acked())
    }

    /// OpenMetrics text.
    #[napi(catch_unwind)]
    pub fn metrics(&mut self) -> Result<String> {
        let e = self.e()?;
        let (connected, live) = e.peer_count();
        let now = crate::core::hlc::wall_ms();
        let g = metrics::Gauges {
            peers_connected: connected,
            peers_live: live,
            lag: e.lag(),
            pending: e.pending(),
            seq: e.seq(),
            snapshot_age_s: e
                .last_snapshot_ms()
                .map(|t| now.saturating_sub(t) as f64 / 1000.0),
            is_leader: e.is_leader(),
        };
        Ok(metrics::render(&e.counters, &g))
    }

    /// Close the database. Idempotent.
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> Result<()> {
        if let Some(mut e) = self.engine.take() {
            e.close().map_err(to_napi)?;
        }
        Ok(())
    }

    /// True after close().
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.engine.is_none()
    }

    /// Test hook: panics inside native code, to prove no panic crosses the FFI.
    #[napi(catch_unwind)]
    pub fn debug_panic(&self) -> Result<()> {
        panic!("deliberate panic for the FFI test")
    }
}
