//! Kept patches: whole patches (or the parts of them) the local schema
//! cannot hold yet, in `_quilt_kept`, with the sender's schema version, so
//! nothing is lost between schema versions. Read in pages, never whole.

use crate::core::error::Result;
use crate::core::protocol::Patch;
use crate::core::value::Value;
use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::sync::Arc;

/// A patch (or part of one) kept whole because the local schema cannot hold
/// it yet: unknown table, unknown column, or a column a down migration
/// dropped. Names are as of `schema_version`.
#[derive(Debug, Clone)]
pub struct Kept {
    pub schema_version: u32,
    pub patch: Patch,
}

/// Keep a patch whole (idempotent on `(origin, seq)`). Returns the bytes
/// stored (0 when it was already kept).
pub fn insert_kept(conn: &Connection, p: &Patch, schema_version: u32) -> Result<usize> {
    let payload = rmp_serde::to_vec(&(p.columns.as_ref(), &p.values)).unwrap_or_default();
    let n = payload.len();
    let changed = conn.prepare_cached(
        "INSERT OR IGNORE INTO _quilt_kept(origin,seq,at,tbl,schema_version,payload) VALUES(?,?,?,?,?,?)",
    )?
    .execute(rusqlite::params![p.origin as i64, p.seq as i64, p.at as i64, &*p.table, schema_version as i64, payload])?;
    Ok(if changed > 0 { n } else { 0 })
}

/// One page of kept patches in `(origin, seq)` order after `after`
/// (keyset paging: callers never hold the whole table in memory).
pub fn read_kept_page(
    conn: &Connection,
    after: Option<(u32, u64)>,
    limit: usize,
) -> Result<Vec<Kept>> {
    let (o, s) = after.map_or((-1i64, -1i64), |(o, s)| (o as i64, s as i64));
    let mut st = conn.prepare_cached(
        "SELECT origin,seq,at,tbl,schema_version,payload FROM _quilt_kept WHERE (origin, seq) > (?1, ?2) ORDER BY origin, seq LIMIT ?3",
    )?;
    let r = st.query_map(rusqlite::params![o, s, limit as i64], kept_from_row)?;
    let rows: Vec<Option<Kept>> = r.collect::<rusqlite::Result<_>>()?;
    Ok(rows.into_iter().flatten().collect())
}

/// Bytes of kept payloads per origin.
pub fn kept_bytes(conn: &Connection) -> Result<HashMap<u32, u64>> {
    let mut st =
        conn.prepare("SELECT origin, sum(length(payload)) FROM _quilt_kept GROUP BY origin")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = HashMap::new();
    for r in rows {
        let (o, n) = r?;
        out.insert(o as u32, n.max(0) as u64);
    }
    Ok(out)
}

/// The stamp of the kept patch `(origin, seq)`, if any.
pub fn kept_at(conn: &Connection, origin: u32, seq: i64) -> Result<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT at FROM _quilt_kept WHERE origin=?1 AND seq=?2")?
        .query_row(rusqlite::params![origin as i64, seq], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(|v| v as u64))
}

/// Move a kept patch to another seq.
pub fn move_kept(conn: &Connection, origin: u32, from: i64, to: i64) -> Result<()> {
    conn.prepare_cached("UPDATE _quilt_kept SET seq=?3 WHERE origin=?1 AND seq=?2")?
        .execute(rusqlite::params![origin as i64, from, to])?;
    Ok(())
}

fn kept_from_row(r: &rusqlite::Row) -> rusqlite::Result<Option<Kept>> {
    let origin: i64 = r.get(0)?;
    let seq: i64 = r.get(1)?;
    let at: i64 = r.get(2)?;
    let table: String = r.get(3)?;
    let sv: i64 = r.get(4)?;
    let payload: Vec<u8> = r.get(5)?;
    let Ok((columns, values)) = rmp_serde::from_slice::<(Vec<String>, Vec<Value>)>(&payload) else {
        return Ok(None);
    };
    if columns.len() != values.len() {
        return Ok(None);
    }
    Ok(Some(Kept {
        schema_version: sv as u32,
        patch: Patch {
            table: Arc::from(table.as_str()),
            origin: origin as u32,
            seq: seq as u64,
            at: at as u64,
            columns: Arc::new(columns),
            values,
        },
    }))
}

/// Kept patches, all or those of one origin within `[a, b]`.
pub fn read_kept(conn: &Connection, range: Option<(u32, u64, u64)>) -> Result<Vec<Kept>> {
    let base = "SELECT origin,seq,at,tbl,schema_version,payload FROM _quilt_kept";
    let rows: Vec<Option<Kept>> = match range {
        Some((o, a, b)) => {
            let mut st = conn.prepare_cached(&format!(
                "{base} WHERE origin=? AND seq BETWEEN ? AND ? ORDER BY seq"
            ))?;
            let r = st.query_map(
                rusqlite::params![o as i64, a as i64, b.min(i64::MAX as u64) as i64],
                kept_from_row,
            )?;
            r.collect::<rusqlite::Result<_>>()?
        }
        None => {
            let mut st = conn.prepare_cached(&format!("{base} ORDER BY origin, seq"))?;
            let r = st.query_map([], kept_from_row)?;
            r.collect::<rusqlite::Result<_>>()?
        }
    };
    Ok(rows.into_iter().flatten().collect())
}

/// The stamp of the lowest-seq kept patch of `origin`, if any.
pub fn first_kept_stamp(conn: &Connection, origin: u32) -> Result<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT at FROM _quilt_kept WHERE origin=?1 ORDER BY seq LIMIT 1")?
        .query_row([origin as i64], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|v| v as u64))
}

/// `(seq, stamp)` of the oldest kept patches of `origin` with seq <= `upto`.
pub fn oldest_kept(
    conn: &Connection,
    origin: u32,
    upto: u64,
    limit: usize,
) -> Result<Vec<(u64, u64)>> {
    let mut st = conn.prepare_cached(
        "SELECT seq, at FROM _quilt_kept WHERE origin=?1 AND seq<=?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = st.query_map(
        rusqlite::params![
            origin as i64,
            i64::try_from(upto).unwrap_or(i64::MAX),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Delete the kept patches of `origin` with seqs in `[a, b]`.
pub fn delete_kept_range(conn: &Connection, origin: u32, a: u64, b: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM _quilt_kept WHERE origin=?1 AND seq BETWEEN ?2 AND ?3")?
        .execute(rusqlite::params![origin as i64, a as i64, b as i64])?;
    Ok(())
}

/// Delete the kept patch `(origin, seq)`, if any.
pub fn delete_kept(conn: &Connection, origin: u32, seq: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM _quilt_kept WHERE origin = ?1 AND seq = ?2")?
        .execute(rusqlite::params![origin as i64, seq as i64])?;
    Ok(())
}

/// Call `f(origin, seq, stamp)` for every kept patch.
pub fn each_stamp(conn: &Connection, f: impl FnMut(i64, i64, i64)) -> Result<()> {
    crate::core::patches::each_row(conn, "SELECT origin, seq, at FROM _quilt_kept", [], f)
}
