//! Deferred tails of the run map. A commit that only makes the newest run of a table
//! longer (the common case: one writer in autocommit, or one origin's
//! frames) does not rewrite its `_quilt_runs` row, which would cost a page
//! per commit. The longer run stays in memory (`deferred`, one per table)
//! until it has grown by [`super::DEFER_MAX`] rows, until any other run of that
//! table is written, or until [`Runs::flush_all`] (heartbeats, close, and
//! before rows are moved or deleted). The rows it covers beyond the written
//! run are always the table's highest rowids (SQLite gives a new row the
//! highest rowid), so they can be found again from disk alone: take the
//! table's top row, the written run of its origin, and check that every row
//! above that run's end continues it ([`Runs::recover`]). That happens
//! lazily, per table, after open and after any rollback (which may undo
//! rows or run writes the memory still counts); when the rows do not line
//! up, the table's runs are rebuilt from a scan.

use super::{containing, Key, Run, Runs};
use crate::core::error::Result;
use crate::core::schema::q;
use rusqlite::{Connection, OptionalExtension};
use std::sync::Arc;

/// A run longer in memory than on disk: `run` as it is, `disk_n` rows of
/// it written.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deferred {
    pub(super) origin: u32,
    pub(super) run: Run,
    pub(super) disk_n: u64,
}

impl Runs {
    /// The run of `key` that rows from `seq + 1` on may continue, and how
    /// many of its rows are on disk: the deferred run of the table when it
    /// is this origin's, else the last written one.
    pub(super) fn current(
        &mut self,
        conn: &Connection,
        key: &Key,
        seq: u64,
    ) -> Result<(Option<Run>, Option<u64>)> {
        if let Some(d) = self.deferred.get(&key.0).filter(|d| d.origin == key.1) {
            return Ok((Some(d.run), Some(d.disk_n)));
        }
        let r = match self.last.get(key) {
            Some(r) => Some(*r),
            None => {
                let r = containing(conn, &key.0, key.1, seq)?;
                if let Some(r) = r {
                    self.last.insert(key.clone(), r);
                }
                r
            }
        };
        Ok((r, r.map(|r| r.n)))
    }

    /// `r` as read from disk, or its longer deferred self.
    pub(super) fn as_in_memory(&self, tbl: &str, origin: u32, r: Run) -> Run {
        match self.deferred.get(tbl) {
            Some(d) if d.origin == origin && d.run.seq0 == r.seq0 && d.run.rowid0 == r.rowid0 => {
                d.run
            }
            _ => r,
        }
    }

    /// Before a read of `tbl`'s runs: pending runs flushed, the table's
    /// deferred run known.
    pub(super) fn ready(&mut self, conn: &Connection, tbl: &str) -> Result<()> {
        self.flush(conn)?;
        if !self.known.contains(tbl) {
            self.recover(conn, &Arc::from(tbl), i64::MAX)?;
        }
        Ok(())
    }

    /// Learn `tbl`'s deferred run from its rows below rowid `below` (module
    /// docs); rebuild its runs when the rows do not line up.
    pub(super) fn recover(&mut self, conn: &Connection, tbl: &Arc<str>, below: i64) -> Result<()> {
        self.deferred.remove(tbl);
        let p = q(&format!("{tbl}_patches"));
        let top: Option<(i64, i64, i64)> = conn
            .prepare_cached(&format!(
                "SELECT rowid, _peerId, _sequenceId FROM {p} WHERE rowid < ?1 ORDER BY rowid DESC LIMIT 1"
            ))?
            .query_row([below], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let Some((rowid, o, s)) = top else {
            self.known.insert(tbl.clone());
            return Ok(());
        };
        let (Ok(o), Ok(s)) = (u32::try_from(o), u64::try_from(s)) else {
            return self.rebuild(conn, tbl, &p);
        };
        let run = containing(conn, tbl, o, s)?;
        let lined_up = match run {
            Some(r) if s < r.end() => r.rowid_of(s) == Some(rowid),
            Some(r) if r.n > 0 => {
                let mut grown = r;
                let from = r.rowid_of(r.end() - 1).and_then(|x| x.checked_add(1));
                let mut ok = from.is_some();
                if let Some(from) = from {
                    let mut st = conn.prepare_cached(&format!(
                        "SELECT rowid, _peerId, _sequenceId FROM {p} WHERE rowid >= ?1 AND rowid < ?2 ORDER BY rowid"
                    ))?;
                    let mut rows = st.query(rusqlite::params![from, below])?;
                    while let Some(row) = rows.next()? {
                        let (x, po, ps): (i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
                        match u64::try_from(ps) {
                            Ok(ps) if po == o as i64 && grown.continues(ps, x) => grown.n += 1,
                            _ => {
                                ok = false;
                                break;
                            }
                        }
                    }
                }
                let grew = ok && grown.n > r.n;
                if grew {
                    self.last.insert((tbl.clone(), o), r);
                    self.deferred.insert(
                        tbl.clone(),
                        Deferred {
                            origin: o,
                            run: grown,
                            disk_n: r.n,
                        },
                    );
                }
                grew
            }
            _ => false,
        };
        if !lined_up {
            return self.rebuild(conn, tbl, &p);
        }
        self.known.insert(tbl.clone());
        Ok(())
    }

    /// Deferred runs may no longer match the disk (a rollback undid rows
    /// or run writes): learn them again before use.
    pub(super) fn unknown(&mut self) {
        self.deferred.clear();
        self.known.clear();
    }
}
