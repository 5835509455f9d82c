//! Units of work: the engine's one way to open a SQLite transaction for a
//! write (its statements are `tx.rs`'s), and the `'change'` records of what
//! committed.
//!
//! Every local write (`upsert`, `upsertMany`, `delete`, captured SQL) and
//! every `transaction(fn)` runs inside a *unit*: `BEGIN IMMEDIATE` at the top
//! level, a `SAVEPOINT` when a unit is already open. Units nest. What a unit
//! changes in the engine is kept aside until the outermost one commits:
//!
//! - the patches to send (`staged`), moved to the outbox in one piece, so a
//!   `transaction(fn)` leaves in one frame (when it fits `maxFrameBytes`) and
//!   a `flush()` called inside `fn` never ships a patch that may roll back;
//! - the own `(seq, at)` written (`held`), added to the seq vector only once
//!   durable, so pings never claim a patch that may roll back;
//! - the change records (`changes`), emitted as one `'change'` event.
//!
//! A unit that rolls back restores seq and HLC and drops what it kept aside,
//! so nothing of it is ever shipped and its seqs are reused by the next write.
//!
//! One call inside an open `transaction(fn)` (an `upsert`, a statement's
//! `run()`) is a *light* unit ([`Engine::light_unit`]): no SAVEPOINT (one
//! costs as much as the write itself: SQLite copies every page the call
//! touches into a sub-journal). SQLite already undoes a failed statement on
//! its own, so a failed call that leaves no row changed
//! (`sqlite3_total_changes` did not move, and every row the preupdate hook
//! saw a failed statement change is back as it was: a trigger's writes are
//! not counted) just restores the engine state and the transaction goes
//! on, as in better-sqlite3. A failed call that
//! did change rows (an `OR FAIL` statement, a write of quilt's after the
//! user's) cannot be undone alone: the whole transaction rolls back, the
//! call's error is thrown, and every later write, `commit` and nested
//! `transaction` of that `fn` fails with `E_SQLITE` ("the transaction was
//! rolled back") until `fn` is left, so nothing of it is ever half kept.

use super::*;
use crate::core::batch::Batch;

/// One row a commit changed, for the `'change'` event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub table: String,
    /// Primary-key columns and their values, in key order.
    pub key: Vec<(String, Value)>,
    /// Columns that changed (local writes) or won the merge (remote patches).
    pub columns: Vec<String>,
    /// Peer id of the writer.
    pub origin: u32,
    /// The row was deleted, or tombstoned (`deletedAt` set to a non-NULL value).
    pub deleted: bool,
}

impl Change {
    /// A change of `t` by `origin` setting `cols` (indices into `t.columns`)
    /// to `values` (in `cols` order); key columns are reported in `key`.
    pub(super) fn of_row(
        t: &TableInfo,
        origin: u32,
        cols: &[usize],
        values: &[Value],
        won: impl Fn(usize) -> bool,
    ) -> Change {
        let key = t
            .pk_index
            .iter()
            .filter_map(|i| cols.iter().position(|c| c == i))
            .map(|p| (t.columns[cols[p]].clone(), values[p].clone()))
            .collect();
        let mut columns = Vec::new();
        let mut deleted = false;
        for (p, &i) in cols.iter().enumerate() {
            if t.pk_index.contains(&i) || !won(i) {
                continue;
            }
            if t.columns[i] == "deletedAt" && !values[p].is_null() {
                deleted = true;
            }
            columns.push(t.columns[i].clone());
        }
        Change {
            table: t.name.clone(),
            key,
            columns,
            origin,
            deleted,
        }
    }

    /// A row deletion of `t` by `origin` (key only).
    pub(super) fn deletion(t: &TableInfo, origin: u32, p: &RowPatch) -> Change {
        let mut c = Change::of_row(t, origin, p.cols, p.values, |_| false);
        c.deleted = true;
        c
    }
}

/// What an open unit restores when it rolls back.
#[derive(Debug)]
struct Mark {
    seq: u64,
    hlc: Hlc,
    staged: usize,
    held: usize,
    changes: usize,
    /// Run-map rows noted before this unit (runs/).
    runs: usize,
}

/// The open units and what they keep aside (module docs).
#[derive(Debug, Default)]
pub(super) struct Units {
    marks: Vec<Mark>,
    pub(super) staged: Vec<Patch>,
    pub(super) held: Vec<(u64, u64)>,
    pub(super) changes: Vec<Change>,
    /// Someone listens to `'change'`: collect change records.
    pub(super) collect: bool,
    /// Committed batches (one per outermost commit or applied frame) not
    /// yet taken.
    pub(super) batches: Vec<Vec<Change>>,
    /// Replicated table names the SQL fence last used (capture.rs).
    pub(super) fence: std::cell::RefCell<Option<Arc<HashSet<String>>>>,
    /// `transaction(fn)` levels still to leave after a failed light unit
    /// rolled the whole transaction back (module docs).
    aborted: usize,
    /// A failed light unit knows it left rows behind that
    /// `sqlite3_total_changes` does not count (trigger writes): roll back.
    pub(super) left_rows: bool,
}

impl Units {
    /// Units open (0: none).
    pub(super) fn depth(&self) -> usize {
        self.marks.len()
    }

    /// A transaction is open and not rolled back: a call can run as a
    /// light unit, with no SQL of its own to begin or end.
    pub(super) fn live(&self) -> bool {
        !self.marks.is_empty()
    }
}

/// SQLite's own "transaction rolled back" error (`E_SQLITE`).
fn aborted_err(msg: &str) -> Error {
    Error::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(msg.into()),
    ))
}

impl Engine {
    /// Change records of local writes (`ords`: the ordinal of each column
    /// position the batch names), while someone listens.
    pub(super) fn note_local_changes(&mut self, table: &str, batch: &Batch, ords: &[usize]) {
        if !self.units.collect {
            return;
        }
        let Some(t) = self.tables.get(table) else {
            return;
        };
        let me = self.peer_id;
        let changes = batch.rows().map(|row| {
            let cols: Vec<usize> = row
                .pos
                .iter()
                .filter_map(|&p| ords.get(p).copied())
                .collect();
            Change::of_row(t, me, &cols, &row.to_values(), |_| true)
        });
        self.units.changes.extend(changes);
    }

    /// The engine state a unit restores.
    fn mark(&self) -> Mark {
        Mark {
            seq: self.seq,
            hlc: self.hlc.clone(),
            staged: self.units.staged.len(),
            held: self.units.held.len(),
            changes: self.units.changes.len(),
            runs: self.runs.borrow_mut().pending_len(),
        }
    }

    /// Put the engine state of `m` back (the SQL side is rolled back by
    /// the caller).
    fn restore(&mut self, m: Mark) {
        // Runs cached or noted may describe rows the rollback undid.
        self.runs.borrow_mut().rollback_to(m.runs);
        self.seq = m.seq;
        self.hlc = m.hlc;
        self.units.staged.truncate(m.staged);
        self.units.held.truncate(m.held);
        self.units.changes.truncate(m.changes);
        if self.units.marks.is_empty() {
            // The outermost unit: its deferred clock rows go with it.
            self.defer.discard_staged();
        }
    }

    /// Writes are refused while a rolled-back transaction is being left.
    fn check_not_aborted(&self) -> Result<()> {
        if self.units.aborted > 0 {
            return Err(aborted_err(
                "the transaction was rolled back after an earlier error in it; leave transaction(fn) (throw) before writing again",
            ));
        }
        Ok(())
    }

    /// Run `f` as one call inside the open transaction, without a
    /// savepoint (module docs); outside a transaction, in its own unit.
    pub(super) fn light_unit<T>(&mut self, f: impl FnOnce(&mut Engine) -> Result<T>) -> Result<T> {
        self.check_open()?;
        self.check_not_aborted()?;
        if self.units.marks.is_empty() {
            return self.in_unit(f);
        }
        let mark = self.mark();
        let before = self.conn.total_changes();
        self.units.left_rows = false;
        match f(self) {
            Ok(v) => Ok(v),
            Err(e) => {
                let left = std::mem::take(&mut self.units.left_rows);
                if !left && self.conn.total_changes() == before && !self.conn.is_autocommit() {
                    // Nothing of the call is left in the database.
                    self.restore(mark);
                } else {
                    self.abort_transaction();
                }
                Err(e)
            }
        }
    }

    /// Roll the whole open transaction back after a light unit failed
    /// half-way; its levels must still be left (`units.aborted`).
    fn abort_transaction(&mut self) {
        let levels = self.units.marks.len();
        let Some(outer) = self.units.marks.drain(..).next() else {
            return;
        };
        if !self.conn.is_autocommit() {
            tx::rollback(&self.conn);
        }
        self.restore(outer);
        self.units.aborted = levels;
    }

    /// Run `f` in a unit: committed when it succeeds, rolled back (engine
    /// state restored) when it fails.
    pub(super) fn in_unit<T>(&mut self, f: impl FnOnce(&mut Engine) -> Result<T>) -> Result<T> {
        let depth = self.units.depth();
        self.begin_unit()?;
        match f(self).and_then(|v| self.commit_unit().map(|()| v)) {
            Ok(v) => Ok(v),
            Err(e) => {
                // A failed commit already rolled its unit back.
                if self.units.depth() > depth {
                    self.rollback_unit();
                }
                Err(e)
            }
        }
    }

    /// Open a unit: `BEGIN IMMEDIATE`, or a savepoint inside an open one.
    pub(super) fn begin_unit(&mut self) -> Result<()> {
        self.check_open()?;
        self.check_not_aborted()?;
        if self.units.marks.is_empty() {
            // Clock rows kept aside are written first, unless this unit
            // keeps its own aside too (defer.rs).
            if self.defer.must_settle() {
                self.settle_clock()?;
            }
            // Prepared once: an autocommit write pays for no SQL parsing.
            tx::begin(&self.conn)?;
        } else {
            // SQLite resolves a savepoint name to the innermost one.
            tx::savepoint(&self.conn, &tx::UNIT)?;
        }
        let m = self.mark();
        self.units.marks.push(m);
        Ok(())
    }

    /// Commit the innermost unit; the outermost one publishes what the
    /// units kept aside. A failed commit rolls the unit back.
    pub(super) fn commit_unit(&mut self) -> Result<()> {
        let outer = self.units.marks.len() == 1;
        let atomic_before = self.out_atomic.len();
        // The run map of every row this unit inserted, once, just before
        // the outermost COMMIT (savepoint rollbacks drop theirs: runs/).
        let flushed = if outer {
            self.runs.borrow_mut().flush(&self.conn)
        } else {
            Ok(())
        };
        // More than one own patch: they travel as one atomic group.
        let group = match (self.units.held.first(), self.units.held.last()) {
            (Some(f), Some(l)) if outer && l.0 > f.0 => Some((f.0, l.0)),
            _ => None,
        };
        let recorded = flushed.and_then(|_| match group {
            Some((f, l)) => self.record_local_atomic(f, l),
            None => Ok(()),
        });
        let end = |conn: &Connection| -> Result<()> {
            if outer {
                tx::commit(conn)
            } else {
                tx::release(conn, &tx::UNIT)
            }
        };
        if let Err(e) = recorded.and_then(|_| end(&self.conn)) {
            self.rollback_unit();
            self.out_atomic.truncate(atomic_before);
            return Err(e);
        }
        if self.units.marks.pop().is_none() {
            return Err(Error::Arg("internal: commit without an open unit".into()));
        }
        if outer {
            self.defer.commit();
            self.publish_units();
        }
        Ok(())
    }

    /// Roll the innermost unit back and restore the engine state it saw.
    pub(super) fn rollback_unit(&mut self) {
        let Some(m) = self.units.marks.pop() else {
            return;
        };
        // A failed ROLLBACK (SQLite already rolled back on its own, e.g.
        // after a full disk) leaves nothing open either way.
        if self.units.marks.is_empty() {
            tx::rollback(&self.conn);
        } else {
            let _ = tx::rollback_to(&self.conn, &tx::UNIT);
        }
        self.restore(m);
    }

    /// After the outermost commit: hold own seqs, queue the patches, and
    /// record one batch of changes.
    fn publish_units(&mut self) {
        let held = std::mem::take(&mut self.units.held);
        if let Some(&(_, at)) = held.first() {
            self.oldest_at.entry(self.peer_id).or_insert(at);
        }
        self.vector.hold_all(self.peer_id, held);
        self.outbox.append(&mut self.units.staged);
        let changes = std::mem::take(&mut self.units.changes);
        if !changes.is_empty() {
            self.units.batches.push(changes);
        }
    }

    /// True while a unit (a `transaction(fn)`) is open, or a rolled-back
    /// one is still being left.
    pub fn in_transaction(&self) -> bool {
        !self.units.marks.is_empty() || self.units.aborted > 0
    }

    /// `transaction(fn)` starts: a unit that spans calls.
    pub fn begin_transaction(&mut self) -> Result<()> {
        self.begin_unit()
    }

    /// `transaction(fn)` returned: commit its unit.
    pub fn commit_transaction(&mut self) -> Result<()> {
        if self.units.aborted > 0 {
            self.units.aborted -= 1;
            return Err(aborted_err(
                "the transaction was rolled back after an error in it: nothing of it was committed",
            ));
        }
        if !self.in_transaction() {
            return Err(Error::Arg("no transaction is open".into()));
        }
        self.commit_unit()
    }

    /// `transaction(fn)` threw: roll its unit back.
    pub fn rollback_transaction(&mut self) -> Result<()> {
        if self.units.aborted > 0 {
            self.units.aborted -= 1;
            return Ok(());
        }
        if !self.in_transaction() {
            return Err(Error::Arg("no transaction is open".into()));
        }
        self.rollback_unit();
        Ok(())
    }

    /// Collect change records from now on (`'change'` has listeners), or
    /// stop (and drop what was not taken).
    pub fn collect_changes(&mut self, on: bool) {
        self.units.collect = on;
        if !on {
            self.units.batches.clear();
            self.units.changes.clear();
        }
    }

    /// Whether change records are collected.
    pub fn collecting_changes(&self) -> bool {
        self.units.collect
    }

    /// Committed batches of changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<Vec<Change>> {
        std::mem::take(&mut self.units.batches)
    }

    /// Record the changes of one applied frame as one batch.
    pub(super) fn note_remote_changes(&mut self, changes: Vec<Change>) {
        if self.units.collect && !changes.is_empty() {
            self.units.batches.push(changes);
        }
    }

    /// The columns a remote patch just won, read back from the row's clock
    /// (only called while someone listens to `'change'`).
    pub(super) fn remote_change(&self, t: &TableInfo, p: &RowPatch) -> Result<Change> {
        let mut st = self.conn.prepare_cached(&t.clock_select)?;
        for (k, &i) in t.pk_index.iter().enumerate() {
            let Some(pos) = p.cols.iter().position(|&c| c == i) else {
                return Err(frame_err("internal: patch without its key"));
            };
            st.raw_bind_parameter(k + 1, &p.values[pos])?;
        }
        let blob: Option<Vec<u8>> = {
            let mut rows = st.raw_query();
            match rows.next()? {
                Some(r) => Some(r.get(0)?),
                None => None,
            }
        };
        let blob = blob.unwrap_or_default();
        let mine = store::stamp_bytes(p.stamp);
        Ok(Change::of_row(t, p.stamp.peer, p.cols, p.values, |i| {
            let k = t.ordinals.get(i).copied().unwrap_or(store::ROW_SLOT);
            k != store::ROW_SLOT && store::slot(&blob, k) == Some(&mine[..])
        }))
    }
}
