//! Clock write-behind for small autocommit writes (docs/design.md,
//! "Deferred clock rows").
//!
//! An `upsert()` in autocommit is one SQLite commit, and what a commit
//! costs is mostly the pages it writes to the WAL: the base row's, the
//! patch row's and the clock row's B-tree leaves. The clock row is derived
//! data: the patch rows alone say which stamp won each column. So a small
//! write outside `transaction(fn)` keeps its clock row aside in memory and
//! the clock rows of up to [`DEFER_MAX`] such writes are written together,
//! in one commit, before anything else reads or writes a clock. Deferral
//! starts once [`DEFER_AFTER`] such writes came in a row, with no other
//! transaction between them. The rows kept aside are settled:
//!
//! - every other unit of work (`transaction(fn)`, captured SQL, a larger
//!   batch), `applyPatches`, migrations, retention, and atomic groups open
//!   their transaction with [`Engine::begin_tx`] or `begin_unit`, which
//!   [settle](Engine::settle_clock) first, in a commit of their own;
//! - heartbeats and `close()` settle too, so the rows kept aside are bounded
//!   in time as well as in count.
//!
//! The first deferred write of a table records on disk, in the same commit,
//! `clock_after:<table>` = the rowid below its patch row; the settle removes
//! it. A process that dies with clock rows kept aside leaves that mark, and
//! the next open replays the clocks of the patch rows above it
//! (`clock_rows::replay_local_clocks`) before anything reads a clock. The settle
//! and the replay put a row's clock exactly as the direct write would have
//! (`clock_rows::put_local_clock`): a write naming every column replaces the
//! clock, a partial one merges into it, in commit order.

use super::*;

/// Small autocommit writes in a row before their clock rows are deferred:
/// a write alone between other transactions would pay a mark and a settle
/// commit for one clock row (more pages, not fewer).
const DEFER_AFTER: u32 = 4;
/// Largest batch whose clock rows are deferred (a larger one writes them
/// in its own transaction: one commit either way).
const DEFER_ROWS: usize = 64;
/// Clock rows kept aside at most; the next write settles them first.
const DEFER_MAX: usize = 512;
/// `_quilt_meta` key prefix of a table's mark (module docs).
const MARK: &str = "clock_after:";

/// A clock row kept aside: the stamps one local write gave the row `pk`.
#[derive(Debug)]
struct Entry {
    table: Arc<str>,
    pk: Vec<Value>,
    blob: Vec<u8>,
    /// The write named every non-key column: its clock replaces the row's.
    whole: bool,
}

/// The clock rows kept aside, and those of the unit being written.
#[derive(Debug, Default)]
pub(super) struct Deferred {
    /// Committed, in commit order.
    rows: Vec<Entry>,
    /// Tables whose mark is on disk.
    marked: HashSet<Arc<str>>,
    /// Kept aside by the open unit (moved to `rows` when it commits).
    staged: Vec<Entry>,
    staged_marks: Vec<Arc<str>>,
    /// The open unit keeps its clock rows aside (write.rs `write_checked`).
    pub(super) active: bool,
    /// The write about to open its unit is a small autocommit one, deferred
    /// or not yet ([`DEFER_AFTER`]).
    eligible: bool,
    /// Small autocommit writes since any other transaction.
    streak: u32,
}

fn mark_key(table: &str) -> String {
    format!("{MARK}{table}")
}

impl Deferred {
    /// A local write is about to open its unit; `small`: outside
    /// `transaction(fn)`, at most [`DEFER_ROWS`] rows, on a table whose
    /// patch rows have rowids. Decides whether it keeps its clock rows
    /// aside ([`DEFER_AFTER`], [`DEFER_MAX`]).
    pub(super) fn start_write(&mut self, small: bool, rows: usize) {
        self.eligible = small && rows <= DEFER_ROWS;
        if self.eligible {
            self.streak = self.streak.saturating_add(1);
        }
        self.active = self.eligible && self.streak > DEFER_AFTER && self.rows.len() < DEFER_MAX;
    }

    /// A transaction that is not a local write: deferral starts over.
    pub(super) fn end_streak(&mut self) {
        self.streak = 0;
    }

    /// The local write's unit is over (committed or not).
    pub(super) fn end_write(&mut self) {
        self.active = false;
        self.eligible = false;
    }

    /// An outermost unit opens: true when the rows kept aside must be
    /// settled first (it does not keep its own aside). Any transaction but
    /// a small autocommit write ends the streak.
    pub(super) fn must_settle(&mut self) -> bool {
        if !self.eligible {
            self.streak = 0;
        }
        !self.active
    }

    /// Inside the deferring unit, after the patch row `rowid` was inserted:
    /// keep its clock row aside; the first one of a table marks it on disk.
    pub(super) fn stage(
        &mut self,
        conn: &Connection,
        t: &TableInfo,
        pk: Vec<Value>,
        blob: &[u8],
        whole: bool,
        rowid: i64,
    ) -> Result<()> {
        let name = &t.name_arc;
        if !self.marked.contains(name) && !self.staged_marks.contains(name) {
            meta::set(conn, &mark_key(name), rowid.saturating_sub(1))?;
            self.staged_marks.push(name.clone());
        }
        self.staged.push(Entry {
            table: name.clone(),
            pk,
            blob: blob.to_vec(),
            whole,
        });
        Ok(())
    }

    /// The outermost unit committed: what it kept aside is now kept.
    pub(super) fn commit(&mut self) {
        self.rows.append(&mut self.staged);
        self.marked.extend(self.staged_marks.drain(..));
    }

    /// The outermost unit rolled back (its mark with it).
    pub(super) fn discard_staged(&mut self) {
        self.staged.clear();
        self.staged_marks.clear();
    }
}

impl Engine {
    /// Write the clock rows kept aside and remove the marks, in a commit of
    /// their own; kept in memory when that fails.
    ///
    /// Inside an open transaction (no caller does this; a safety net) they
    /// are merged into it and kept: merging again later changes nothing.
    pub(super) fn settle_clock(&mut self) -> Result<()> {
        let d = &mut self.defer;
        if d.rows.is_empty() && d.marked.is_empty() {
            return Ok(());
        }
        if !self.conn.is_autocommit() {
            for e in &mut d.rows {
                e.whole = false;
                if let Some(t) = self.tables.get(&*e.table) {
                    store::put_local_clock(&self.conn, t, &e.pk, &e.blob, false)?;
                }
            }
            return Ok(());
        }
        tx::begin(&self.conn)?;
        let written = (|| -> Result<()> {
            for e in &d.rows {
                // A table gone since is settled by its migration's settle.
                if let Some(t) = self.tables.get(&*e.table) {
                    store::put_local_clock(&self.conn, t, &e.pk, &e.blob, e.whole)?;
                }
            }
            for name in &d.marked {
                meta::delete(&self.conn, &mark_key(name))?;
            }
            tx::commit(&self.conn)
        })();
        match written {
            Ok(()) => {
                d.rows.clear();
                d.marked.clear();
                Ok(())
            }
            Err(e) => {
                tx::rollback(&self.conn);
                Err(e)
            }
        }
    }

    /// `BEGIN IMMEDIATE` for a transaction that may read or write clocks:
    /// the clock rows kept aside are settled first.
    pub(super) fn begin_tx(&mut self) -> Result<()> {
        self.defer.end_streak();
        self.settle_clock()?;
        tx::begin(&self.conn)
    }

    /// At open: replay the clocks of writes whose clock rows were still
    /// kept aside when the last run of this file ended (module docs).
    pub(super) fn recover_clock(&mut self) -> Result<()> {
        let marks = meta::with_prefix(&self.conn, MARK)?;
        if marks.is_empty() {
            return Ok(());
        }
        tx::begin(&self.conn)?;
        let done = (|| -> Result<()> {
            for (key, after) in &marks {
                let name = key.strip_prefix(MARK).unwrap_or_default();
                let t = self.tables.get(name).filter(|t| t.rowid);
                if let Some(t) = t {
                    let n = store::replay_local_clocks(&self.conn, t, *after)?;
                    self.counters.clocks_replayed += n as u64;
                }
                meta::delete(&self.conn, key)?;
            }
            tx::commit(&self.conn)
        })();
        if done.is_err() {
            tx::rollback(&self.conn);
        }
        done
    }
}
