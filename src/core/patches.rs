//! Finding, reading, moving and deleting stored patch rows by `(origin,
//! seq)`. On an ordinary (rowid) patches table the rows are found through
//! the run map (`runs/`), with no index; a `WITHOUT ROWID` patches table
//! keeps the `(_peerId, _sequenceId)` index and is searched by key.
//!
//! Every row found through a run is checked against the identity it should
//! have. When a check fails (rowids renumbered by a `VACUUM`, rows edited by
//! hand), the table's runs are rebuilt from a scan and the read is retried
//! once.

use crate::core::error::Result;
use crate::core::protocol::Patch;
use crate::core::runs::Runs;
use crate::core::schema::{q, TableInfo, NULLS_COL};
use crate::core::value::Value;
use rusqlite::{Connection, OptionalExtension};

/// `_quilt_meta` key set when rows moved or went away since the vector was
/// last saved (engine/persist.rs): the next open reads every row.
pub const DIRTY_KEY: &str = "vector_dirty";

fn mark_dirty(conn: &Connection) -> Result<()> {
    crate::core::meta::set(conn, DIRTY_KEY, 1)
}

fn all_cols(t: &TableInfo) -> String {
    t.columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(",")
}

/// Rebuild the runs of `t` (its rowids no longer match them).
pub fn rebuild_runs(conn: &Connection, runs: &mut Runs, t: &TableInfo) -> Result<()> {
    runs.rebuild(conn, &t.name, &q(&t.patches()))
}

/// The rowid of `(origin, seq)` in `t`, checked against the row itself.
/// `None` when no row has that identity.
fn locate(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    seq: u64,
) -> Result<Option<i64>> {
    let Ok(seq_i) = i64::try_from(seq) else {
        return Ok(None);
    };
    if !t.rowid {
        return Ok(conn
            .prepare_cached(&format!(
                "SELECT rowid FROM {} WHERE _peerId=?1 AND _sequenceId=?2 LIMIT 1",
                q(&t.patches())
            ))
            .and_then(|mut st| {
                st.query_row(rusqlite::params![origin as i64, seq_i], |r| r.get(0))
                    .optional()
            })
            .unwrap_or(None));
    }
    for attempt in 0..2 {
        let Some(rowid) = runs.find(conn, &t.name, origin, seq)? else {
            return Ok(None);
        };
        if row_is(conn, t, rowid, origin as i64, seq_i)? == Some(true) {
            return Ok(Some(rowid));
        }
        if attempt == 0 {
            rebuild_runs(conn, runs, t)?;
        }
    }
    Ok(None)
}

/// Whether the row at `rowid` of `t` is patch `(peer, seq)`; `None` when
/// there is no such row.
pub fn row_is(
    conn: &Connection,
    t: &TableInfo,
    rowid: i64,
    peer: i64,
    seq: i64,
) -> Result<Option<bool>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT _peerId=?2 AND _sequenceId=?3 FROM {} WHERE rowid=?1",
            q(&t.patches())
        ))?
        .query_row(rusqlite::params![rowid, peer, seq], |r| r.get(0))
        .optional()?)
}

/// `(rowid, peer, seq)` of the highest row of `t` (a rowid table), if any.
pub fn last_row(conn: &Connection, t: &TableInfo) -> Result<Option<(i64, i64, i64)>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT rowid, _peerId, _sequenceId FROM {} ORDER BY rowid DESC LIMIT 1",
            q(&t.patches())
        ))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// Call `f(origin, seq, stamp)` for every stored patch row of `t`, or,
/// with `after`, for the rows above that rowid in rowid order (a rowid
/// table).
pub fn each_stamp(
    conn: &Connection,
    t: &TableInfo,
    after: Option<i64>,
    f: impl FnMut(i64, i64, i64),
) -> Result<()> {
    let p = q(&t.patches());
    match after {
        Some(rowid) => each_row(
            conn,
            &format!(
                "SELECT _peerId, _sequenceId, _patchedAt FROM {p} WHERE rowid > ?1 ORDER BY rowid"
            ),
            [rowid],
            f,
        ),
        None => each_row(
            conn,
            &format!("SELECT _peerId, _sequenceId, _patchedAt FROM {p}"),
            [],
            f,
        ),
    }
}

/// Call `f` with the three integer columns of every row `sql` returns.
pub(crate) fn each_row(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(i64, i64, i64),
) -> Result<()> {
    let mut st = conn.prepare(sql)?;
    let mut rows = st.query(params)?;
    while let Some(r) = rows.next()? {
        f(r.get(0)?, r.get(1)?, r.get(2)?);
    }
    Ok(())
}

/// The origins with a stored patch in `t` that holds a value for one of
/// `cols` (an explicit NULL may be one: `_quiltNulls` is set); every
/// origin with a patch in `t` when `cols` is `None`.
pub fn origins_touching(
    conn: &Connection,
    t: &TableInfo,
    cols: Option<&[&String]>,
) -> Result<Vec<i64>> {
    let cond = match cols {
        Some(cols) => cols
            .iter()
            .map(|c| format!("{} IS NOT NULL", q(c)))
            .chain(std::iter::once(format!("{NULLS_COL} IS NOT NULL")))
            .collect::<Vec<_>>()
            .join(" OR "),
        None => "1".into(),
    };
    let sql = format!(
        "SELECT DISTINCT _peerId FROM {} WHERE {cond}",
        q(&t.patches())
    );
    let mut st = conn.prepare(&sql)?;
    let r = st.query_map([], |r| r.get(0))?;
    Ok(r.collect::<rusqlite::Result<_>>()?)
}

/// Stored patches of one origin within `[a, b]`, oldest first, at most `limit`.
pub fn read_patches(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    a: u64,
    b: u64,
    limit: usize,
) -> Result<Vec<Patch>> {
    let select = format!(
        "SELECT _patchedAt,_sequenceId,{NULLS_COL},{},_peerId FROM {}",
        all_cols(t),
        q(&t.patches())
    );
    let peer_col = 3 + t.columns.len();
    if !t.rowid {
        let sql = format!("{select} WHERE _peerId=?1 AND _sequenceId BETWEEN ?2 AND ?3 ORDER BY _sequenceId LIMIT ?4");
        let mut st = conn.prepare_cached(&sql)?;
        let rows = st.query_map(
            rusqlite::params![
                origin as i64,
                i64::try_from(a).unwrap_or(i64::MAX),
                i64::try_from(b).unwrap_or(i64::MAX),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |r| crate::core::store::row_to_patch(t, origin, r),
        )?;
        return Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?);
    }
    let sql = format!("{select} WHERE rowid BETWEEN ?1 AND ?2 ORDER BY rowid");
    'attempt: for attempt in 0..2 {
        let mut out = Vec::new();
        for span in runs.spans(conn, &t.name, origin, a, b)? {
            if out.len() >= limit {
                break;
            }
            let room = i64::try_from(limit - out.len()).unwrap_or(i64::MAX);
            let hi = span.b.min(span.a.saturating_add(room - 1));
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(rusqlite::params![span.a, hi])?;
            let mut want = span.seq;
            while let Some(r) = rows.next()? {
                let peer: i64 = r.get(peer_col)?;
                let seq: i64 = r.get(1)?;
                if peer != origin as i64 || seq != want as i64 {
                    if attempt == 0 {
                        drop(rows);
                        rebuild_runs(conn, runs, t)?;
                        continue 'attempt;
                    }
                    break;
                }
                out.push(crate::core::store::row_to_patch(t, origin, r)?);
                want += 1;
            }
            if want.saturating_sub(span.seq) < (hi - span.a + 1) as u64 && attempt == 0 {
                // A row of the span is missing: the runs are out of date.
                drop(rows);
                rebuild_runs(conn, runs, t)?;
                continue 'attempt;
            }
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// The stamp of the stored patch `(origin, seq)` in `t`, if any.
pub fn stored_at(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    seq: u64,
) -> Result<Option<u64>> {
    let Some(rowid) = locate(conn, runs, t, origin, seq)? else {
        return Ok(None);
    };
    Ok(conn
        .prepare_cached(&format!(
            "SELECT _patchedAt FROM {} WHERE rowid=?1",
            q(&t.patches())
        ))?
        .query_row([rowid], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|v| v.max(0) as u64))
}

/// The stamp of the lowest-seq stored patch of `origin` in `t`, if any.
pub fn first_stamp(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
) -> Result<Option<u64>> {
    if !t.rowid {
        let sql = format!(
            "SELECT _patchedAt FROM {} WHERE _peerId=?1 ORDER BY _sequenceId LIMIT 1",
            q(&t.patches())
        );
        return Ok(conn
            .prepare_cached(&sql)?
            .query_row([origin as i64], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|v| v.max(0) as u64));
    }
    let Some(run) = runs.first(conn, &t.name, origin)? else {
        return Ok(None);
    };
    stored_at(conn, runs, t, origin, run.seq0)
}

/// Give the stored patch `(origin, from)` the seq `to`. Returns the
/// primary key of the row it belongs to. A negative seq is a parking place
/// during a reshuffle of versions (engine/clash.rs): the row is remembered
/// in memory, not in the runs, until it moves on.
pub fn move_patch(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    from: i64,
    to: i64,
) -> Result<Option<Vec<Value>>> {
    let p = q(&t.patches());
    let rowid = if !t.rowid {
        conn.prepare_cached(&format!(
            "SELECT rowid FROM {p} WHERE _peerId=?1 AND _sequenceId=?2 LIMIT 1"
        ))
        .and_then(|mut st| {
            st.query_row(rusqlite::params![origin as i64, from], |r| r.get(0))
                .optional()
        })
        .unwrap_or(None)
    } else if from < 0 {
        runs.unpark(&t.name, origin, from)
    } else {
        locate(conn, runs, t, origin, from as u64)?
    };
    let Some(rowid) = rowid else {
        return Ok(None);
    };
    let pk_cols = t.pk.iter().map(|c| q(c)).collect::<Vec<_>>().join(",");
    let pk: Vec<Value> = conn
        .prepare_cached(&format!("SELECT {pk_cols} FROM {p} WHERE rowid=?1"))?
        .query_row([rowid], |r| {
            (0..t.pk.len()).map(|i| r.get::<_, Value>(i)).collect()
        })?;
    conn.prepare_cached(&format!("UPDATE {p} SET _sequenceId=?2 WHERE rowid=?1"))?
        .execute(rusqlite::params![rowid, to])?;
    mark_dirty(conn)?;
    if t.rowid {
        if from >= 0 {
            runs.remove(conn, &t.name, origin, from as u64)?;
        }
        if to < 0 {
            runs.park(&t.name_arc, origin, to, rowid);
        } else {
            runs.note(&t.name_arc, origin, to as u64, rowid);
            runs.flush(conn)?;
        }
    }
    Ok(Some(pk))
}

/// Delete the stored patch `(origin, seq)` of `t`, if there is one.
pub fn delete_patch(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    seq: u64,
) -> Result<()> {
    if let Some(rowid) = locate(conn, runs, t, origin, seq)? {
        conn.prepare_cached(&format!("DELETE FROM {} WHERE rowid=?1", q(&t.patches())))?
            .execute([rowid])?;
        mark_dirty(conn)?;
        if t.rowid {
            runs.remove(conn, &t.name, origin, seq)?;
        }
    }
    Ok(())
}

/// `(seq, stamp)` of the oldest stored patches of `origin` with seq <= `upto`
/// (at most `limit`), for retention.
pub fn oldest(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    upto: u64,
    limit: usize,
) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for p in read_patches(conn, runs, t, origin, 1, upto, limit)? {
        out.push((p.seq, p.at));
    }
    Ok(out)
}

/// Delete the stored patches of `origin` with seqs in `[a, b]`, where
/// nothing below `a` is stored (a purged prefix).
pub fn delete_prefix(
    conn: &Connection,
    runs: &mut Runs,
    t: &TableInfo,
    origin: u32,
    a: u64,
    b: u64,
) -> Result<()> {
    let p = q(&t.patches());
    mark_dirty(conn)?;
    if !t.rowid {
        conn.prepare_cached(&format!(
            "DELETE FROM {p} WHERE _peerId=?1 AND _sequenceId BETWEEN ?2 AND ?3"
        ))?
        .execute(rusqlite::params![origin as i64, a as i64, b as i64])?;
        return Ok(());
    }
    for span in runs.spans(conn, &t.name, origin, a, b)? {
        // Only rows of this origin: a stale run never deletes another's row.
        conn.prepare_cached(&format!(
            "DELETE FROM {p} WHERE rowid BETWEEN ?1 AND ?2 AND _peerId=?3 AND _sequenceId BETWEEN ?4 AND ?5"
        ))?
        .execute(rusqlite::params![span.a, span.b, origin as i64, a as i64, b as i64])?;
    }
    runs.remove_upto(conn, &t.name, origin, b)
}
