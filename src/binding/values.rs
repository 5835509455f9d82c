//! Conversion between JS values and cell values, with raw N-API calls: a
//! row object to `(column, value)` pairs, query parameters, frame bytes, and
//! query results back to row objects. Wrong types become `TypeError`s.

use super::{check, range_err, type_err};
use crate::core::value::Value;
use napi::bindgen_prelude::*;
use napi::sys;
use std::ptr;

unsafe fn js_string(env: sys::napi_env, v: sys::napi_value) -> Result<String> {
    let mut len = 0usize;
    check(
        env,
        sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len),
        "string",
    )?;
    let mut buf = vec![0u8; len + 1];
    let mut written = 0usize;
    check(
        env,
        sys::napi_get_value_string_utf8(env, v, buf.as_mut_ptr().cast(), len + 1, &mut written),
        "string",
    )?;
    buf.truncate(written);
    String::from_utf8(buf).map_err(|_| type_err(env, "string is not valid UTF-8"))
}

/// The bytes of a Buffer or Uint8Array; `None` for anything else (a
/// DataView too, which `napi_is_buffer` would take).
pub(super) unsafe fn js_u8(env: sys::napi_env, v: sys::napi_value) -> Result<Option<Vec<u8>>> {
    let mut dv = false;
    check(env, sys::napi_is_dataview(env, v, &mut dv), "value")?;
    if dv {
        return Ok(None);
    }
    match js_bytes(env, v) {
        Ok(b) => Ok(b),
        // Another typed array: not bytes.
        Err(_) => Ok(None),
    }
}

/// A typed array's element type, data pointer and length in elements;
/// `None` when `v` is not a typed array.
pub(super) unsafe fn typed_array(
    env: sys::napi_env,
    v: sys::napi_value,
) -> Result<Option<(sys::napi_typedarray_type, *mut std::ffi::c_void, usize)>> {
    let mut is_ta = false;
    check(env, sys::napi_is_typedarray(env, v, &mut is_ta), "value")?;
    if !is_ta {
        return Ok(None);
    }
    let mut ty = 0;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    let mut ab = ptr::null_mut();
    let mut off = 0usize;
    check(
        env,
        sys::napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off),
        "typed array",
    )?;
    Ok(Some((ty, data, len)))
}

pub(super) unsafe fn js_bytes(env: sys::napi_env, v: sys::napi_value) -> Result<Option<Vec<u8>>> {
    if let Some((ty, data, len)) = typed_array(env, v)? {
        if ty != sys::TypedarrayType::uint8_array {
            return Err(type_err(
                env,
                "binary values must be a Buffer or Uint8Array",
            ));
        }
        if len == 0 || data.is_null() {
            return Ok(Some(Vec::new()));
        }
        return Ok(Some(
            std::slice::from_raw_parts(data as *const u8, len).to_vec(),
        ));
    }
    let mut is_buf = false;
    check(env, sys::napi_is_buffer(env, v, &mut is_buf), "value")?;
    if is_buf {
        let mut data = ptr::null_mut();
        let mut len = 0usize;
        check(
            env,
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
pub(super) unsafe fn js_value(
    env: sys::napi_env,
    v: sys::napi_value,
    col: &str,
) -> Result<Option<Value>> {
    let mut t = 0;
    check(env, sys::napi_typeof(env, v, &mut t), "value")?;
    Ok(Some(match t {
        sys::ValueType::napi_undefined => return Ok(None),
        sys::ValueType::napi_null => Value::Null,
        sys::ValueType::napi_boolean => {
            let mut b = false;
            check(env, sys::napi_get_value_bool(env, v, &mut b), "boolean")?;
            Value::Int(b as i64)
        }
        sys::ValueType::napi_number => {
            let mut f = 0f64;
            check(env, sys::napi_get_value_double(env, v, &mut f), "number")?;
            number_value(env, f, col)?
        }
        sys::ValueType::napi_string => Value::Text(js_string(env, v)?),
        sys::ValueType::napi_bigint => {
            let mut i = 0i64;
            let mut lossless = false;
            check(env, sys::napi_get_value_bigint_int64(env, v, &mut i, &mut lossless), "bigint")?;
            if !lossless {
                return Err(range_err(env, format!("column {col}: bigint does not fit 64 bits")));
            }
            Value::Int(i)
        }
        sys::ValueType::napi_object => match js_bytes(env, v)? {
            Some(b) => Value::Blob(b),
            None => {
                return Err(type_err(env, format!(
                    "column {col}: objects cannot be stored; use null, a number, bigint, string, boolean or Buffer"
                )))
            }
        },
        _ => return Err(type_err(env, format!("column {col}: unsupported value type"))),
    }))
}

/// A JS number as a cell: an integer when it is one (and safe), else a
/// REAL; NaN is refused.
pub(super) fn number_value(env: sys::napi_env, f: f64, col: &str) -> Result<Value> {
    if f.is_nan() {
        return Err(range_err(
            env,
            format!("column {col}: NaN cannot be stored"),
        ));
    }
    Ok(if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_991.0 {
        Value::Int(f as i64)
    } else {
        Value::Real(f)
    })
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
        Ok(JsRow(row(env, v, "a row")?))
    }
}

/// The primary key given to `delete`: a row object, named `pk` in errors.
pub struct JsKey(pub Vec<(String, Value)>);

impl TypeName for JsKey {
    fn type_name() -> &'static str {
        "Record<string, unknown>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsKey {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        Ok(JsKey(row(env, v, "pk")?))
    }
}

/// The rows of `upsertMany`: an array of row objects.
pub struct JsRowList(pub Vec<Vec<(String, Value)>>);

impl TypeName for JsRowList {
    fn type_name() -> &'static str {
        "Array<Record<string, unknown>>"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsRowList {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let items = array(env, v, "upsertMany(table, rows): rows must be an array")?;
        let mut out = Vec::with_capacity(items.len());
        for (i, r) in items.into_iter().enumerate() {
            out.push(row(env, r, &format!("rows[{i}]"))?);
        }
        Ok(JsRowList(out))
    }
}

/// The JS type of `v`.
pub(super) unsafe fn type_of(
    env: sys::napi_env,
    v: sys::napi_value,
) -> Result<sys::napi_valuetype> {
    let mut t = 0;
    check(env, sys::napi_typeof(env, v, &mut t), "value")?;
    Ok(t)
}

/// True for an object that is not an array, Buffer, typed array or DataView.
unsafe fn is_plain_object(env: sys::napi_env, v: sys::napi_value) -> Result<bool> {
    if type_of(env, v)? != sys::ValueType::napi_object {
        return Ok(false);
    }
    let (mut arr, mut ta, mut buf, mut dv) = (false, false, false, false);
    check(env, sys::napi_is_array(env, v, &mut arr), "value")?;
    check(env, sys::napi_is_typedarray(env, v, &mut ta), "value")?;
    check(env, sys::napi_is_buffer(env, v, &mut buf), "value")?;
    check(env, sys::napi_is_dataview(env, v, &mut dv), "value")?;
    Ok(!(arr || ta || buf || dv))
}

/// The elements of a JS array; `TypeError(msg)` when `v` is not one.
pub(super) unsafe fn array(
    env: sys::napi_env,
    v: sys::napi_value,
    msg: &str,
) -> Result<Vec<sys::napi_value>> {
    let mut is_arr = false;
    check(env, sys::napi_is_array(env, v, &mut is_arr), "array")?;
    if !is_arr {
        return Err(type_err(env, msg));
    }
    let mut n = 0u32;
    check(env, sys::napi_get_array_length(env, v, &mut n), "array")?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut e = ptr::null_mut();
        check(
            env,
            sys::napi_get_element(env, v, i, &mut e),
            "array element",
        )?;
        out.push(e);
    }
    Ok(out)
}

/// Own enumerable string keys of an object, with their values.
pub(super) unsafe fn entries(
    env: sys::napi_env,
    v: sys::napi_value,
) -> Result<Vec<(String, sys::napi_value)>> {
    let mut keys = ptr::null_mut();
    check(
        env,
        sys::napi_get_all_property_names(
            env,
            v,
            sys::KeyCollectionMode::own_only,
            sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
            sys::KeyConversion::numbers_to_strings,
            &mut keys,
        ),
        "keys",
    )?;
    let mut n = 0u32;
    check(env, sys::napi_get_array_length(env, keys, &mut n), "keys")?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut k = ptr::null_mut();
        check(env, sys::napi_get_element(env, keys, i, &mut k), "key")?;
        let name = js_string(env, k)?;
        let mut val = ptr::null_mut();
        check(env, sys::napi_get_property(env, v, k, &mut val), "property")?;
        out.push((name, val));
    }
    Ok(out)
}

/// A row object: own enumerable string keys, `undefined` values skipped.
/// `what` names it in the error ("a row", "rows[3]", "pk").
unsafe fn row(env: sys::napi_env, v: sys::napi_value, what: &str) -> Result<Vec<(String, Value)>> {
    if !is_plain_object(env, v)? {
        return Err(type_err(
            env,
            format!("{what} must be a plain object of column values"),
        ));
    }
    let mut out = Vec::new();
    for (name, val) in entries(env, v)? {
        if let Some(value) = js_value(env, val, &name)? {
            out.push((name, value));
        }
    }
    Ok(out)
}

/// `obj[name]`; `None` when it is `undefined`.
pub(super) unsafe fn prop(
    env: sys::napi_env,
    obj: sys::napi_value,
    name: &std::ffi::CStr,
) -> Result<Option<sys::napi_value>> {
    let mut v = ptr::null_mut();
    check(
        env,
        sys::napi_get_named_property(env, obj, name.as_ptr(), &mut v),
        "property",
    )?;
    Ok((type_of(env, v)? != sys::ValueType::napi_undefined).then_some(v))
}

/// `obj[name]`; `None` when it is `undefined` or `null`.
pub(super) unsafe fn prop_set(
    env: sys::napi_env,
    obj: sys::napi_value,
    name: &std::ffi::CStr,
) -> Result<Option<sys::napi_value>> {
    match prop(env, obj, name)? {
        Some(v) if type_of(env, v)? == sys::ValueType::napi_null => Ok(None),
        other => Ok(other),
    }
}

/// A string value; `None` when `v` is not a string.
pub(super) unsafe fn string(env: sys::napi_env, v: sys::napi_value) -> Result<Option<String>> {
    if type_of(env, v)? != sys::ValueType::napi_string {
        return Ok(None);
    }
    js_string(env, v).map(Some)
}

/// A number value; `None` when `v` is not a number.
pub(super) unsafe fn number(env: sys::napi_env, v: sys::napi_value) -> Result<Option<f64>> {
    if type_of(env, v)? != sys::ValueType::napi_number {
        return Ok(None);
    }
    let mut f = 0f64;
    check(env, sys::napi_get_value_double(env, v, &mut f), "number")?;
    Ok(Some(f))
}

/// A peer id: an integer (else `TypeError`) in `1..=u32::MAX` (else `RangeError`).
pub(super) unsafe fn peer_id(env: sys::napi_env, v: sys::napi_value, what: &str) -> Result<u32> {
    match number(env, v)? {
        Some(f) if f.is_finite() && f.fract() == 0.0 => {
            if f < 1.0 || f > u32::MAX as f64 {
                Err(range_err(env, format!("{what} must be a u32 > 0")))
            } else {
                Ok(f as u32)
            }
        }
        _ => Err(type_err(env, format!("{what} must be an integer"))),
    }
}

/// A peer id argument (`addPeer`, `removePeer`).
pub struct JsPeerId(pub u32);

impl TypeName for JsPeerId {
    fn type_name() -> &'static str {
        "number"
    }
    fn value_type() -> ValueType {
        ValueType::Number
    }
}

impl FromNapiValue for JsPeerId {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        peer_id(env, v, "peerId").map(JsPeerId)
    }
}

/// A table name: a non-empty string (whether it exists is the core's call).
pub struct JsTable(pub String);

impl TypeName for JsTable {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl FromNapiValue for JsTable {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        match string(env, v)? {
            Some(s) if !s.is_empty() => Ok(JsTable(s)),
            _ => Err(type_err(env, "table must be a non-empty string")),
        }
    }
}

/// The SQL text of `all`/`get`.
pub struct JsSql(pub String);

impl TypeName for JsSql {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl FromNapiValue for JsSql {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        string(env, v)?
            .map(JsSql)
            .ok_or_else(|| type_err(env, "sql must be a string"))
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
        check(env, sys::napi_is_array(env, v, &mut is_arr), "params")?;
        if !is_arr {
            let mut t = 0;
            check(env, sys::napi_typeof(env, v, &mut t), "params")?;
            if t == sys::ValueType::napi_object && js_bytes(env, v)?.is_none() {
                return Ok(JsParams::Named(row(env, v, "named params")?));
            }
            return Ok(JsParams::Positional(
                js_value(env, v, "param")?.into_iter().collect(),
            ));
        }
        let mut n = 0u32;
        check(env, sys::napi_get_array_length(env, v, &mut n), "params")?;
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut e = ptr::null_mut();
            check(env, sys::napi_get_element(env, v, i, &mut e), "param")?;
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
        check(env, sys::napi_typeof(env, v, &mut t), "frame")?;
        if t == sys::ValueType::napi_object {
            if let Some(b) = js_u8(env, v)? {
                return Ok(JsBytes(b));
            }
        }
        Err(type_err(env, "a frame must be a Buffer or Uint8Array"))
    }
}

pub(super) unsafe fn value_to_js(env: sys::napi_env, v: &Value) -> Result<sys::napi_value> {
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
    check(env, status, "result value")?;
    Ok(out)
}

/// Query results: row objects keyed by column name.
pub struct JsRows {
    pub names: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub one: bool,
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
                env,
                sys::napi_create_string_utf8(env, n.as_ptr().cast(), n.len() as isize, &mut k),
                "column name",
            )?;
            keys.push(k);
        }
        let make_row = |row: &Vec<Value>| -> Result<sys::napi_value> {
            let mut o = ptr::null_mut();
            check(env, sys::napi_create_object(env, &mut o), "row")?;
            for (k, v) in keys.iter().zip(row) {
                check(
                    env,
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
                    check(env, sys::napi_get_undefined(env, &mut u), "undefined")?;
                    Ok(u)
                }
            };
        }
        let mut arr = ptr::null_mut();
        check(
            env,
            sys::napi_create_array_with_length(env, val.rows.len(), &mut arr),
            "rows",
        )?;
        for (i, r) in val.rows.iter().enumerate() {
            check(
                env,
                sys::napi_set_element(env, arr, i as u32, make_row(r)?),
                "rows",
            )?;
        }
        Ok(arr)
    }
}
