//! Clock rows as a whole: rebuilt from the patch rows when the clock table
//! is missing, a stamp renamed after an identity clash (engine/clash.rs),
//! and the clock rows of local writes deferred by engine/defer.rs, put and
//! replayed exactly as the direct write (engine/write.rs) leaves them. The
//! per-patch merge is store.rs's; the BLOB format is clock.rs's.

use crate::core::clock::*;
use crate::core::error::Result;
use crate::core::protocol::Patch;
use crate::core::schema::{q, TableInfo, WriteSql, NULLS_COL};
use crate::core::store::{col_list, row_to_patch, write_sql};
use crate::core::value::Value;
use rusqlite::{params_from_iter, Connection, OptionalExtension};
use std::collections::HashMap;

/// Run a clock statement whose parameters are the key `pk`, then `blob`.
pub(crate) fn exec_clock(st: &mut rusqlite::Statement, pk: &[Value], blob: &[u8]) -> Result<()> {
    let params = pk
        .iter()
        .map(|v| v as &dyn rusqlite::ToSql)
        .chain(std::iter::once(&blob as &dyn rusqlite::ToSql));
    st.execute(params_from_iter(params))?;
    Ok(())
}

/// The key of the table's row a stored patch names (NULL where it lacks a
/// key column).
fn patch_key(t: &TableInfo, p: &Patch) -> Vec<Value> {
    t.pk.iter()
        .map(|k| {
            p.columns
                .iter()
                .position(|c| c == k)
                .map(|i| p.values[i].clone())
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// Visit the stored patches of `t` (those above rowid `after`, in rowid
/// order, when given), each with its stamp, key, and whether it deletes
/// the row.
fn each_patch(
    conn: &Connection,
    t: &TableInfo,
    after: Option<i64>,
    mut f: impl FnMut(&Patch, Stamp, Vec<Value>, bool) -> Result<()>,
) -> Result<()> {
    let filter = if after.is_some() {
        " WHERE rowid > ?1 ORDER BY rowid"
    } else {
        ""
    };
    let sql = format!(
        "SELECT _patchedAt,_sequenceId,{NULLS_COL},{},_peerId FROM {}{filter}",
        col_list(t, &(0..t.columns.len()).collect::<Vec<_>>()),
        q(&t.patches())
    );
    let mut st = conn.prepare(&sql)?;
    let peer_idx = 3 + t.columns.len();
    let mut rows = match after {
        Some(a) => st.query([a])?,
        None => st.query([])?,
    };
    while let Some(r) = rows.next()? {
        let peer: i64 = r.get(peer_idx)?;
        let p = row_to_patch(t, peer as u32, r)?;
        let stamp = Stamp {
            at: p.at,
            peer: peer as u32,
            seq: p.seq,
        };
        let deletes =
            p.columns.last().map(String::as_str) == Some(crate::core::schema::DELETED_COL);
        f(&p, stamp, patch_key(t, &p), deletes)?;
    }
    Ok(())
}

/// A row's primary key and its clock BLOB.
type RowClock = (Vec<Value>, Vec<u8>);

/// Every stored patch of a table (used to rebuild a missing clock table).
pub fn rebuild_clock(conn: &Connection, t: &TableInfo) -> Result<()> {
    let mut clocks: HashMap<Vec<u8>, RowClock> = HashMap::new();
    let mut deleted: HashMap<Vec<u8>, (Vec<Value>, Stamp)> = HashMap::new();
    each_patch(conn, t, None, |p, stamp, pk, deletes| {
        let key = rmp_serde::to_vec(&pk).unwrap_or_default();
        if deletes {
            let d = deleted.entry(key).or_insert((pk, stamp));
            if stamp > d.1 {
                d.1 = stamp;
            }
            return Ok(());
        }
        let entry = clocks.entry(key).or_insert_with(|| (pk, empty_clock()));
        let b = stamp_bytes(stamp);
        if p.columns.iter().all(|c| t.is_pk(c)) {
            raise_slot(&mut entry.1, ROW_SLOT, &b);
        }
        for c in p.columns.iter() {
            let k = t.index.get(c).and_then(|&i| t.ordinals.get(i).copied());
            if let Some(k) = k.filter(|&k| k != ROW_SLOT) {
                raise_slot(&mut entry.1, k, &b);
            }
        }
        Ok(())
    })?;
    let mut st = conn.prepare(&t.clock_replace)?;
    for (_, (pk, blob)) in clocks {
        exec_clock(&mut st, &pk, &blob)?;
    }
    let mut st = conn.prepare(&t.clock_delete)?;
    for (_, (pk, d)) in deleted {
        exec_clock(&mut st, &pk, &stamp_bytes(d))?;
    }
    Ok(())
}

/// Put a local write's clock `blob` (the stamps of the columns it named)
/// on the row `pk` as write.rs would have: `whole` (every non-key column
/// named) replaces the row's clock, else the two are merged. Shared by the
/// write-behind's flush and its recovery at open, so a deferred clock row
/// ends as the direct write leaves it.
pub fn put_local_clock(
    conn: &Connection,
    t: &TableInfo,
    pk: &[Value],
    blob: &[u8],
    whole: bool,
) -> Result<()> {
    let mut merged = Vec::new();
    let blob = if whole {
        blob
    } else {
        let mut st = conn.prepare_cached(&t.clock_select)?;
        let mut rows = st.query(params_from_iter(pk.iter()))?;
        match rows.next()? {
            Some(r) => {
                // A clock that is not a BLOB is damaged: merged as empty.
                let old = r.get_ref(0)?.as_blob_or_null().ok().flatten();
                merge_clock_into(&mut merged, old.unwrap_or_default(), blob);
                &merged
            }
            None => blob,
        }
    };
    exec_clock(&mut *conn.prepare_cached(&t.clock_set)?, pk, blob)
}

/// The clock blob a local write stamped `stamp` naming the columns of
/// `plan` leaves (before the merge with the row's clock), into `buf`.
pub fn local_clock(buf: &mut Vec<u8>, plan: &WriteSql, stamp: Stamp) {
    buf.clear();
    buf.extend_from_slice(&plan.template);
    fill_clock(buf, &plan.slots, stamp);
    if plan.slots.is_empty() {
        // Key-only: the row exists at this stamp (docs/design.md).
        raise_slot(buf, ROW_SLOT, &stamp_bytes(stamp));
    }
}

/// Replay, in rowid order, the clocks of the patch rows above rowid
/// `after`: the local writes whose clock rows were deferred when the last
/// run ended (engine/defer.rs). Returns the rows replayed.
pub fn replay_local_clocks(conn: &Connection, t: &TableInfo, after: i64) -> Result<usize> {
    let mut buf = Vec::new();
    let mut n = 0;
    each_patch(conn, t, Some(after), |p, stamp, pk, deletes| {
        n += 1;
        if deletes {
            // Deletions are never deferred; kept at their greatest stamp.
            let d = stamp_bytes(stamp);
            let old: Option<Option<Vec<u8>>> = conn
                .prepare_cached(&t.clock_select)?
                .query_row(params_from_iter(pk.iter()), |r| r.get(1))
                .optional()?;
            if old.flatten().is_none_or(|o| o.as_slice() < d.as_slice()) {
                exec_clock(&mut *conn.prepare_cached(&t.clock_delete)?, &pk, &d)?;
            }
            return Ok(());
        }
        let cols: Vec<usize> = p
            .columns
            .iter()
            .filter_map(|c| t.index.get(c).copied())
            .collect();
        let plan = write_sql(t, &cols);
        local_clock(&mut buf, &plan, stamp);
        put_local_clock(conn, t, &pk, &buf, plan.whole)
    })?;
    Ok(n)
}

/// In the clock row of `pk`, rename the stamp `old` to `new` (the patch
/// that won those columns now has another identity).
pub fn rename_stamp(
    conn: &Connection,
    t: &TableInfo,
    pk: &[Value],
    old: Stamp,
    new: Stamp,
) -> Result<()> {
    let current: Option<Vec<u8>> = conn
        .prepare_cached(&t.clock_select)?
        .query_row(params_from_iter(pk.iter()), |r| r.get(0))
        .optional()?;
    let Some(mut blob) = current else {
        return Ok(());
    };
    if rename_in_clock(&mut blob, old, new) {
        exec_clock(&mut *conn.prepare_cached(&t.clock_set)?, pk, &blob)?;
    }
    Ok(())
}
