//! Where each origin's patches sit in a `<t>_patches` table, without an
//! index on `(_peerId, _sequenceId)`.
//!
//! Patches of one origin arrive in seq order and are inserted one after
//! another, so they occupy consecutive rowids. A *run* records that:
//! `(table, origin, seq0, rowid0, n)` says seqs `seq0..seq0+n` are at rowids
//! `rowid0..rowid0+n`. A batch of 100k patches is one run, written once at
//! commit, where an index costs one B-tree insert per patch.
//!
//! Runs live in `_quilt_runs` and are written in the transaction that
//! inserted the rows (`flush` before COMMIT), so they are as durable as the
//! rows. Every read checks that the row it lands on has the `_peerId` and
//! `_sequenceId` it expects; a mismatch (rowids renumbered by a `VACUUM`, a
//! hand edit) is reported as `Stale`, and the caller rebuilds the table's
//! runs from a full scan and retries.

//!
//! A run that only grew may stay in memory for a while: `tail.rs`.

use crate::core::error::Result;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Rows a run may grow in memory beyond its written row (module docs): the
/// most rows [`Runs::recover`] reads back per table.
pub const DEFER_MAX: u64 = 512;

/// `seq0..seq0+n` at rowids `rowid0..rowid0+n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub seq0: u64,
    pub rowid0: i64,
    pub n: u64,
}

impl Run {
    fn end(&self) -> u64 {
        self.seq0.saturating_add(self.n)
    }
    /// True when `(seq, rowid)` continues this run.
    fn continues(&self, seq: u64, rowid: i64) -> bool {
        seq == self.end()
            && i64::try_from(self.n)
                .ok()
                .and_then(|n| self.rowid0.checked_add(n))
                == Some(rowid)
    }
    fn rowid_of(&self, seq: u64) -> Option<i64> {
        if seq < self.seq0 || seq >= self.end() {
            return None;
        }
        i64::try_from(seq - self.seq0)
            .ok()
            .and_then(|d| self.rowid0.checked_add(d))
    }
}

/// A span of rows for a seq range: seqs from `seq` at rowids `a..=b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub seq: u64,
    pub a: i64,
    pub b: i64,
}

/// Rows inserted in the open transaction and the last runs written, so the
/// common case (the next seq at the next rowid) extends a run in memory.
#[derive(Default)]
pub struct Runs {
    pending: Vec<(Arc<str>, u32, Run)>,
    /// Last run written per (table, origin), as it is on disk.
    last: HashMap<(Arc<str>, u32), Run>,
    /// Rows parked at a negative seq while versions are reshuffled.
    parked: HashMap<(Arc<str>, u32, i64), i64>,
    /// Pending entries below this index belong to an enclosing savepoint:
    /// new rows never fold into them (a rollback to the mark drops whole
    /// entries).
    floor: usize,
    /// Entries ever flushed: marks count from the start, so a flush inside
    /// a savepoint does not shift them.
    flushed: usize,
    /// Per table, the newest run when it is longer than its written row.
    deferred: HashMap<Arc<str>, Deferred>,
    /// Tables whose `deferred` entry (or its absence) matches the disk.
    known: HashSet<Arc<str>>,
}

/// (table, origin).
type Key = (Arc<str>, u32);

const UPSERT: &str =
    "INSERT OR REPLACE INTO _quilt_runs(tbl, origin, seq0, rowid0, n) VALUES(?1, ?2, ?3, ?4, ?5)";
const CONTAINING: &str = "SELECT seq0, rowid0, n FROM _quilt_runs WHERE tbl=?1 AND origin=?2 AND seq0<=?3 ORDER BY seq0 DESC LIMIT 1";

/// Create the runs table (idempotent).
pub fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _quilt_runs(
            tbl TEXT NOT NULL, origin INTEGER NOT NULL, seq0 INTEGER NOT NULL,
            rowid0 INTEGER NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (tbl, origin, seq0)) WITHOUT ROWID;",
    )?;
    Ok(())
}

fn read_run(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    Ok(Run {
        seq0: r.get::<_, i64>(0)?.max(0) as u64,
        rowid0: r.get(1)?,
        n: r.get::<_, i64>(2)?.max(0) as u64,
    })
}

fn containing(conn: &Connection, tbl: &str, origin: u32, seq: u64) -> Result<Option<Run>> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(CONTAINING)?
        .query_row(rusqlite::params![tbl, origin as i64, seq], read_run)
        .optional()?)
}

fn write_run(conn: &Connection, tbl: &str, origin: u32, r: Run) -> Result<()> {
    conn.prepare_cached(UPSERT)?.execute(rusqlite::params![
        tbl,
        origin as i64,
        r.seq0 as i64,
        r.rowid0,
        r.n as i64
    ])?;
    Ok(())
}

fn delete_run(conn: &Connection, tbl: &str, origin: u32, seq0: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM _quilt_runs WHERE tbl=?1 AND origin=?2 AND seq0=?3")?
        .execute(rusqlite::params![tbl, origin as i64, seq0 as i64])?;
    Ok(())
}

impl Runs {
    /// A row `(origin, seq)` was inserted at `rowid` in the open transaction.
    pub fn note(&mut self, tbl: &Arc<str>, origin: u32, seq: u64, rowid: i64) {
        // Consecutive rows of one origin fold into the last pending run.
        if self.pending.len() > self.floor {
            let Some(last) = self.pending.last_mut() else {
                return;
            };
            if last.2.n > 0
                && Arc::ptr_eq(&last.0, tbl)
                && last.1 == origin
                && last.2.continues(seq, rowid)
            {
                last.2.n += 1;
                return;
            }
        }
        self.pending.push((
            tbl.clone(),
            origin,
            Run {
                seq0: seq,
                rowid0: rowid,
                n: 1,
            },
        ));
    }

    /// Write the pending rows' runs (inside the transaction, before COMMIT);
    /// a run that only grew may stay deferred (module docs).
    pub fn flush(&mut self, conn: &Connection) -> Result<()> {
        self.flush_with(conn, true)
    }

    /// Write every run, deferred ones too.
    pub fn flush_all(&mut self, conn: &Connection) -> Result<()> {
        self.flush_with(conn, false)?;
        for (tbl, d) in std::mem::take(&mut self.deferred) {
            write_run(conn, &tbl, d.origin, d.run)?;
            self.last.insert((tbl, d.origin), d.run);
        }
        Ok(())
    }

    fn flush_with(&mut self, conn: &Connection, defer: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Tables whose deferred run is unknown: learn it from the rows
        // below this transaction's.
        let mut lows: Vec<(Arc<str>, i64)> = Vec::new();
        for (tbl, _, run) in &self.pending {
            if run.n == 0 || self.known.contains(tbl) {
                continue;
            }
            match lows.iter_mut().find(|(t, _)| t == tbl) {
                Some(l) => l.1 = l.1.min(run.rowid0),
                None => lows.push((tbl.clone(), run.rowid0)),
            }
        }
        for (tbl, below) in lows {
            self.recover(conn, &tbl, below)?;
        }
        let pending = std::mem::take(&mut self.pending);
        self.flushed += pending.len();
        self.floor = 0;
        // Runs changed by this flush, with how much of each is on disk
        // (`None` for a run begun here: it cannot stay deferred).
        let mut cur: Vec<(Key, Run, Option<u64>)> = Vec::new();
        for (tbl, origin, run) in pending.into_iter().filter(|p| p.2.n > 0) {
            let key = (tbl, origin);
            let at = cur.iter().position(|c| c.0 == key);
            let (prev, disk) = match at {
                Some(i) => (Some(cur[i].1), cur[i].2),
                None => self.current(conn, &key, run.seq0.saturating_sub(1))?,
            };
            match prev {
                Some(r) if r.continues(run.seq0, run.rowid0) => {
                    let next = Run {
                        n: r.n + run.n,
                        ..r
                    };
                    match at {
                        Some(i) => cur[i].1 = next,
                        None => cur.push((key, next, disk)),
                    }
                }
                _ => {
                    // The run in memory ends here: write it before it is
                    // replaced (when it is not all on disk).
                    match at {
                        Some(i) => {
                            let (k, r, _) = cur[i].clone();
                            write_run(conn, &k.0, k.1, r)?;
                            self.last.insert(k, r);
                            cur[i].1 = run;
                            cur[i].2 = None;
                        }
                        None => {
                            if let (Some(r), Some(d)) = (prev, disk) {
                                if r.n > d {
                                    write_run(conn, &key.0, origin, r)?;
                                    self.last.insert(key.clone(), r);
                                    self.deferred.remove(&key.0);
                                }
                            }
                            cur.push((key.clone(), run, None));
                        }
                    }
                }
            }
        }
        let tables: Vec<Arc<str>> = cur.iter().fold(Vec::new(), |mut v, c| {
            if !v.contains(&c.0 .0) {
                v.push(c.0 .0.clone());
            }
            v
        });
        for tbl in tables {
            let mine: Vec<usize> = (0..cur.len()).filter(|&i| cur[i].0 .0 == tbl).collect();
            if let [i] = mine[..] {
                let ((_, origin), run, disk) = &cur[i];
                let others = self.deferred.get(&tbl).is_some_and(|d| d.origin != *origin);
                if let (true, false, Some(d)) = (defer, others, disk) {
                    if run.n.saturating_sub(*d) < DEFER_MAX {
                        self.deferred.insert(
                            tbl,
                            Deferred {
                                origin: *origin,
                                run: *run,
                                disk_n: *d,
                            },
                        );
                        continue;
                    }
                }
            }
            for &i in &mine {
                let (k, r, _) = cur[i].clone();
                write_run(conn, &k.0, k.1, r)?;
                self.last.insert(k, r);
            }
            if let Some(d) = self.deferred.remove(&tbl) {
                if !mine.iter().any(|&i| cur[i].0 .1 == d.origin) {
                    write_run(conn, &tbl, d.origin, d.run)?;
                    self.last.insert((tbl, d.origin), d.run);
                }
            }
        }
        Ok(())
    }

    /// The transaction rolled back: forget what it noted and what was
    /// cached (the cache may hold runs the rollback undid).
    pub fn discard(&mut self) {
        self.pending.clear();
        self.floor = 0;
        self.last.clear();
        self.parked.clear();
        self.unknown();
    }

    /// Delete every run, on disk and in memory (every table's runs are
    /// about to be rebuilt).
    pub fn clear(&mut self, conn: &Connection) -> Result<()> {
        conn.execute("DELETE FROM _quilt_runs", [])?;
        self.discard();
        Ok(())
    }

    /// Remember the row of a patch parked at negative seq `seq`.
    pub fn park(&mut self, tbl: &Arc<str>, origin: u32, seq: i64, rowid: i64) {
        self.parked.insert((tbl.clone(), origin, seq), rowid);
    }

    /// The row parked at `seq`, forgotten here.
    pub fn unpark(&mut self, tbl: &str, origin: u32, seq: i64) -> Option<i64> {
        let key = self
            .parked
            .keys()
            .find(|k| &*k.0 == tbl && k.1 == origin && k.2 == seq)?
            .clone();
        self.parked.remove(&key)
    }

    /// Rows noted so far in the open transaction (a savepoint's mark).
    pub fn pending_len(&mut self) -> usize {
        self.floor = self.pending.len();
        self.flushed + self.pending.len()
    }

    /// A savepoint rolled back: forget what was noted after `mark`, and
    /// the cache (it may hold runs written inside the savepoint).
    pub fn rollback_to(&mut self, mark: usize) {
        // Entries flushed after the mark were written inside the savepoint
        // and SQLite undid them; pending ones after it are dropped here.
        let keep = mark.saturating_sub(self.flushed);
        self.pending.truncate(keep);
        self.floor = self.floor.min(keep);
        self.last.clear();
        self.parked.clear();
        self.unknown();
    }

    /// Forget cached runs of a table (after rows were moved or deleted).
    pub fn forget(&mut self, tbl: &str) {
        self.last.retain(|k, _| &*k.0 != tbl);
    }

    /// The rowid where `(origin, seq)` should be, if a run covers it.
    pub fn find(
        &mut self,
        conn: &Connection,
        tbl: &str,
        origin: u32,
        seq: u64,
    ) -> Result<Option<i64>> {
        self.ready(conn, tbl)?;
        Ok(containing(conn, tbl, origin, seq)?
            .map(|r| self.as_in_memory(tbl, origin, r))
            .and_then(|r| r.rowid_of(seq)))
    }

    /// The rows of `origin` with seqs in `[a, b]`, in seq order.
    pub fn spans(
        &mut self,
        conn: &Connection,
        tbl: &str,
        origin: u32,
        a: u64,
        b: u64,
    ) -> Result<Vec<Span>> {
        self.ready(conn, tbl)?;
        let mut runs: Vec<Run> = containing(conn, tbl, origin, a)?.into_iter().collect();
        {
            let mut st = conn.prepare_cached(
                "SELECT seq0, rowid0, n FROM _quilt_runs WHERE tbl=?1 AND origin=?2 AND seq0>?3 AND seq0<=?4 ORDER BY seq0",
            )?;
            let rows = st.query_map(
                rusqlite::params![
                    tbl,
                    origin as i64,
                    i64::try_from(a).unwrap_or(i64::MAX),
                    i64::try_from(b).unwrap_or(i64::MAX)
                ],
                read_run,
            )?;
            for r in rows {
                runs.push(r?);
            }
        }
        Ok(runs
            .into_iter()
            .map(|r| self.as_in_memory(tbl, origin, r))
            .filter_map(|r| {
                let lo = r.seq0.max(a);
                let hi = r.end().saturating_sub(1).min(b);
                if lo > hi || r.n == 0 {
                    return None;
                }
                Some(Span {
                    seq: lo,
                    a: r.rowid_of(lo)?,
                    b: r.rowid_of(hi)?,
                })
            })
            .collect())
    }

    /// The lowest-seq run of `origin`.
    pub fn first(&mut self, conn: &Connection, tbl: &str, origin: u32) -> Result<Option<Run>> {
        self.ready(conn, tbl)?;
        let r = conn
            .prepare_cached(
                "SELECT seq0, rowid0, n FROM _quilt_runs WHERE tbl=?1 AND origin=?2 ORDER BY seq0 LIMIT 1",
            )?
            .query_row(rusqlite::params![tbl, origin as i64], read_run)
            .optional()?;
        Ok(r.map(|r| self.as_in_memory(tbl, origin, r)))
    }

    /// Take `seq` out of its run (the row moved to another seq or was
    /// deleted): the run splits around it.
    pub fn remove(&mut self, conn: &Connection, tbl: &str, origin: u32, seq: u64) -> Result<()> {
        self.ready(conn, tbl)?;
        self.flush_all(conn)?;
        self.forget(tbl);
        let Some(r) = containing(conn, tbl, origin, seq)? else {
            return Ok(());
        };
        if seq >= r.end() {
            return Ok(());
        }
        delete_run(conn, tbl, origin, r.seq0)?;
        let before = seq - r.seq0;
        if before > 0 {
            write_run(conn, tbl, origin, Run { n: before, ..r })?;
        }
        let after = r.end() - seq - 1;
        if after > 0 {
            if let Some(rowid0) = r.rowid_of(seq + 1) {
                write_run(
                    conn,
                    tbl,
                    origin,
                    Run {
                        seq0: seq + 1,
                        rowid0,
                        n: after,
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Take every seq `<= upto` of `origin` out of the runs (a purged prefix).
    pub fn remove_upto(
        &mut self,
        conn: &Connection,
        tbl: &str,
        origin: u32,
        upto: u64,
    ) -> Result<()> {
        self.ready(conn, tbl)?;
        self.flush_all(conn)?;
        self.forget(tbl);
        let last = containing(conn, tbl, origin, upto)?;
        conn.prepare_cached("DELETE FROM _quilt_runs WHERE tbl=?1 AND origin=?2 AND seq0<=?3")?
            .execute(rusqlite::params![
                tbl,
                origin as i64,
                i64::try_from(upto).unwrap_or(i64::MAX)
            ])?;
        if let Some(r) = last {
            if r.end() > upto.saturating_add(1) {
                if let Some(rowid0) = r.rowid_of(upto + 1) {
                    write_run(
                        conn,
                        tbl,
                        origin,
                        Run {
                            seq0: upto + 1,
                            rowid0,
                            n: r.end() - upto - 1,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Rebuild a table's runs from its rows (first open of an older file,
    /// after a migration, or when a read found rowids renumbered).
    pub fn rebuild(&mut self, conn: &Connection, tbl: &str, patches_sql_name: &str) -> Result<()> {
        // The scan below covers this table's pending rows. Their entries
        // stay as empty placeholders: savepoint marks count entries.
        for p in self.pending.iter_mut().filter(|p| &*p.0 == tbl) {
            p.2.n = 0;
        }
        self.forget(tbl);
        self.deferred.remove(tbl);
        self.known.insert(Arc::from(tbl));
        conn.prepare_cached("DELETE FROM _quilt_runs WHERE tbl=?1")?
            .execute([tbl])?;
        let mut open: HashMap<u32, Run> = HashMap::new();
        let mut st = conn.prepare(&format!(
            "SELECT rowid, _peerId, _sequenceId FROM {patches_sql_name} ORDER BY rowid"
        ))?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let (rowid, o, s): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let (Ok(o), Ok(s)) = (u32::try_from(o), u64::try_from(s)) else {
                continue;
            };
            match open.get_mut(&o) {
                Some(run) if run.continues(s, rowid) => run.n += 1,
                Some(run) => {
                    write_run(conn, tbl, o, *run)?;
                    *run = Run {
                        seq0: s,
                        rowid0: rowid,
                        n: 1,
                    };
                }
                None => {
                    open.insert(
                        o,
                        Run {
                            seq0: s,
                            rowid0: rowid,
                            n: 1,
                        },
                    );
                }
            }
        }
        for (o, run) in open {
            write_run(conn, tbl, o, run)?;
        }
        Ok(())
    }
}

mod tail;
use tail::Deferred;

#[cfg(test)]
mod tests;
