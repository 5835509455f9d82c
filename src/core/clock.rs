//! The winning-stamp clock of a row and the explicit-NULL marker of a
//! patch: encodings and the merge, as plain functions (no SQL).

use crate::core::error::Result;
use crate::core::schema::TableInfo;
use crate::core::value::Value;
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// The order of writes: HLC first, then origin peer id, then its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    pub at: u64,
    pub peer: u32,
    pub seq: u64,
}

pub const STAMP_LEN: usize = 20;

/// Append a column name: one length byte below 255, else 255 and a
/// big-endian u16 length (names up to 65535 bytes; SQLite has no limit
/// that small, the wire caps names at `protocol::MAX_NAME_LEN`).
fn put_name(out: &mut Vec<u8>, n: &[u8]) {
    let n = &n[..n.len().min(u16::MAX as usize)];
    if n.len() < 255 {
        out.push(n.len() as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&(n.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(n);
}

/// Split one `(name, stamp)` entry off a clock BLOB; `None` at the end or
/// on a damaged tail (never trusted).
fn take_entry(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (&len, rest) = b.split_first()?;
    let (len, rest) = if len == 255 {
        let l = rest.get(..2)?;
        (u16::from_be_bytes([l[0], l[1]]) as usize, &rest[2..])
    } else {
        (len as usize, rest)
    };
    if rest.len() < len + STAMP_LEN {
        return None;
    }
    Some((
        &rest[..len],
        &rest[len..len + STAMP_LEN],
        &rest[len + STAMP_LEN..],
    ))
}

/// Pack `(column, stamp)` pairs given in column-name order.
fn pack_clock<'a>(entries: impl Iterator<Item = (&'a str, Stamp)>, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity * 28);
    for (name, s) in entries {
        put_name(&mut out, name.as_bytes());
        out.extend_from_slice(&s.at.to_be_bytes());
        out.extend_from_slice(&s.peer.to_be_bytes());
        out.extend_from_slice(&s.seq.to_be_bytes());
    }
    out
}

/// Pack `(column, stamp)` pairs, sorted by column name.
pub fn encode_clock(entries: &BTreeMap<String, Stamp>) -> Vec<u8> {
    pack_clock(entries.iter().map(|(n, s)| (n.as_str(), *s)), entries.len())
}

/// Unpack a clock BLOB; a damaged tail is ignored rather than trusted.
pub fn decode_clock(mut b: &[u8]) -> BTreeMap<String, Stamp> {
    let mut out = BTreeMap::new();
    while let Some((name, s, rest)) = take_entry(b) {
        let name = String::from_utf8_lossy(name).into_owned();
        let at = u64::from_be_bytes(s[0..8].try_into().unwrap_or_default());
        let peer = u32::from_be_bytes(s[8..12].try_into().unwrap_or_default());
        let seq = u64::from_be_bytes(s[12..20].try_into().unwrap_or_default());
        out.insert(name, Stamp { at, peer, seq });
        b = rest;
    }
    out
}

/// Entries of a clock BLOB as (name bytes, stamp bytes), without copying;
/// a damaged tail is ignored rather than trusted.
pub fn clock_entries(mut b: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some((name, stamp, rest)) = take_entry(b) {
        out.push((name, stamp));
        b = rest;
    }
    out
}

/// Union of two clocks keeping the greater stamp per column. Both are
/// sorted by name; stamps compare as big-endian bytes (at, peer, seq), so
/// the merge works on the bytes as they are.
pub fn merge_clock(old: &[u8], new: &[u8]) -> Vec<u8> {
    let (a, b) = (clock_entries(old), clock_entries(new));
    let mut out = Vec::with_capacity(old.len().max(new.len()) + new.len());
    let (mut i, mut j) = (0, 0);
    let mut push = |name: &[u8], stamp: &[u8]| {
        put_name(&mut out, name);
        out.extend_from_slice(stamp);
    };
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                push(x.0, if y.1 > x.1 { y.1 } else { x.1 });
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                push(x.0, x.1);
                i += 1;
            }
            (Some(_), Some(y)) => {
                push(y.0, y.1);
                j += 1;
            }
            (Some(x), None) => {
                push(x.0, x.1);
                i += 1;
            }
            (None, Some(y)) => {
                push(y.0, y.1);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// Register the SQL helpers the write path uses.
pub fn register_functions(conn: &Connection) -> Result<()> {
    conn.create_scalar_function(
        "quilt_clock_merge",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let old: Vec<u8> = ctx.get::<Option<Vec<u8>>>(0)?.unwrap_or_default();
            let new: Vec<u8> = ctx.get::<Option<Vec<u8>>>(1)?.unwrap_or_default();
            Ok(merge_clock(&old, &new))
        },
    )?;
    Ok(())
}

/// The `_quiltNulls` marker of a patch: the columns it sets to NULL, in
/// table order (so it is the same whatever order the writer named them in).
pub fn nulls_marker(t: &TableInfo, cols: &[usize], values: &[Value]) -> Option<String> {
    let mut nulls: Vec<usize> = cols
        .iter()
        .zip(values)
        .filter(|(_, v)| v.is_null())
        .map(|(&i, _)| i)
        .collect();
    if nulls.is_empty() {
        return None;
    }
    nulls.sort_unstable();
    let mut s = String::new();
    // Names joined by commas (replic-era files read the same); when a name
    // holds a comma, NUL-separated after a 0x01 tag (no name holds a NUL).
    if nulls.iter().any(|&i| t.columns[i].contains(',')) {
        s.push_str(NULLS_TAG);
        for i in nulls {
            s.push('\0');
            s.push_str(&t.columns[i]);
        }
        s.push('\0');
        return Some(s);
    }
    for i in nulls {
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(&t.columns[i]);
    }
    Some(s)
}

/// First character of a NUL-separated explicit-NULL marker.
pub const NULLS_TAG: &str = "\u{1}";

/// The column names an explicit-NULL marker lists.
pub fn parse_nulls(marker: &str) -> Vec<&str> {
    match marker.strip_prefix(NULLS_TAG) {
        Some(rest) => rest.split('\0').filter(|n| !n.is_empty()).collect(),
        None => marker.split(',').collect(),
    }
}

/// A clock BLOB for `names` (sorted) with room for one stamp each, and the
/// offset of each stamp: local writes copy it and fill the stamps in.
pub fn clock_template(names: &[&str]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(names.len() * 28);
    let mut slots = Vec::with_capacity(names.len());
    for name in names {
        put_name(&mut out, name.as_bytes());
        slots.push(out.len());
        out.extend_from_slice(&[0u8; STAMP_LEN]);
    }
    (out, slots)
}

/// Write `stamp` into every slot of a clock template copy.
pub fn fill_clock(buf: &mut [u8], slots: &[usize], stamp: Stamp) {
    for &o in slots {
        if let Some(s) = buf.get_mut(o..o + STAMP_LEN) {
            s[0..8].copy_from_slice(&stamp.at.to_be_bytes());
            s[8..12].copy_from_slice(&stamp.peer.to_be_bytes());
            s[12..20].copy_from_slice(&stamp.seq.to_be_bytes());
        }
    }
}

pub fn stamp_bytes(s: Stamp) -> [u8; STAMP_LEN] {
    let mut b = [0u8; STAMP_LEN];
    b[0..8].copy_from_slice(&s.at.to_be_bytes());
    b[8..12].copy_from_slice(&s.peer.to_be_bytes());
    b[12..20].copy_from_slice(&s.seq.to_be_bytes());
    b
}
