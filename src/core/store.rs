//! Patch storage and the column-level last-writer-wins merge.
//!
//! Every row of a replicated table has one row in `_quilt_clock_<t>`: its
//! primary key plus a BLOB of fixed 20-byte slots, one per column ordinal,
//! holding the winning stamp of each column (clock.rs). Applying a patch is one point read of that row, a
//! compare per column, one upsert of the base row and one write of the clock
//! row, so the cost grows with the rows touched, never with history (the
//! replic-sqlite re-merge trap), and one clock row per row instead of one per
//! column (the cr-sqlite insert cost).

pub use crate::core::clock::*;
use crate::core::clock_rows::exec_clock;
pub use crate::core::clock_rows::*;
use crate::core::error::Result;
use crate::core::protocol::Patch;
use crate::core::schema::{q, TableInfo, WriteSql, NULLS_COL, WRITE_SQL_CACHED};
use crate::core::value::Value;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use std::sync::Arc;

pub use crate::core::kept::{
    delete_kept, insert_kept, kept_at, kept_bytes, move_kept, read_kept, read_kept_page, Kept,
};

/// A patch against a known table, columns resolved to indices.
pub struct RowPatch<'a> {
    pub stamp: Stamp,
    pub cols: &'a [usize],
    pub values: &'a [Value],
}

pub(crate) fn col_list(t: &TableInfo, cols: &[usize]) -> String {
    cols.iter()
        .map(|&i| q(&t.columns[i]))
        .collect::<Vec<_>>()
        .join(",")
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

fn pk_values<'v>(t: &TableInfo, p: &RowPatch<'v>) -> Vec<&'v Value> {
    t.pk_index
        .iter()
        .filter_map(|idx| {
            let pos = p.cols.iter().position(|c| c == idx)?;
            p.values.get(pos)
        })
        .collect()
}

/// SQL of the base-row upsert for a column set.
pub fn upsert_sql(t: &TableInfo, cols: &[usize]) -> String {
    let pk = t.pk.iter().map(|c| q(c)).collect::<Vec<_>>().join(",");
    let sets: Vec<String> = cols
        .iter()
        .filter(|&&i| !t.is_pk(&t.columns[i]))
        .map(|&i| format!("{0}=excluded.{0}", q(&t.columns[i])))
        .collect();
    let action = if sets.is_empty() {
        "NOTHING".to_string()
    } else {
        format!("UPDATE SET {}", sets.join(","))
    };
    format!(
        "INSERT INTO {}({}) VALUES({}) ON CONFLICT({}) DO {}",
        q(&t.name),
        col_list(t, cols),
        placeholders(cols.len()),
        pk,
        action
    )
}

/// The base row of `t` with primary key `pk` (values in key order), every
/// column in declaration order; `None` when there is no such row.
pub fn read_base_row(
    conn: &Connection,
    t: &TableInfo,
    pk: &[&Value],
) -> Result<Option<Vec<Value>>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {}",
        t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(","),
        q(&t.name),
        t.pk.iter()
            .map(|c| format!("{} IS ?", q(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    let mut st = conn.prepare_cached(&sql)?;
    for (i, v) in pk.iter().enumerate() {
        st.raw_bind_parameter(i + 1, *v)?;
    }
    let mut rows = st.raw_query();
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(t.columns.len());
    for i in 0..t.columns.len() {
        out.push(r.get::<_, Value>(i)?);
    }
    Ok(Some(out))
}

/// The patch-row insert and base-row upsert SQL of `cols`, built once per
/// column set and table schema.
pub fn write_sql(t: &TableInfo, cols: &[usize]) -> Arc<WriteSql> {
    let build = || {
        let ordinals: Vec<u16> = cols
            .iter()
            .filter(|i| !t.pk_index.contains(i))
            .filter_map(|&i| t.ordinals.get(i).copied())
            .collect();
        let (template, slots) = clock_template(&ordinals);
        Arc::new(WriteSql {
            insert: patch_insert_sql(t, cols),
            upsert: upsert_sql(t, cols),
            names: Arc::new(cols.iter().map(|&i| t.columns[i].clone()).collect()),
            template,
            slots,
            pk_pos: t
                .pk_index
                .iter()
                .filter_map(|i| cols.iter().position(|c| c == i))
                .collect(),
            // Every non-key column named: the new clock replaces the old
            // one (its stamp is above every slot it drops; see
            // docs/design.md on the row slot).
            whole: ordinals.len() + t.pk_index.len() == t.columns.len(),
        })
    };
    // A poisoned lock only means another thread panicked mid-insert: the
    // map holds whole entries either way.
    let mut cache = t.write_sql.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = cache.get(cols) {
        return w.clone();
    }
    if cache.len() >= WRITE_SQL_CACHED {
        cache.clear();
    }
    let w = build();
    cache.insert(cols.to_vec(), w.clone());
    w
}

/// SQL that stores a patch row.
pub fn patch_insert_sql(t: &TableInfo, cols: &[usize]) -> String {
    format!(
        "INSERT INTO {}(_patchedAt,_sequenceId,_peerId,{},{}) VALUES(?,?,?,?,{})",
        q(&t.patches()),
        NULLS_COL,
        col_list(t, cols),
        placeholders(cols.len())
    )
}

/// Bind a patch row's parameters (stamp, seq, peer, nulls, values).
pub fn bind_patch_row<'a>(
    st: &mut rusqlite::Statement,
    stamp: Stamp,
    nulls: Option<&[u8]>,
    values: impl IntoIterator<Item = ValueRef<'a>>,
) -> Result<()> {
    st.raw_bind_parameter(1, stamp.at as i64)?;
    st.raw_bind_parameter(2, stamp.seq as i64)?;
    st.raw_bind_parameter(3, stamp.peer as i64)?;
    st.raw_bind_parameter(4, nulls)?;
    for (i, v) in values.into_iter().enumerate() {
        st.raw_bind_parameter(i + 5, ToSqlOutput::Borrowed(v))?;
    }
    Ok(())
}

/// Bind a row deletion's patch row: its key values, and `_quiltNulls`
/// = `DELETE_MARK` (TEXT, never a bitmap).
pub fn bind_deletion_row(st: &mut rusqlite::Statement, stamp: Stamp, key: &[Value]) -> Result<()> {
    st.raw_bind_parameter(1, stamp.at as i64)?;
    st.raw_bind_parameter(2, stamp.seq as i64)?;
    st.raw_bind_parameter(3, stamp.peer as i64)?;
    st.raw_bind_parameter(4, crate::core::schema::DELETE_MARK)?;
    for (i, v) in key.iter().enumerate() {
        st.raw_bind_parameter(i + 5, v)?;
    }
    Ok(())
}

/// Store the patch row in `<t>_patches`.
pub fn insert_patch_row(conn: &Connection, t: &TableInfo, sql: &str, p: &RowPatch) -> Result<()> {
    let mut st = conn.prepare_cached(sql)?;
    let nulls = nulls_bitmap(t, p.cols, p.values.iter().map(Value::is_null));
    bind_patch_row(
        &mut st,
        p.stamp,
        nulls.as_deref(),
        p.values.iter().map(Value::to_ref),
    )?;
    st.raw_execute()?;
    Ok(())
}

/// Merge a remote (or kept) patch: a column is written when the patch's
/// stamp is >= the column's winning stamp (equal means the same patch, so
/// re-applying is idempotent). Returns how many columns won.
pub fn apply_remote(
    conn: &Connection,
    t: &TableInfo,
    p: &RowPatch,
    all_win_sql: Option<&str>,
) -> Result<usize> {
    let upsert = upsert_sql(t, p.cols);
    let mut st = RemoteStatements::new(conn, t, all_win_sql.unwrap_or(&upsert))?;
    apply_remote_with(conn, &mut st, t, p)
}

/// The statements a run of remote patches with one column set reuses.
pub struct RemoteStatements<'c> {
    /// Base-row upsert of every column of the run.
    pub all_win: rusqlite::CachedStatement<'c>,
    pub select: rusqlite::CachedStatement<'c>,
    pub replace: rusqlite::CachedStatement<'c>,
    /// Inserts a clock row only where there is none.
    pub claim: rusqlite::CachedStatement<'c>,
    /// The last patch found no clock row: guess the next row is new too
    /// and claim its clock row first (one statement less per new row; a
    /// wrong guess costs one statement and stops guessing until a patch
    /// finds a new row again).
    pub fresh: bool,
}

impl<'c> RemoteStatements<'c> {
    pub fn new(conn: &'c Connection, t: &TableInfo, all_win_sql: &str) -> Result<Self> {
        Ok(RemoteStatements {
            all_win: conn.prepare_cached(all_win_sql)?,
            select: conn.prepare_cached(&t.clock_select)?,
            replace: conn.prepare_cached(&t.clock_set)?,
            claim: conn.prepare_cached(&t.clock_claim)?,
            fresh: true,
        })
    }
}

/// `apply_remote` with prepared statements. The clock is compared as it is
/// stored (big-endian stamps in slots by column ordinal), without decoding.
pub fn apply_remote_with(
    conn: &Connection,
    st: &mut RemoteStatements,
    t: &TableInfo,
    p: &RowPatch,
) -> Result<usize> {
    let pk = pk_values(t, p);
    let mine = stamp_bytes(p.stamp);
    // A key-only write (no other column) still says the row exists at its
    // stamp: kept in the row slot, so a deletion older than it does not
    // remove the row, whatever the order (docs/design.md, Row deletions).
    let key_only = p.cols.iter().all(|i| t.pk_index.contains(i));
    if st.fresh {
        if let Some(won) = claim_new_row(st, t, p, &pk, key_only, &mine)? {
            return Ok(won);
        }
        st.fresh = false;
    }
    for (k, v) in pk.iter().enumerate() {
        st.select.raw_bind_parameter(k + 1, *v)?;
    }
    let (current, deleted): (Option<Vec<u8>>, Option<Vec<u8>>) = {
        let mut rows = st.select.raw_query();
        match rows.next()? {
            Some(r) => (Some(r.get(0)?), r.get(1)?),
            None => (None, None),
        }
    };
    // The row was deleted at or after this patch: it changes nothing, and
    // does not bring the row back (a newer write does).
    if deleted.as_deref().is_some_and(|d| mine.as_slice() <= d) {
        return Ok(0);
    }
    st.fresh = current.is_none();
    let old: &[u8] = current.as_deref().unwrap_or_default();
    let mut win: Vec<bool> = Vec::with_capacity(p.cols.len());
    let mut won = 0;
    for &i in p.cols {
        if t.pk_index.contains(&i) {
            win.push(true);
            continue;
        }
        let k = t.ordinals.get(i).copied().unwrap_or(ROW_SLOT);
        let wins = k == ROW_SLOT || slot(old, k).is_none_or(|s| mine.as_slice() >= s);
        if wins {
            won += 1;
        }
        win.push(wins);
    }
    if won == 0 && current.is_some() && !key_only {
        return Ok(0);
    }
    if win.iter().all(|w| *w) {
        upsert_all(&mut st.all_win, p.values)?;
    } else {
        let cols: Vec<usize> = p
            .cols
            .iter()
            .zip(&win)
            .filter(|x| *x.1)
            .map(|x| *x.0)
            .collect();
        let vals = p.values.iter().zip(&win).filter(|x| *x.1).map(|x| x.0);
        conn.prepare_cached(&upsert_sql(t, &cols))?
            .execute(params_from_iter(vals))?;
    }
    // The merge with this patch's clock: each slot it won rises to its stamp.
    let mut blob = current.unwrap_or_else(empty_clock);
    let won_cols = p.cols.iter().zip(&win).filter(|x| *x.1).map(|x| *x.0);
    raise_won(&mut blob, t, won_cols, key_only, &mine);
    set_clock(&mut st.replace, &pk, &blob)?;
    Ok(won)
}

/// The row of `p` has no clock row yet: insert one holding `p`'s stamp in
/// every slot it names, then write its columns (all win, as with no clock
/// row in `apply_remote_with`). `None`, with nothing written, when the row
/// has a clock row.
fn claim_new_row(
    st: &mut RemoteStatements,
    t: &TableInfo,
    p: &RowPatch,
    pk: &[&Value],
    key_only: bool,
    mine: &[u8; STAMP_LEN],
) -> Result<Option<usize>> {
    let mut blob = empty_clock();
    raise_won(&mut blob, t, p.cols.iter().copied(), key_only, mine);
    if set_clock(&mut st.claim, pk, &blob)? == 0 {
        return Ok(None);
    }
    upsert_all(&mut st.all_win, p.values)?;
    Ok(Some(
        p.cols.iter().filter(|i| !t.pk_index.contains(i)).count(),
    ))
}

/// Raise the slot of each column in `won` to `mine`; a key-only write
/// raises the row slot.
fn raise_won(
    blob: &mut Vec<u8>,
    t: &TableInfo,
    won: impl Iterator<Item = usize>,
    key_only: bool,
    mine: &[u8; STAMP_LEN],
) {
    for i in won {
        let k = t.ordinals.get(i).copied().unwrap_or(ROW_SLOT);
        if k != ROW_SLOT {
            raise_slot(blob, k, mine);
        }
    }
    if key_only {
        raise_slot(blob, ROW_SLOT, mine);
    }
}

/// Run a clock statement on the row `pk` with stamps `blob`; rows changed.
fn set_clock(st: &mut rusqlite::CachedStatement, pk: &[&Value], blob: &[u8]) -> Result<usize> {
    for (k, v) in pk.iter().enumerate() {
        st.raw_bind_parameter(k + 1, *v)?;
    }
    st.raw_bind_parameter(pk.len() + 1, blob)?;
    Ok(st.raw_execute()?)
}

/// Run the base-row upsert of every column of a patch.
fn upsert_all(st: &mut rusqlite::CachedStatement, values: &[Value]) -> Result<()> {
    for (k, v) in values.iter().enumerate() {
        st.raw_bind_parameter(k + 1, v)?;
    }
    st.raw_execute()?;
    Ok(())
}

/// Turn a stored patch row into the columns it set: non-NULL values, plus
/// NULLs marked in `_quiltNulls` (a BLOB bitmap by column ordinal, or in
/// files written before it, TEXT: names joined by commas). A NULL not
/// marked means "not set", which is also how replic-sqlite files read.
/// Primary-key columns always count. A row deletion (`_quiltNulls` =
/// `DELETE_MARK`) reads as the key plus the deletion column.
pub(crate) fn row_to_patch(
    t: &TableInfo,
    origin: u32,
    r: &rusqlite::Row,
) -> rusqlite::Result<Patch> {
    use rusqlite::types::ValueRef;
    let at: i64 = r.get(0)?;
    let seq: i64 = r.get(1)?;
    let nulls = r.get_ref(2)?;
    let patch = |columns: Vec<String>, values: Vec<Value>| Patch {
        table: Arc::from(t.name.as_str()),
        origin,
        seq: seq as u64,
        at: at as u64,
        columns: Arc::new(columns),
        values,
    };
    if matches!(nulls, ValueRef::Text(s) if s == crate::core::schema::DELETE_MARK.as_bytes()) {
        let mut columns: Vec<String> = t.pk.clone();
        let mut values = Vec::with_capacity(columns.len() + 1);
        for &i in &t.pk_index {
            values.push(r.get::<_, Value>(3 + i)?);
        }
        columns.push(crate::core::schema::DELETED_COL.to_string());
        values.push(Value::Int(1));
        return Ok(patch(columns, values));
    }
    let marked = |i: usize, c: &str| match nulls {
        ValueRef::Blob(b) => bitmap_has(b, t.ordinals.get(i).copied().unwrap_or(ROW_SLOT)),
        ValueRef::Text(s) => s.split(|&b| b == b',').any(|n| n == c.as_bytes()),
        _ => false,
    };
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (i, c) in t.columns.iter().enumerate() {
        let v: Value = r.get(3 + i)?;
        if !v.is_null() || t.is_pk(c) || marked(i, c) {
            columns.push(c.clone());
            values.push(v);
        }
    }
    Ok(patch(columns, values))
}

/// Apply a row deletion stamped `stamp` to the row `pk`: columns last
/// written before it become NULL, the row goes when none was written
/// after it, and the deletion stamp is kept so that an older write arriving
/// later does not bring the row back. Returns false when the row was
/// already deleted at or after `stamp` (nothing changes).
pub fn apply_delete(conn: &Connection, t: &TableInfo, pk: &[Value], stamp: Stamp) -> Result<bool> {
    let (stamps, deleted): (Vec<u8>, Option<Vec<u8>>) = conn
        .prepare_cached(&t.clock_select)?
        .query_row(params_from_iter(pk.iter()), |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    let mine = stamp_bytes(stamp);
    if deleted.as_deref().is_some_and(|d| mine.as_slice() <= d) {
        return Ok(false);
    }
    let newer: Vec<&str> = t
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !t.pk_index.contains(i))
        .filter(|(i, _)| {
            let k = t.ordinals.get(*i).copied().unwrap_or(ROW_SLOT);
            k != ROW_SLOT && slot(&stamps, k).is_some_and(|s| s > mine.as_slice())
        })
        .map(|(_, c)| c.as_str())
        .collect();
    let where_pk =
        t.pk.iter()
            .map(|c| format!("{}=?", q(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
    // A key-only write after the deletion keeps the row (all NULL).
    let kept_by_key = slot(&stamps, ROW_SLOT).is_some_and(|s| s > mine.as_slice());
    if newer.is_empty() && !kept_by_key {
        conn.prepare_cached(&format!("DELETE FROM {} WHERE {where_pk}", q(&t.name)))?
            .execute(params_from_iter(pk.iter()))?;
    } else {
        let sets: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .filter(|(i, c)| !t.pk_index.contains(i) && !newer.contains(&c.as_str()))
            .map(|(_, c)| format!("{}=NULL", q(c)))
            .collect();
        if !sets.is_empty() {
            conn.prepare_cached(&format!(
                "UPDATE {} SET {} WHERE {where_pk}",
                q(&t.name),
                sets.join(",")
            ))?
            .execute(params_from_iter(pk.iter()))?;
        }
    }
    exec_clock(&mut *conn.prepare_cached(&t.clock_delete)?, pk, &mine)?;
    Ok(true)
}
