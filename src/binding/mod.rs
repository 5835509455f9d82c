//! The thin napi layer: argument conversion and checking (`values.rs`), one
//! mapping from core errors to JS errors, and `///` docs that reach the
//! generated `binding.d.ts`. The public JS class (`lib/replicator.js`) wraps
//! `NativeReplicator`: it owns the `send` callbacks, timers and events.
//!
//! Errors are finished here: [`js_error`] builds the JS error object itself
//! (`TypeError`/`RangeError` for bad arguments, else a `QuiltError`) and sets
//! its `code`, so JS rethrows what it gets and never parses a message.

use crate::core::engine::{Config, Engine, Event, Outgoing, Params};
use crate::core::error::Error as CoreError;
use crate::core::metrics;
use crate::core::value::Value;
use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;
use std::collections::HashMap;
use std::ptr;

mod args;
mod cells;
mod snapshot;
mod sql;
mod values;
mod write;

pub use args::{JsMigrations, NativeOptions, RestoreArgs};
pub use cells::{JsCells, JsOut, JsPacked, JsUtf16};
pub use values::{JsBytes, JsKey, JsParams, JsPeerId, JsRow, JsRowList, JsRows, JsSql, JsTable};

/// The constructor of the JS error class for coded errors, registered once
/// per env by `setErrorClass` (lib/errors.js: `QuiltError`).
struct ErrorClass(sys::napi_ref);

/// The class a JS error object is built from.
#[derive(Clone, Copy)]
enum Class {
    Type,
    Range,
    Coded,
}

/// Creates the JS error object: `TypeError`, `RangeError`, or an instance of
/// the registered error class (a plain `Error` if none is registered), with
/// `code` set here. `None` when the env cannot build one (tearing down).
unsafe fn new_error(
    env: sys::napi_env,
    class: Class,
    code: &str,
    msg: &str,
) -> Option<sys::napi_value> {
    let mut c = ptr::null_mut();
    let mut m = ptr::null_mut();
    if sys::napi_create_string_utf8(env, code.as_ptr().cast(), code.len() as isize, &mut c)
        != sys::Status::napi_ok
        || sys::napi_create_string_utf8(env, msg.as_ptr().cast(), msg.len() as isize, &mut m)
            != sys::Status::napi_ok
    {
        return None;
    }
    let mut err = ptr::null_mut();
    let made = match class {
        Class::Type => sys::napi_create_type_error(env, c, m, &mut err),
        Class::Range => sys::napi_create_range_error(env, c, m, &mut err),
        Class::Coded => {
            let instance = registered_class(env).and_then(|ctor| {
                let mut out = ptr::null_mut();
                let args = [c, m];
                let st = sys::napi_new_instance(env, ctor, 2, args.as_ptr(), &mut out);
                if st == sys::Status::napi_ok {
                    Some(out)
                } else {
                    // The class threw: drop that and build a plain Error.
                    let mut ex = ptr::null_mut();
                    sys::napi_get_and_clear_last_exception(env, &mut ex);
                    None
                }
            });
            match instance {
                Some(v) => {
                    err = v;
                    sys::Status::napi_ok
                }
                None => sys::napi_create_error(env, c, m, &mut err),
            }
        }
    };
    if made != sys::Status::napi_ok || err.is_null() {
        return None;
    }
    // Whatever the class did, `code` is the one given here.
    sys::napi_set_named_property(env, err, c"code".as_ptr(), c);
    Some(err)
}

/// The constructor registered with `setErrorClass` for this env, if any.
unsafe fn registered_class(env: sys::napi_env) -> Option<sys::napi_value> {
    let r = Env::from_raw(env)
        .get_instance_data::<ErrorClass>()
        .ok()??
        .0;
    let mut ctor = ptr::null_mut();
    (sys::napi_get_reference_value(env, r, &mut ctor) == sys::Status::napi_ok && !ctor.is_null())
        .then_some(ctor)
}

/// A `napi::Error` that carries a JS error object built by [`new_error`]:
/// thrown as is, and a Promise rejects with it as is.
fn coded(env: sys::napi_env, class: Class, code: &str, msg: &str) -> napi::Error {
    // SAFETY: `env` is the env of the current call, on its JS thread.
    match unsafe { new_error(env, class, code, msg) } {
        Some(v) => napi::Error::from_unknown_without_coercion(unsafe {
            Unknown::from_raw_unchecked(env, v)
        }),
        None => napi::Error::new(Status::GenericFailure, msg),
    }
}

/// The JS error for a core error: `TypeError`/`RangeError` (code `E_ARG`)
/// for `Type`/`Range`, a `QuiltError` with [`CoreError::code`] for the rest.
pub fn js_error(env: sys::napi_env, e: &CoreError) -> napi::Error {
    let class = match e {
        CoreError::Type(_) => Class::Type,
        CoreError::Range(_) => Class::Range,
        _ => Class::Coded,
    };
    coded(env, class, e.code(), &e.to_string())
}

/// A bad argument type: `TypeError` with code `E_ARG`.
pub(super) fn type_err(env: sys::napi_env, msg: impl AsRef<str>) -> napi::Error {
    coded(env, Class::Type, "E_ARG", msg.as_ref())
}

/// An argument out of range: `RangeError` with code `E_ARG`.
pub(super) fn range_err(env: sys::napi_env, msg: impl AsRef<str>) -> napi::Error {
    coded(env, Class::Range, "E_ARG", msg.as_ref())
}

/// A failed N-API call while reading an argument. When it failed because JS
/// threw (a getter, a proxy), that exception is left pending and rethrown.
pub(super) fn check(env: sys::napi_env, status: sys::napi_status, what: &str) -> Result<()> {
    if status == sys::Status::napi_ok {
        return Ok(());
    }
    // A throwing getter makes napi_get_property fail with generic_failure
    // and the exception pending: ask rather than trust the status.
    let mut pending = false;
    // SAFETY: `env` is the env of the current call, on its JS thread.
    let asked = unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if status == sys::Status::napi_pending_exception || (asked == sys::Status::napi_ok && pending) {
        Err(napi::Error::new(
            Status::PendingException,
            format!("reading {what} threw"),
        ))
    } else {
        Err(type_err(env, format!("could not read {what}")))
    }
}

/// `.js(env)?` turns a core result into a napi result with a coded error.
pub(super) trait OrJs<T> {
    fn js(self, env: &Env) -> Result<T>;
}

impl<T> OrJs<T> for crate::core::error::Result<T> {
    fn js(self, env: &Env) -> Result<T> {
        self.map_err(|e| js_error(env.raw(), &e))
    }
}

/// Register the class coded errors are built from (`QuiltError`), once.
#[napi(ts_args_type = "errorClass: new (code: string, message: string) => Error")]
pub fn set_error_class(env: Env, error_class: Unknown<'_>) -> Result<()> {
    let raw = error_class.raw();
    let mut t = 0;
    check(
        env.raw(),
        unsafe { sys::napi_typeof(env.raw(), raw, &mut t) },
        "errorClass",
    )?;
    if t != sys::ValueType::napi_function {
        return Err(type_err(env.raw(), "errorClass must be a class"));
    }
    let mut r = ptr::null_mut();
    check(
        env.raw(),
        unsafe { sys::napi_create_reference(env.raw(), raw, 1, &mut r) },
        "errorClass",
    )?;
    // The reference lives as long as the env (its teardown frees it).
    env.set_instance_data(ErrorClass(r), (), |_| {})
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

fn query(env: &Env, e: &Engine, sql: &str, params: Option<JsParams>, one: bool) -> Result<Rows> {
    let r = match &params {
        None => e.query_with(sql, Params::Positional(&[]), one),
        Some(JsParams::Positional(p)) => e.query_with(sql, Params::Positional(p), one),
        Some(JsParams::Named(n)) => e.query_with(sql, Params::Named(n), one),
    };
    r.js(env)
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
    /// The engine, or `E_CLOSED` after close().
    fn e(&mut self, env: &Env) -> Result<&mut Engine> {
        self.engine
            .as_mut()
            .ok_or_else(|| js_error(env.raw(), &CoreError::Closed))
    }
}

/// A checked option (see [`NativeOptions`]) as whole milliseconds or bytes.
fn ms(v: Option<f64>, default: u64) -> u64 {
    v.map_or(default, |x| x as u64)
}

#[napi]
impl NativeReplicator {
    /// Open or create the database at `options.path`. Every option is
    /// checked here (types: `TypeError`, ranges: `RangeError`, code `E_ARG`).
    #[napi(
        constructor,
        catch_unwind,
        ts_args_type = "options: { path: string, peerId?: number, clusterKey?: string | Uint8Array | null, heartbeatMs?: number, retentionMs?: number, maxRetentionMs?: number, maxKeptBytes?: number, maxDriftMs?: number, maxFrameBytes?: number }"
    )]
    pub fn new(env: Env, options: NativeOptions) -> Result<Self> {
        let d = Config::default();
        let cfg = Config {
            path: options.path,
            peer_id: options.peer_id,
            cluster_key: options.cluster_key,
            heartbeat_ms: ms(options.heartbeat_ms, d.heartbeat_ms),
            retention_ms: ms(options.retention_ms, d.retention_ms),
            max_drift_ms: ms(options.max_drift_ms, d.max_drift_ms),
            max_frame_bytes: ms(options.max_frame_bytes, d.max_frame_bytes as u64) as usize,
            max_retention_ms: options.max_retention_ms.map(|v| v as u64),
            max_kept_bytes: ms(options.max_kept_bytes, d.max_kept_bytes),
        };
        Ok(NativeReplicator {
            engine: Some(Engine::open(cfg).js(&env)?),
            broadcast: false,
        })
    }

    /// The heartbeat interval in ms (the JS class runs the timer).
    #[napi(getter)]
    pub fn heartbeat_ms(&mut self, env: Env) -> Result<f64> {
        Ok(self.e(&env)?.config().heartbeat_ms as f64)
    }

    /// This replicator's peer id.
    #[napi(getter)]
    pub fn peer_id(&mut self, env: Env) -> Result<u32> {
        Ok(self.e(&env)?.peer_id())
    }

    /// Bring the schema to `migrations.length`.
    #[napi(
        catch_unwind,
        ts_args_type = "migrations: Array<{ up: string, down?: string | null, renames?: Record<string, Record<string, string>> }>"
    )]
    pub fn migrate(&mut self, env: Env, migrations: JsMigrations) -> Result<MigrateResult> {
        let (from, to) = self.e(&env)?.migrate(&migrations.0).js(&env)?;
        Ok(MigrateResult { from, to })
    }

    /// Register a peer; returns the hello frames to send.
    #[napi(catch_unwind, ts_args_type = "peerId: number")]
    pub fn add_peer(&mut self, env: Env, peer_id: JsPeerId) -> Result<Vec<OutFrame>> {
        let peer_id = peer_id.0;
        let bc = self.broadcast;
        let e = self.e(&env)?;
        if peer_id == e.peer_id() {
            return Err(range_err(
                env.raw(),
                "addPeer: a replicator cannot add itself as a peer",
            ));
        }
        let out = if bc {
            e.add_peer_broadcast(peer_id)
        } else {
            e.add_peer(peer_id)
        };
        Ok(out_frames(out.js(&env)?))
    }

    /// Send patches and pings once to peer 0 (the broadcast send) from now on.
    #[napi]
    pub fn set_broadcast(&mut self, env: Env, on: bool) -> Result<()> {
        self.e(&env)?;
        self.broadcast = on;
        Ok(())
    }

    /// Per known peer, its contiguous seq of `origin`'s writes.
    #[napi]
    pub fn peer_acks(&mut self, env: Env, origin: u32) -> Result<Vec<NativePeerAck>> {
        Ok(self
            .e(&env)?
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
    #[napi(catch_unwind, ts_args_type = "peerId: number")]
    pub fn remove_peer(&mut self, env: Env, peer_id: JsPeerId) -> Result<()> {
        self.e(&env)?.remove_peer(peer_id.0).js(&env)
    }

    /// Take in a frame.
    #[napi(catch_unwind, ts_args_type = "frame: Uint8Array")]
    pub fn apply_patches(&mut self, env: Env, frame: JsBytes) -> Result<NativeApply> {
        let (r, out) = self.e(&env)?.apply_frame(&frame.0).js(&env)?;
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
    pub fn flush(&mut self, env: Env) -> Result<Vec<OutFrame>> {
        let bc = self.broadcast;
        let e = self.e(&env)?;
        Ok(out_frames(if bc {
            e.drain_broadcast()
        } else {
            e.drain_outbox()
        }))
    }

    /// One heartbeat.
    #[napi(catch_unwind)]
    pub fn tick(&mut self, env: Env) -> Result<Vec<OutFrame>> {
        let bc = self.broadcast;
        let e = self.e(&env)?;
        let out = if bc { e.tick_broadcast() } else { e.tick() };
        Ok(out_frames(out.js(&env)?))
    }

    /// Count frames handed to send (bytes) and send failures.
    #[napi]
    pub fn note_sent(&mut self, env: Env, frames: u32, bytes: f64, failures: u32) -> Result<()> {
        self.e(&env)?
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
    #[napi(
        catch_unwind,
        ts_args_type = "sql: string, params?: unknown",
        ts_return_type = "any"
    )]
    pub fn all(&mut self, env: Env, sql: JsSql, params: Option<JsParams>) -> Result<JsRows> {
        let (names, rows) = query(&env, self.e(&env)?, &sql.0, params, false)?;
        Ok(JsRows {
            names,
            rows,
            one: false,
        })
    }

    /// Read-only query, first row or undefined.
    #[napi(
        catch_unwind,
        ts_args_type = "sql: string, params?: unknown",
        ts_return_type = "any"
    )]
    pub fn get(&mut self, env: Env, sql: JsSql, params: Option<JsParams>) -> Result<JsRows> {
        let (names, rows) = query(&env, self.e(&env)?, &sql.0, params, true)?;
        Ok(JsRows {
            names,
            rows,
            one: true,
        })
    }

    /// True once `(origin, seq)` is applied here.
    #[napi]
    pub fn has(&mut self, env: Env, origin: u32, seq: f64) -> Result<bool> {
        Ok(self.e(&env)?.has(origin, seq as u64))
    }

    /// Cluster status.
    #[napi(catch_unwind)]
    pub fn status(&mut self, env: Env) -> Result<NativeStatus> {
        let e = self.e(&env)?;
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
    pub fn is_leader(&mut self, env: Env) -> Result<bool> {
        Ok(self.e(&env)?.is_leader())
    }

    /// Every live peer acknowledged our last seq.
    #[napi]
    pub fn all_acked(&mut self, env: Env) -> Result<bool> {
        Ok(self.e(&env)?.all_acked())
    }

    /// OpenMetrics text.
    #[napi(catch_unwind)]
    pub fn metrics(&mut self, env: Env) -> Result<String> {
        let e = self.e(&env)?;
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
    pub fn close(&mut self, env: Env) -> Result<()> {
        if let Some(mut e) = self.engine.take() {
            e.close().js(&env)?;
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
