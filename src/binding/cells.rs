//! Values that cross the FFI in bulk: a batch of rows as cells (`JsCells`,
//! one handle per cell), a batch packed into typed arrays by
//! `lib/rows.js` `pack()` (`JsPacked`: no N-API call per cell), and
//! the `Float64Array` that `run()` writes its results into (`JsOut`).

use super::values::{array, js_value, number_value, typed_array};
use super::{check, type_err};
use crate::core::batch::Batch;
use crate::core::value::Value;
use napi::bindgen_prelude::*;
use napi::sys;
use rusqlite::types::ValueRef;
use std::ptr;

/// A flat array of cell values, held as JS handles (valid for the call) and
/// converted by [`JsCells::values`], which knows the column names for errors.
pub struct JsCells {
    env: sys::napi_env,
    items: Vec<sys::napi_value>,
}

impl JsCells {
    /// Cell values row by row (`columns.len()` per row); `undefined` is a
    /// column that row does not give.
    pub fn rows(&self, columns: &[String]) -> Result<Batch> {
        let n = columns.len();
        if n == 0 || self.items.len() % n != 0 {
            return Err(type_err(
                self.env,
                "values must hold columns.length values per row",
            ));
        }
        let mut batch = Batch::with_capacity(self.items.len() / n, n, 0);
        for chunk in self.items.chunks(n) {
            for (p, (&v, col)) in chunk.iter().zip(columns).enumerate() {
                // SAFETY: the handles belong to the current native call's scope.
                if let Some(v) = unsafe { js_value(self.env, v, col)? } {
                    batch.push(p, v.to_ref());
                }
            }
            batch.end_row();
        }
        Ok(batch)
    }
}

impl TypeName for JsCells {
    fn type_name() -> &'static str {
        "unknown[]"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsCells {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let items = array(env, v, "values must be an array")?;
        Ok(JsCells { env, items })
    }
}

/// A statement's `Float64Array`: `run()`'s results are written into it,
/// and packed parameters and `get()` rows travel in it (`lib/sql.js`).
pub struct JsOut {
    data: *mut f64,
    len: usize,
}

impl JsOut {
    /// Write `values` from index 0 (as many as fit).
    pub fn set(&self, values: &[f64]) {
        self.set_at(0, values);
    }

    /// Write `values` from index `at` (as many as fit).
    fn set_at(&self, at: usize, values: &[f64]) {
        for (i, v) in values.iter().enumerate() {
            if let Some(k) = at.checked_add(i).filter(|&k| k < self.len) {
                // SAFETY: `data` points at `len` f64s of a typed array the
                // JS caller holds for the whole call; nothing runs JS
                // meanwhile; `k < len`.
                unsafe { self.data.add(k).write_unaligned(*v) };
            }
        }
    }

    /// Element `i` (`None` past the end).
    fn get(&self, i: usize) -> Option<f64> {
        // SAFETY: as in `set_at`; `i < len` is checked.
        (i < self.len).then(|| unsafe { self.data.add(i).read_unaligned() })
    }

    /// One statement's parameters packed by `lib/sql.js` (`_pack`): their
    /// count at index `at - 1`, then from index `at` a tag per parameter
    /// (those of a packed batch: null, number, text), then each one's
    /// number (a string's UTF-16 length); every string joined in `text`.
    /// In binding order. Slots past them are not read.
    pub fn params(&self, env: sys::napi_env, at: usize, text: &[u16]) -> Result<Vec<Value>> {
        let bad = || type_err(env, "packed parameters are malformed");
        let n = at
            .checked_sub(1)
            .and_then(|k| self.get(k))
            .and_then(as_index)
            .filter(|n| {
                n.checked_mul(2)
                    .and_then(|k| k.checked_add(at))
                    .is_some_and(|end| end <= self.len)
            })
            .ok_or_else(bad)?;
        let mut out = Vec::with_capacity(n);
        let mut pos = 0usize;
        for i in 0..n {
            let (Some(tag), Some(num)) = (self.get(at + i), self.get(at + n + i)) else {
                return Err(bad());
            };
            out.push(match tag {
                t if t == f64::from(NULL) => Value::Null,
                t if t == f64::from(NUMBER) => number_value(env, num, "param")?,
                t if t == f64::from(TEXT) => {
                    let end = as_index(num)
                        .and_then(|len| pos.checked_add(len))
                        .ok_or_else(bad)?;
                    let units = text.get(pos..end).ok_or_else(bad)?;
                    pos = end;
                    Value::Text(text_of(units))
                }
                _ => return Err(bad()),
            });
        }
        if pos != text.len() {
            return Err(bad());
        }
        Ok(out)
    }

    /// Pack one result row from index `at` (a tag per value, then each
    /// one's number or a string's UTF-16 length) and return its strings
    /// joined; `None` (nothing written) when a value is a blob or an
    /// integer beyond 2^53, or the array is too short.
    pub fn pack_row(&self, at: usize, row: &[Value]) -> Option<String> {
        let n = row.len();
        if at.checked_add(n.checked_mul(2)?)? > self.len {
            return None;
        }
        let mut cells = Vec::with_capacity(n);
        let mut text = String::new();
        for v in row {
            cells.push(match v {
                Value::Null => (f64::from(NULL), 0.0),
                Value::Int(i) if i.unsigned_abs() <= 9_007_199_254_740_991 => {
                    (f64::from(NUMBER), *i as f64)
                }
                Value::Real(f) => (f64::from(NUMBER), *f),
                Value::Text(s) => {
                    text.push_str(s);
                    (f64::from(TEXT), s.encode_utf16().count() as f64)
                }
                Value::Int(_) | Value::Blob(_) => return None,
            });
        }
        for (i, &(tag, num)) in cells.iter().enumerate() {
            self.set_at(at + i, &[tag]);
            self.set_at(at + n + i, &[num]);
        }
        Some(text)
    }
}

/// UTF-16 code units as a `String` (a lone surrogate becomes U+FFFD, as
/// in N-API's UTF-8 strings); ASCII in one pass.
fn text_of(units: &[u16]) -> String {
    if units.iter().all(|&u| u < 0x80) {
        units.iter().map(|&u| char::from(u as u8)).collect()
    } else {
        String::from_utf16_lossy(units)
    }
}

/// A count or a length packed in a `Float64Array`, as an index.
fn as_index(num: f64) -> Option<usize> {
    (num >= 0.0 && num.fract() == 0.0 && num <= usize::MAX as f64).then_some(num as usize)
}

/// A string's UTF-16 code units (packed parameters' joined text).
pub struct JsUtf16(pub Vec<u16>);

impl TypeName for JsUtf16 {
    fn type_name() -> &'static str {
        "string"
    }
    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl FromNapiValue for JsUtf16 {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        utf16(env, v)?
            .map(JsUtf16)
            .ok_or_else(|| type_err(env, "text must be a string"))
    }
}

impl TypeName for JsOut {
    fn type_name() -> &'static str {
        "Float64Array"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl FromNapiValue for JsOut {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        match typed_array(env, v)? {
            Some((ty, data, len))
                if ty == sys::TypedarrayType::float64_array && !data.is_null() =>
            {
                Ok(JsOut {
                    data: data.cast(),
                    len,
                })
            }
            _ => Err(type_err(env, "out must be a Float64Array")),
        }
    }
}

/// Tags of a packed batch, one per cell (`lib/rows.js` `pack()`).
const NOT_GIVEN: u8 = 0;
const NULL: u8 = 1;
/// A number (not NaN) in `nums`.
const NUMBER: u8 = 2;
/// A string: its UTF-16 length in `nums`, its code units next in `text`.
const TEXT: u8 = 3;
/// Anything else, next in `others`, converted one by one as a lone value.
const OTHER: u8 = 4;

/// Rows packed as `[tags, nums, text, others]`: `tags` a `Uint8Array` and
/// `nums` a `Float64Array` with one entry per cell, row by row; `text` every
/// string cell joined; `others` an array of the remaining cells. Two typed
/// arrays and one string cross the FFI instead of a handle per cell.
pub struct JsPacked {
    env: sys::napi_env,
    tags: Vec<u8>,
    nums: Vec<f64>,
    text: Vec<u16>,
    others: Vec<sys::napi_value>,
}

impl JsPacked {
    /// Cell values row by row (`columns.len()` per row); a column not
    /// given is left out of its row.
    pub fn rows(&self, columns: &[String]) -> Result<Batch> {
        let env = self.env;
        let n = columns.len();
        let bad = || type_err(env, "a packed batch is malformed");
        if n == 0 || self.tags.len() % n != 0 || self.nums.len() != self.tags.len() {
            return Err(bad());
        }
        let mut batch = Batch::with_capacity(self.tags.len() / n, n, self.text.len());
        let (mut at, mut other) = (0usize, 0usize);
        for (k, (&tag, &num)) in self.tags.iter().zip(&self.nums).enumerate() {
            let p = k % n;
            let col = &columns[p];
            match tag {
                NOT_GIVEN => {}
                NULL => batch.push(p, ValueRef::Null),
                NUMBER => batch.push(p, number_value(env, num, col)?.to_ref()),
                TEXT => {
                    let end = as_index(num)
                        .and_then(|len| at.checked_add(len))
                        .ok_or_else(bad)?;
                    let units = self.text.get(at..end).ok_or_else(bad)?;
                    at = end;
                    batch.push_utf16(p, units);
                }
                OTHER => {
                    let v = *self.others.get(other).ok_or_else(bad)?;
                    other += 1;
                    // SAFETY: the handles belong to the current native call's scope.
                    if let Some(v) = unsafe { js_value(env, v, col)? } {
                        batch.push(p, v.to_ref());
                    }
                }
                _ => return Err(bad()),
            }
            if p == n - 1 {
                batch.end_row();
            }
        }
        if at != self.text.len() || other != self.others.len() {
            return Err(bad());
        }
        Ok(batch)
    }
}

impl TypeName for JsPacked {
    fn type_name() -> &'static str {
        "[Uint8Array, Float64Array, string, unknown[]]"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

/// A typed array's elements, copied; `None` when `v` is not one of type `ty`.
unsafe fn typed<T: Copy>(
    env: sys::napi_env,
    v: sys::napi_value,
    ty: sys::napi_typedarray_type,
) -> Result<Option<Vec<T>>> {
    Ok(match typed_array(env, v)? {
        Some((t, _, 0)) if t == ty => Some(Vec::new()),
        Some((t, data, len)) if t == ty && !data.is_null() => {
            // Copied unaligned: the buffer's offset need not align to T.
            let p = data as *const T;
            Some((0..len).map(|i| p.add(i).read_unaligned()).collect())
        }
        _ => None,
    })
}

/// A string's UTF-16 code units.
unsafe fn utf16(env: sys::napi_env, v: sys::napi_value) -> Result<Option<Vec<u16>>> {
    let mut t = 0;
    check(env, sys::napi_typeof(env, v, &mut t), "text")?;
    if t != sys::ValueType::napi_string {
        return Ok(None);
    }
    let mut len = 0usize;
    check(
        env,
        sys::napi_get_value_string_utf16(env, v, ptr::null_mut(), 0, &mut len),
        "text",
    )?;
    if len == 0 {
        return Ok(Some(Vec::new()));
    }
    let mut buf = vec![0u16; len + 1];
    let mut written = 0usize;
    check(
        env,
        sys::napi_get_value_string_utf16(env, v, buf.as_mut_ptr(), len + 1, &mut written),
        "text",
    )?;
    buf.truncate(written);
    Ok(Some(buf))
}

impl FromNapiValue for JsPacked {
    unsafe fn from_napi_value(env: sys::napi_env, v: sys::napi_value) -> Result<Self> {
        let bad = || type_err(env, "a packed batch is malformed");
        let parts = array(env, v, "a packed batch must be an array")?;
        let [tags, nums, text, others] = parts[..] else {
            return Err(bad());
        };
        Ok(JsPacked {
            env,
            tags: typed(env, tags, sys::TypedarrayType::uint8_array)?.ok_or_else(bad)?,
            nums: typed(env, nums, sys::TypedarrayType::float64_array)?.ok_or_else(bad)?,
            text: utf16(env, text)?.ok_or_else(bad)?,
            others: array(env, others, "a packed batch is malformed")?,
        })
    }
}
