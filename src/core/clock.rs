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

/// Pack `(column, stamp)` pairs given in column-name order.
fn pack_clock<'a>(entries: impl Iterator<Item = (&'a str, Stamp)>, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity * 28);
    for (name, s) in entries {
        let n = name.as_bytes();
        let len = n.len().min(255);
        out.push(len as u8);
        out.extend_from_slice(&n[..len]);
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
    while let Some((&len, rest)) = b.split_first() {
        let len = len as usize;
        if rest.len() < len + STAMP_LEN {
            break;
        }
        let name = String::from_utf8_lossy(&rest[..len]).into_owned();
        let s = &rest[len..len + STAMP_LEN];
        let at = u64::from_be_bytes(s[0..8].try_into().unwrap_or_default());
        let peer = u32::from_be_bytes(s[8..12].try_into().unwrap_or_default());
        let seq = u64::from_be_bytes(s[12..20].try_into().unwrap_or_default());
        out.insert(name, Stamp { at, peer, seq });
        b = &rest[len + STAMP_LEN..];
    }
    out
}

/// Entries of a clock BLOB as (name bytes, stamp bytes), without copying;
/// a damaged tail is ignored rather than trusted.
pub fn clock_entries(mut b: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = b.split_first() {
        let len = len as usize;
        if rest.len() < len + STAMP_LEN {
            break;
        }
        out.push((&rest[..len], &rest[len..len + STAMP_LEN]));
        b = &rest[len + STAMP_LEN..];
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
        out.push(name.len() as u8);
        out.extend_from_slice(name);
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
    for i in nulls {
        if !s.is_empty() {
            s.push(',');
        }
        s.push_str(&t.columns[i]);
    }
    Some(s)
}

/// A clock BLOB for `names` (sorted) with room for one stamp each, and the
/// offset of each stamp: local writes copy it and fill the stamps in.
pub fn clock_template(names: &[&str]) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::with_capacity(names.len() * 28);
    let mut slots = Vec::with_capacity(names.len());
    for name in names {
        let n = name.as_bytes();
        let len = n.len().min(255);
        out.push(len as u8);
        out.extend_from_slice(&n[..len]);
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
