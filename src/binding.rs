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
use std::ptr;

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

fn type_err(msg: impl Into<String>) -> napi::Error {
    to_napi(CoreError::Type(msg.into()))
}

fn check(status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(type_err(format!("could not read {what}")))
    }
}

unsafe fn js_string(env: sys::napi_env, v: sys::napi_value) -> Result<String> {
    let mut len = 0usize;
    check(
        sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len),
        "string",
    )?;
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    check(
        sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), len + 1, &mut written),
        "string",
    )?;
    buf.truncate(written);
    String::from_utf8(buf).map_err(|_| type_err("string is not valid UTF-8"))
}

unsafe fn js_bytes(env: sys::napi_env, v: sys::napi_value) -> Result<Option<Vec<u8>>> {
    let mut is_ta = false;
    check(sys::napi_is_typedarray(env, v, &mut is_ta), "value")?;
    if is_ta {
        let mut ty = 0;
        let mut len = 0usize;
        let mut data = ptr::null_mut();
        let mut ab = ptr::null_mut();
        let mut off = 0usize;
        check(
            sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off),
            "typed array",
        )?;
        if ty != sys::TypedarrayType::uint8_array {
            return Err(type_err("binary values must be a Buffer or Uint8Array"));
        }
        if len == 0 || data.is_null() {
            return Ok(Some(Vec::new()));
        }
        return Ok(Some(
            std::slice::from_raw_parts(data as *const u8, len).to_vec(),
        ));
    }
    let mut is_buf = false;
    check(sys::napi_is_buffer(env, v, &mut is_buf), "value")?;
    if is_buf {
        let mut data = ptr::null_mut();
        let mut len = 0usize;
        check(
            sys::napi_get_buffer_info(env, v, &mut data, &mut len),
            "buffer",
        )?;
        if len == 0 || data.is_null() {
            return Ok(Some(Vec::new()));
        }
        return Ok(Some(
            std::slice::from_raw_parts(data as *const u8, len).to_vec(),
        ));
    }
    Ok(None)
}

/// A JS value as a cell value; `None` for `undefined` (column not given).
unsafe fn js_value(env: sys::napi_env, v: sys::napi_value, col: &str) -> Result<Option<Value>> {
    let mut t = 0;
    check(sys::napi_typeof(env, v, &mut t), "value")?;
    Ok(Some(match t {
        sys::ValueType::napi_undefined => return Ok(None),
        sys::ValueType::napi_null => Value::Null,
        sys::ValueType::napi_boolean => {
            let mut b = false;
            check(sys::napi_get_value_bool(env, v, &mut b), "boolean")?;
            Value::Int(b as i64)
        }
        sys::ValueType::napi_number => {
            let mut f = 0f64;
            check(sys::napi_get_value_double(env, v, &mut f), "number")?;
            if f.is_nan() {
                return Err(to_napi(CoreError::Range(format!("column {col}: NaN cannot be stored"))));
            }
            if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
                Value::Int(f as i64)
            } else {
                Value::Real(f)
            }
        }
        sys::ValueType::napi_string => Value::Text(js_string(env, v)?),
        sys::ValueType::napi_bigint => {
            let mut i = 0i64;
            let mut lossless = false;
            check(sys::napi_get_value_bigint_int64(env, v, &mut i, &mut lossless), "bigint")?;
            if !lossless {
                return Err(to_napi(CoreError::Range(format!("column {col}: bigint does not fit 64 bits"))));
            }
            Value::Int(i)
        }
        sys::ValueType::napi_object => match js_bytes(env, v)? {
            Some(b) => Value::Blob(b),
            None => {
                return Err(type_err(format!(
                    "column {col}: objects cannot be stored; use null, a number, bigint, string, boolean or Buffer"
                )))
            }
        },
        _ => return Err(type_err(format!("column {col}: unsupported value type"))),
    }))
}

/// A row object: own enumerable string keys, `undefined` values skipped.
pub struct JsRow(pub Vec<(String, Value)>);

impl TypeName for JsRow {
    fn type_name() -> &'static str {
        "Record<string, unknown>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsRow {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let mut t = 0;
        check(sys::napi_typeof(env, v, &mut t), "row")?;
        let mut is_arr = false;
        check(sys::napi_is_array(env, v, &mut is_arr), "row")?;
        if t != sys::ValueType::napi_object || is_arr {
            return Err(type_err("a row must be a plain object of column values"));
        }
        let mut keys = ptr::null_mut();
        check(
            sys::napi_get_all_property_names(
                env,
                v,
                sys::KeyCollectionMode::own_only,
                sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
                sys::KeyConversion::numbers_to_strings,
                &mut keys,
            ),
            "row keys",
        )?;
        let mut n = 0u32;
        check(sys::napi_get_array_length(env, keys, &mut n), "row keys")?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut k = ptr::null_mut();
            check(sys::napi_get_element(env, keys, i, &mut k), "row key")?;
            let name = js_string(env, k)?;
            let mut val = ptr::null_mut();
            check(sys::napi_get_property(env, v, k, &mut val), "row value")?;
            if let Some(value) = js_value(env, val, &name)? {
                out.push((name, value));
            }
        }
        Ok(JsRow(out))
    }
}

/// Query parameters: an array of values, an object of named values, or a
/// single value.
pub enum JsParams {
    Positional(Vec<Value>),
    Named(Vec<(String, Value)>),
}

impl TypeName for JsParams {
    fn type_name() -> &'static str {
        "unknown[]"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsParams {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let mut is_arr = false;
        check(sys::napi_is_array(env, v, &mut is_arr), "params")?;
        if !is_arr {
            let mut t = 0;
            check(sys::napi_typeof(env, v, &mut t), "params")?;
            if t == sys::ValueType::napi_object && js_bytes(env, v)?.is_none() {
                return Ok(JsParams::Named(JsRow::from_napi_value(env, v)?.0));
            }
            return Ok(JsParams::Positional(
                js_value(env, v, "param")?.into_iter().collect(),
            ));
        }
        let mut n = 0u32;
        check(sys::napi_get_array_length(env, v, &mut n), "params")?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut e = ptr::null_mut();
            check(sys::napi_get_element(env, v, i, &mut e), "param")?;
            out.push(js_value(env, e, "param")?.unwrap_or(Value::Null));
        }
        Ok(JsParams::Positional(out))
    }
}

/// Bytes of a frame (Buffer or Uint8Array).
pub struct JsBytes(pub Vec<u8>);

impl TypeName for JsBytes {
    fn type_name() -> &'static str {
        "Uint8Array"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsBytes {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let mut t = 0;
        check(sys::napi_typeof(env, v, &mut t), "frame")?;
        if t == sys::ValueType::napi_object {
            if let Some(b) = js_bytes(env, v)? {
                return Ok(JsBytes(b));
            }
        }
        Err(type_err("a frame must be a Buffer or Uint8Array"))
    }
}

unsafe fn value_to_js(env: sys::napi_env, v: &Value) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    let status = match v {
        Value::Null => sys::napi_get_null(env, &mut out),
        Value::Int(i) if i.unsigned_abs() <= 9_007_199_254_740_991 => {
            sys::napi_create_double(env, *i as f64, &mut out)
        }
        Value::Int(i) => sys::napi_create_bigint_int64(env, *i, &mut out),
        Value::Real(f) => sys::napi_create_double(env, *f, &mut out),
        Value::Text(s) => {
            sys::napi_create_string_utf8(env, s.as_ptr().cast(), s.len() as isize, &mut out)
        }
        Value::Blob(b) => {
            let mut data = ptr::null_mut();
            sys::napi_create_buffer_copy(env, b.len(), b.as_ptr().cast(), &mut data, &mut out)
        }
    };
    check(status, "result value")?;
    Ok(out)
}

/// Query results: row objects keyed by column name.
pub struct JsRows {
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
    one: bool,
}

impl TypeName for JsRows {
    fn type_name() -> &'static str {
        "any"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for JsRows {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut keys = Vec::with_capacity(val.names.len());
        for n in &val.names {
            let mut k = ptr::null_mut();
            check(
                sys::napi_create_string_utf8(env, n.as_ptr().cast(), n.len() as isize, &mut k),
                "column name",
            )?;
            keys.push(k);
        }
        let make_row = |row: &Vec<Value>| -> Result<sys::napi_value> {
            let mut o = ptr::null_mut();
            check(sys::napi_create_object(env, &mut o), "row")?;
            for (k, v) in keys.iter().zip(row) {
                check(
                    sys::napi_set_property(env, o, *k, value_to_js(env, v)?),
                    "row",
                )?;
            }
            Ok(o)
        };
        if val.one {
            return match val.rows.first() {
                Some(r) => make_row(r),
                None => {
                    let mut u = ptr::null_mut();
                    check(sys::napi_get_undefined(env, &mut u), "undefined")?;
                    Ok(u)
                }
            };
        }
        let mut arr = ptr::null_mut();
        check(
            sys::napi_create_array_with_length(env, val.rows.len(), &mut arr),
            "rows",
        )?;
        for (i, r) in val.rows.iter().enumerate() {
            check(
                sys::napi_set_element(env, arr, i as u32, make_row(r)?),
                "rows",
            )?;
        }
        Ok(arr)
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

/// A frame to hand to one peer's `send`.
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
        };
        Ok(NativeReplicator {
            engine: Some(Engine::open(cfg).map_err(to_napi)?),
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

    /// Tombstone a row.
    #[napi(catch_unwind)]
    pub fn delete(&mut self, table: String, pk: JsRow) -> Result<String> {
        self.e()?.delete(&table, pk.0).map_err(to_napi)
    }

    /// Register a peer; returns the hello frames to send.
    #[napi(catch_unwind)]
    pub fn add_peer(&mut self, peer_id: u32) -> Result<Vec<OutFrame>> {
        Ok(out_frames(self.e()?.add_peer(peer_id).map_err(to_napi)?))
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
        Ok(out_frames(self.e()?.drain_outbox()))
    }

    /// One heartbeat.
    #[napi(catch_unwind)]
    pub fn tick(&mut self) -> Result<Vec<OutFrame>> {
        Ok(out_frames(self.e()?.tick().map_err(to_napi)?))
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
        let s = self.e()?.status();
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
                })
                .collect(),
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

// ----- snapshots ---------------------------------------------------------

use crate::core::snapshot::{self, Progress};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

fn jobs() -> &'static Mutex<HashMap<u32, Arc<Progress>>> {
    static JOBS: OnceLock<Mutex<HashMap<u32, Arc<Progress>>>> = OnceLock::new();
    JOBS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn job(id: u32) -> Arc<Progress> {
    let p = Arc::new(Progress::default());
    if let Ok(mut j) = jobs().lock() {
        j.insert(id, p.clone());
    }
    p
}

fn end_job(id: u32) {
    if let Ok(mut j) = jobs().lock() {
        j.remove(&id);
    }
}

/// `[bytesDone, bytesTotal]` of a running snapshot or restore job.
#[napi]
pub fn snapshot_progress(job_id: u32) -> Vec<f64> {
    jobs()
        .lock()
        .ok()
        .and_then(|j| j.get(&job_id).cloned())
        .map(|p| {
            vec![
                p.done.load(Ordering::Relaxed) as f64,
                p.total.load(Ordering::Relaxed) as f64,
            ]
        })
        .unwrap_or_default()
}

fn opts(o: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    o.unwrap_or_default().into_iter().collect()
}

/// What the JS thread captures before a snapshot runs.
#[napi(object)]
pub struct SnapshotPrep {
    pub source: String,
    pub temp_source: bool,
    pub peer_id: u32,
    pub schema_version: u32,
    pub seq_vector: HashMap<String, f64>,
    pub created_at: f64,
}

#[napi]
impl NativeReplicator {
    /// Capture the seq vector and the source file for a snapshot. An
    /// in-memory database is copied to `temp_path` first (online backup).
    #[napi(catch_unwind)]
    pub fn prepare_snapshot(&mut self, temp_path: String) -> Result<SnapshotPrep> {
        let e = self.e()?;
        let vector = e.contiguous_vector();
        let path = e.config().path.clone();
        let (source, temp_source) = if path == ":memory:" || path.is_empty() {
            e.connection()
                .backup(rusqlite::MAIN_DB, &temp_path, None)
                .map_err(|err| {
                    to_napi(CoreError::Snapshot(format!(
                        "backup of the in-memory database failed: {err}"
                    )))
                })?;
            (temp_path, true)
        } else {
            (path, false)
        };
        Ok(SnapshotPrep {
            source,
            temp_source,
            peer_id: e.peer_id(),
            schema_version: e.schema_version(),
            seq_vector: vector
                .into_iter()
                .map(|(k, v)| (k.to_string(), v as f64))
                .collect(),
            created_at: crate::core::hlc::wall_ms() as f64,
        })
    }

    /// Record what a finished snapshot covers (retention keeps the rest).
    #[napi(catch_unwind)]
    pub fn record_snapshot(
        &mut self,
        seq_vector: HashMap<String, f64>,
        created_at: f64,
    ) -> Result<()> {
        let v: HashMap<u32, u64> = seq_vector
            .into_iter()
            .filter_map(|(k, s)| k.parse::<u32>().ok().map(|k| (k, s as u64)))
            .collect();
        self.e()?
            .set_snapshot_cover(&v, created_at as u64)
            .map_err(to_napi)
    }
}

/// Copy, compress and upload a snapshot; resolves the manifest as JSON.
#[napi]
#[allow(clippy::too_many_arguments)]
pub async fn snapshot_upload(
    job_id: u32,
    prep: SnapshotPrep,
    url: String,
    options: Option<HashMap<String, String>>,
    work_path: String,
    keep: u32,
    keep_ms: f64,
) -> Result<String> {
    let progress = job(job_id);
    let res = async {
        let store = snapshot::open_store(&url, &opts(options))?;
        let work = std::path::PathBuf::from(&work_path);
        let src = std::path::PathBuf::from(&prep.source);
        let w2 = work.clone();
        tokio::task::spawn_blocking(move || snapshot::copy_database(&src, &w2))
            .await
            .map_err(|e| CoreError::Snapshot(e.to_string()))??;
        let meta = snapshot::SnapshotMeta {
            peer_id: prep.peer_id,
            schema_version: prep.schema_version,
            seq_vector: prep
                .seq_vector
                .iter()
                .map(|(k, v)| (k.clone(), *v as u64))
                .collect(),
            created_at: prep.created_at as u64,
        };
        let r = snapshot::upload(
            &store,
            work.clone(),
            meta,
            progress,
            keep as usize,
            keep_ms as u64,
        )
        .await;
        let _ = std::fs::remove_file(&work);
        if prep.temp_source {
            let _ = std::fs::remove_file(&prep.source);
        }
        let m = r?;
        Ok::<_, CoreError>(
            serde_json::json!({ "manifest": m, "url": store.url_of(&m.object) }).to_string(),
        )
    };
    let out = res.await;
    end_job(job_id);
    out.map_err(to_napi)
}

/// Fetch a snapshot into `path` (temp file, sha256 check, rename); resolves
/// the manifest plus the new peer id as JSON.
#[napi]
pub async fn restore_snapshot(
    job_id: u32,
    from: String,
    options: Option<HashMap<String, String>>,
    path: String,
    overwrite: bool,
    name: Option<String>,
) -> Result<String> {
    let progress = job(job_id);
    let res = async {
        let dest = std::path::PathBuf::from(&path);
        if dest.exists() && !overwrite {
            return Err(CoreError::Snapshot(format!(
                "{path} already exists; pass overwrite: true to replace it"
            )));
        }
        let store = snapshot::open_store(&from, &opts(options))?;
        let m = snapshot::manifest(&store, name.as_deref()).await?;
        let mut rnd = [0u8; 6];
        let _ = getrandom::fill(&mut rnd);
        let tmp = std::path::PathBuf::from(format!("{path}.quilt-restore-{}", hex::encode(rnd)));
        let r = async {
            snapshot::download(&store, &m, tmp.clone(), progress).await?;
            let new_peer = loop {
                let mut b = [0u8; 4];
                getrandom::fill(&mut b).map_err(|e| CoreError::Snapshot(e.to_string()))?;
                let v = u32::from_le_bytes(b) & 0x7fff_ffff;
                if v != 0 && v != m.peer_id {
                    break v;
                }
            };
            snapshot::prepare_restored(&tmp, new_peer)?;
            for ext in ["-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{path}{ext}"));
            }
            std::fs::rename(&tmp, &dest).map_err(|e| {
                CoreError::Snapshot(format!("cannot move the restored file into place: {e}"))
            })?;
            Ok::<_, CoreError>(new_peer)
        }
        .await;
        match r {
            Ok(new_peer) => Ok(serde_json::json!({ "manifest": m, "url": store.url_of(&m.object), "peerId": new_peer }).to_string()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    };
    let out = res.await;
    end_job(job_id);
    out.map_err(to_napi)
}

/// Manifests under a snapshot URL, oldest first, as JSON.
#[napi]
pub async fn list_snapshots(
    url: String,
    options: Option<HashMap<String, String>>,
) -> Result<String> {
    let res = async {
        let store = snapshot::open_store(&url, &opts(options))?;
        let all = snapshot::list(&store).await?;
        Ok::<_, CoreError>(serde_json::to_string(&all).unwrap_or_else(|_| "[]".into()))
    };
    res.await.map_err(to_napi)
}
