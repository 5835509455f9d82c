//! The arguments of the native constructor, `migrate` and
//! `Replicator.restore`: option objects and lists read with raw N-API calls
//! and checked here, once (wrong types become `TypeError`, out-of-range
//! numbers `RangeError`). Cell values and rows are in values.rs.

use super::values::{array, entries, js_u8, number, peer_id, prop, prop_set, string, type_of};
use super::{check, range_err, type_err};
use crate::core::engine::Migration;
use napi::bindgen_prelude::*;
use napi::sys;

/// A duration or size option: a number (else `TypeError`; NaN included),
/// finite and >= 0 (else `RangeError`).
unsafe fn ms_opt(env: sys::napi_env, obj: sys::napi_value, name: &str) -> Result<Option<f64>> {
    let key = std::ffi::CString::new(name).map_err(|_| type_err(env, "bad option name"))?;
    let Some(v) = prop(env, obj, &key)? else {
        return Ok(None);
    };
    match number(env, v)? {
        Some(f) if !f.is_nan() => {
            if f.is_finite() && f >= 0.0 {
                Ok(Some(f))
            } else {
                Err(range_err(
                    env,
                    format!("options.{name} must be a finite number >= 0"),
                ))
            }
        }
        _ => Err(type_err(env, format!("options.{name} must be a number"))),
    }
}

/// Options of the native constructor, checked here (and only here): the JS
/// class passes the user's options object through.
pub struct NativeOptions {
    pub path: String,
    pub peer_id: Option<u32>,
    pub cluster_key: Option<Vec<u8>>,
    pub heartbeat_ms: Option<f64>,
    pub retention_ms: Option<f64>,
    /// Hard cap: past this age a patch is purged even if a peer lacks it.
    pub max_retention_ms: Option<f64>,
    /// Cap in bytes on kept patches (a quarter per origin).
    pub max_kept_bytes: Option<f64>,
    pub max_drift_ms: Option<f64>,
    pub max_frame_bytes: Option<f64>,
}

impl TypeName for NativeOptions {
    fn type_name() -> &'static str {
        "NativeOptions"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for NativeOptions {
    unsafe fn from_napi_value(env: sys::napi_env, o: sys::napi_value) -> Result<Self> {
        if type_of(env, o)? != sys::ValueType::napi_object {
            return Err(type_err(
                env,
                "new Replicator(options): options must be an object",
            ));
        }
        // An empty path is refused by the core (Engine::open).
        let path = match prop(env, o, c"path")? {
            Some(v) => string(env, v)?,
            None => None,
        }
        .ok_or_else(|| type_err(env, "options.path must be a non-empty string"))?;
        let peer_id = match prop(env, o, c"peerId")? {
            Some(v) => Some(peer_id(env, v, "options.peerId")?),
            None => None,
        };
        let cluster_key = match prop_set(env, o, c"clusterKey")? {
            None => None,
            Some(v) => {
                let key = match string(env, v)? {
                    Some(s) => s.into_bytes(),
                    None => {
                        let bin = if type_of(env, v)? == sys::ValueType::napi_object {
                            js_u8(env, v)?
                        } else {
                            None
                        };
                        bin.ok_or_else(|| {
                            type_err(env, "options.clusterKey must be a string or Buffer")
                        })?
                    }
                };
                if key.is_empty() {
                    return Err(range_err(env, "options.clusterKey must not be empty"));
                }
                Some(key)
            }
        };
        let max_frame_bytes = ms_opt(env, o, "maxFrameBytes")?;
        if matches!(max_frame_bytes, Some(f) if f < 256.0) {
            return Err(range_err(env, "options.maxFrameBytes must be at least 256"));
        }
        Ok(NativeOptions {
            path,
            peer_id,
            cluster_key,
            heartbeat_ms: ms_opt(env, o, "heartbeatMs")?,
            retention_ms: ms_opt(env, o, "retentionMs")?,
            max_retention_ms: ms_opt(env, o, "maxRetentionMs")?,
            max_kept_bytes: ms_opt(env, o, "maxKeptBytes")?,
            max_drift_ms: ms_opt(env, o, "maxDriftMs")?,
            max_frame_bytes,
        })
    }
}

/// The migrations list of `migrate`.
pub struct JsMigrations(pub Vec<Migration>);

impl TypeName for JsMigrations {
    fn type_name() -> &'static str {
        "Array<{ up: string, down?: string, renames?: Record<string, Record<string, string>> }>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsMigrations {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let items = array(env, v, "migrate(migrations): migrations must be an array")?;
        let mut out = Vec::with_capacity(items.len());
        for (i, m) in items.into_iter().enumerate() {
            let shape = || {
                type_err(
                    env,
                    format!("migrations[{i}] must be {{ up: string, down?: string }}"),
                )
            };
            if type_of(env, m)? != sys::ValueType::napi_object {
                return Err(shape());
            }
            let up = match prop(env, m, c"up")? {
                Some(u) => string(env, u)?,
                None => None,
            }
            .ok_or_else(shape)?;
            let down = match prop_set(env, m, c"down")? {
                None => None,
                Some(d) => Some(string(env, d)?.ok_or_else(|| {
                    type_err(env, format!("migrations[{i}].down must be a string"))
                })?),
            };
            let mut renames = Vec::new();
            if let Some(r) = prop(env, m, c"renames")? {
                let bad = || {
                    type_err(
                        env,
                        format!("migrations[{i}].renames must be {{ table: {{ old: 'new' }} }}"),
                    )
                };
                if type_of(env, r)? != sys::ValueType::napi_object {
                    return Err(bad());
                }
                for (table, cols) in entries(env, r)? {
                    if type_of(env, cols)? != sys::ValueType::napi_object {
                        return Err(bad());
                    }
                    for (old, new) in entries(env, cols)? {
                        let new = string(env, new)?.ok_or_else(bad)?;
                        renames.push((table.clone(), old, new));
                    }
                }
            }
            out.push(Migration { up, down, renames });
        }
        Ok(JsMigrations(out))
    }
}

/// The options of `Replicator.restore` that the native side uses:
/// `{ from, path, overwrite?, snapshot? | id? }` (others are read in JS).
pub struct RestoreArgs {
    pub from: String,
    pub path: String,
    pub overwrite: bool,
    pub name: Option<String>,
}

impl TypeName for RestoreArgs {
    fn type_name() -> &'static str {
        "{ from: string, path: string, overwrite?: boolean, snapshot?: string, id?: string }"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for RestoreArgs {
    unsafe fn from_napi_value(env: sys::napi_env, o: sys::napi_value) -> Result<Self> {
        if type_of(env, o)? != sys::ValueType::napi_object {
            return Err(type_err(
                env,
                "Replicator.restore(options): options must be an object",
            ));
        }
        let text = |name: &std::ffi::CStr| -> Result<Option<String>> {
            match prop(env, o, name)? {
                Some(v) => string(env, v),
                None => Ok(None),
            }
        };
        let from = text(c"from")?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| type_err(env, "restore: from must be a snapshot url"))?;
        let path = text(c"path")?
            .filter(|s| !s.is_empty() && s != ":memory:")
            .ok_or_else(|| type_err(env, "restore: path must be a file path"))?;
        let overwrite = match prop(env, o, c"overwrite")? {
            None => false,
            Some(v) if type_of(env, v)? == sys::ValueType::napi_boolean => {
                let mut b = false;
                check(env, sys::napi_get_value_bool(env, v, &mut b), "overwrite")?;
                b
            }
            Some(_) => return Err(type_err(env, "restore: overwrite must be a boolean")),
        };
        let name = match prop_set(env, o, c"snapshot")? {
            Some(v) => Some(v),
            None => prop_set(env, o, c"id")?,
        };
        let name =
            match name {
                None => None,
                Some(v) => Some(string(env, v)?.ok_or_else(|| {
                    type_err(env, "restore: snapshot must be a snapshot id string")
                })?),
            };
        Ok(RestoreArgs {
            from,
            path,
            overwrite,
            name,
        })
    }
}
