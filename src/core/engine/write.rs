//! Local writes: `upsert`, `upsertMany` (also as columns once and values
//! per row, which is how the binding hands batches over), and `delete`.
//!
//! One transaction per call. Per run of rows that set the same columns the
//! three statements (patch row, base-row upsert, clock row) are prepared
//! once and the clock BLOB is a template whose stamps are overwritten in
//! place, so a row costs three statement executions and no SQL text
//! hashing. A local stamp is above every stamp this peer has seen, so it
//! wins every column it names: a write that names every column replaces the
//! clock row outright; a partial one reads the clock row and merges it in
//! Rust (`clock::merge_clock_into`), no SQL function involved.

use super::defer::Deferred;
use super::*;
use crate::core::batch::{Batch, Row};
use crate::core::runs::Runs;
use crate::core::schema::{TableInfo, WriteSql};
use rusqlite::types::ToSqlOutput;

/// Statements and clock template for one run of rows with the same columns.
struct Run<'c> {
    cols: Vec<usize>,
    ins: rusqlite::CachedStatement<'c>,
    /// The base-row upsert (not for captured SQL: it wrote the row).
    ups: Option<rusqlite::CachedStatement<'c>>,
    clock: rusqlite::CachedStatement<'c>,
    /// Partial writes: reads the clock row to merge with.
    select: Option<rusqlite::CachedStatement<'c>>,
    /// Partial writes: the merged clock.
    merged: Vec<u8>,
    /// Names, clock template and slots, key positions (built once per
    /// column set: store.rs `write_sql`).
    plan: Arc<WriteSql>,
}

impl<'c> Run<'c> {
    fn new(conn: &'c Connection, t: &TableInfo, cols: &[usize], base: bool) -> Result<Run<'c>> {
        let plan = store::write_sql(t, cols);
        Ok(Run {
            cols: cols.to_vec(),
            ins: conn.prepare_cached(&plan.insert)?,
            ups: if base {
                Some(conn.prepare_cached(&plan.upsert)?)
            } else {
                None
            },
            clock: conn.prepare_cached(&t.clock_set)?,
            select: if plan.whole {
                None
            } else {
                Some(conn.prepare_cached(&t.clock_select)?)
            },
            merged: Vec::new(),
            plan,
        })
    }

    /// Base row (unless captured SQL already changed it), patch row and
    /// clock row of one write; with `defer`, the clock row is kept aside
    /// (defer.rs) instead of written.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        conn: &Connection,
        runs: &mut Runs,
        t: &TableInfo,
        stamp: Stamp,
        row: Row<'_>,
        buf: &mut Vec<u8>,
        defer: Option<&mut Deferred>,
    ) -> Result<()> {
        // The base row first: when the user's row breaks a constraint,
        // nothing of the write is left (a light unit goes on: txn.rs).
        if let Some(ups) = self.ups.as_mut() {
            for (i, v) in row.values().enumerate() {
                ups.raw_bind_parameter(i + 1, ToSqlOutput::Borrowed(v))?;
            }
            ups.raw_execute()?;
        }
        let nulls = store::nulls_bitmap(t, &self.cols, (0..row.len()).map(|p| row.is_null(p)));
        store::bind_patch_row(&mut self.ins, stamp, nulls.as_deref(), row.values())?;
        self.ins.raw_execute()?;
        let rowid = conn.last_insert_rowid();
        if t.rowid {
            runs.note(&t.name_arc, stamp.peer, stamp.seq, rowid);
        }
        store::local_clock(buf, &self.plan, stamp);
        if let Some(d) = defer {
            let pk = self.plan.pk_pos.iter().map(|&p| Value::from(row.get(p)));
            return d.stage(conn, t, pk.collect(), buf, self.plan.whole, rowid);
        }
        let mut use_merged = false;
        if let Some(sel) = self.select.as_mut() {
            for (k, &p) in self.plan.pk_pos.iter().enumerate() {
                sel.raw_bind_parameter(k + 1, ToSqlOutput::Borrowed(row.get(p)))?;
            }
            let mut rows = sel.raw_query();
            if let Some(r) = rows.next()? {
                // A clock that is not a BLOB is damaged: merged as empty.
                let old = r.get_ref(0)?.as_blob_or_null().ok().flatten();
                let old = old.unwrap_or_default();
                store::merge_clock_into(&mut self.merged, old, buf);
                use_merged = true;
            }
        }
        let blob: &[u8] = if use_merged { &self.merged } else { buf };
        let mut k = 1;
        for &p in &self.plan.pk_pos {
            self.clock
                .raw_bind_parameter(k, ToSqlOutput::Borrowed(row.get(p)))?;
            k += 1;
        }
        self.clock.raw_bind_parameter(k, blob)?;
        self.clock.raw_execute()?;
        Ok(())
    }
}

impl Engine {
    pub(super) fn check_key(
        t: &TableInfo,
        cols: &[usize],
        is_null: impl Fn(usize) -> bool,
    ) -> Result<()> {
        for (pk, &i) in t.pk.iter().zip(&t.pk_index) {
            match cols.iter().position(|&c| c == i) {
                Some(p) if !is_null(p) => {}
                _ => {
                    return Err(Error::Type(format!(
                        "row for {} must give primary-key column {pk} (not null)",
                        t.name
                    )))
                }
            }
        }
        Ok(())
    }

    fn table(&self, table: &str) -> Result<&TableInfo> {
        self.tables.get(table).ok_or_else(|| {
            schema_err(format!(
                "unknown table {table} (no {table}_patches table; did migrate() run?)"
            ))
        })
    }

    /// `upsert`/`upsertMany`: one transaction, one patch per row. Returns
    /// the token of the last row.
    pub fn upsert(&mut self, table: &str, rows: Vec<Vec<(String, Value)>>) -> Result<String> {
        self.check_open()?;
        let t = self.table(table)?;
        let mut batch = Batch::default();
        for row in rows {
            for (c, v) in row {
                match t.index.get(&c) {
                    Some(&i) => batch.push(i, v.to_ref()),
                    None => return Err(schema_err(format!("table {} has no column {c}", t.name))),
                }
            }
            batch.end_row();
            // Row by row, as before batches: the first bad row decides the
            // error (write_checked checks every key again).
            let r = batch.row(batch.len() - 1);
            Self::check_key(t, r.pos, |p| r.is_null(p))?;
        }
        self.write_ordinals(table, &batch, true)?;
        Ok(self.token())
    }

    /// [`Engine::write_checked`] of a batch whose cells name the table's
    /// column ordinals (`upsert` of row objects, captured SQL).
    pub(super) fn write_ordinals(&mut self, table: &str, batch: &Batch, base: bool) -> Result<()> {
        let n = self.table(table)?.columns.len();
        let ords: Vec<usize> = (0..n).collect();
        self.write_checked(table, batch, &ords, base)
    }

    /// `upsertMany` as column names once and a batch whose cells name
    /// positions in `columns`.
    pub fn upsert_columns(
        &mut self,
        table: &str,
        columns: &[String],
        batch: &Batch,
    ) -> Result<String> {
        self.check_open()?;
        let t = self.table(table)?;
        let mut idx = Vec::with_capacity(columns.len());
        for c in columns {
            match t.index.get(c) {
                Some(&i) if !idx.contains(&i) => idx.push(i),
                Some(_) => return Err(Error::Type(format!("column {c} is given twice"))),
                None => return Err(schema_err(format!("table {} has no column {c}", t.name))),
            }
        }
        self.write_checked(table, batch, &idx, true)?;
        Ok(self.token())
    }

    /// Key, size and seq-space checks, then the write in its own unit
    /// (txn.rs); state is restored when it fails. `ords`: the ordinal of
    /// each column position the batch's cells name (each at most once per
    /// row). `base`: also upsert the base rows (false for captured SQL,
    /// which changed them itself and writes inside its statement's unit).
    pub(super) fn write_checked(
        &mut self,
        table: &str,
        batch: &Batch,
        ords: &[usize],
        base: bool,
    ) -> Result<()> {
        let t = self.table(table)?;
        let budget = self.cfg.max_frame_bytes.saturating_sub(64 + t.name.len());
        let mut cols = Vec::new();
        for row in batch.rows() {
            cols.clear();
            for &p in row.pos {
                match ords.get(p) {
                    Some(&i) if !cols.contains(&i) => cols.push(i),
                    _ => return Err(Error::Type("a row names a column twice or none".into())),
                }
            }
            Self::check_key(t, &cols, |p| row.is_null(p))?;
            let size = protocol::estimate_refs(row.values())
                + cols.iter().map(|&i| t.columns[i].len() + 2).sum::<usize>();
            if size > budget {
                return Err(Error::Range(format!(
                    "a patch of about {size} bytes cannot fit maxFrameBytes ({})",
                    self.cfg.max_frame_bytes
                )));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        if self
            .seq
            .checked_add(n as u64)
            .is_none_or(|s| s >= SHADOW_STEP)
        {
            return Err(Error::Range(format!(
                "peer {} has used up its sequence space (2^50 writes)",
                self.peer_id
            )));
        }
        // Captured SQL (`!base`) writes inside the unit of its statement,
        // which rolls back whole on any error: no unit of its own. A small
        // autocommit write keeps its clock rows aside (defer.rs).
        let written = if base {
            let small = !self.units.live() && self.tables.get(table).is_some_and(|t| t.rowid);
            self.defer.start_write(small, n);
            let w = self.light_unit(|e| {
                e.note_local_changes(table, batch, ords);
                e.write_rows(table, batch, ords, base)
            });
            self.defer.end_write();
            w
        } else {
            self.note_local_changes(table, batch, ords);
            self.write_rows(table, batch, ords, base)
        };
        if let Err(e) = written {
            return Err(match e {
                // A value of the wrong type for a STRICT column is a bad argument.
                Error::Sqlite(rusqlite::Error::SqliteFailure(f, msg))
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_DATATYPE =>
                {
                    Error::Type(format!(
                        "table {table}: {}",
                        msg.unwrap_or_else(|| "a value does not match its column type".into())
                    ))
                }
                e => e,
            });
        }
        self.counters.local_writes += n as u64;
        Ok(())
    }

    /// Stamp and store rows inside the open unit; their `(seq, at)` and
    /// patches are kept aside until the outermost unit commits (txn.rs).
    fn write_rows(&mut self, table: &str, batch: &Batch, ords: &[usize], base: bool) -> Result<()> {
        let t = &self.tables[table];
        let now = hlc::wall_ms();
        // With no peer to send to, nothing is queued: peers that connect
        // later learn of these writes from pings and fetch them.
        let queue = self.peers.values().any(|p| p.connected);
        let mut run: Option<Run> = None;
        let mut buf = Vec::new();
        let mut cols = Vec::new();
        for row in batch.rows() {
            cols.clear();
            cols.extend(row.pos.iter().map(|&p| ords[p]));
            if run.as_ref().is_none_or(|r| r.cols != cols) {
                run = Some(Run::new(&self.conn, t, &cols, base)?);
            }
            let Some(r) = run.as_mut() else {
                return Err(frame_err("internal: no prepared run"));
            };
            let at = self.hlc.tick(now);
            self.seq += 1;
            let stamp = Stamp {
                at,
                peer: self.peer_id,
                seq: self.seq,
            };
            let defer = self.defer.active.then_some(&mut self.defer);
            r.write(
                &self.conn,
                &mut self.runs.borrow_mut(),
                t,
                stamp,
                row,
                &mut buf,
                defer,
            )?;
            self.units.held.push((self.seq, at));
            if !queue {
                continue;
            }
            self.units.staged.push(Patch {
                table: t.name_arc.clone(),
                origin: self.peer_id,
                seq: self.seq,
                at,
                columns: r.plan.names.clone(),
                values: row.to_values(),
            });
        }
        drop(run);
        // Runs are written by the outermost commit (txn.rs): a rollback
        // undoes them with the rows (and `rollback_unit` forgets them).
        // No state row update here: seq and HLC are rebuilt from the patch
        // rows on open (one dirty page less per commit); ticks persist them.
        Ok(())
    }

    /// A row deletion (captured SQL `DELETE`), inside the open unit: a
    /// patch naming the key and the deletion column, stamped and queued
    /// like any write; the clock keeps its stamp so older writes arriving
    /// later do not bring the row back (store.rs `apply_delete`).
    pub(super) fn write_deletion(&mut self, table: &str, key: Vec<(String, Value)>) -> Result<()> {
        let t = self.table(table)?.clone();
        let mut cols = Vec::with_capacity(t.pk.len());
        let mut vals = Vec::with_capacity(t.pk.len());
        for (pk, &i) in t.pk.iter().zip(&t.pk_index) {
            let v = key
                .iter()
                .find(|(c, _)| c == pk)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    Error::Type(format!("deleting from {table} needs key column {pk}"))
                })?;
            cols.push(i);
            vals.push(v);
        }
        if self.seq.checked_add(1).is_none_or(|s| s >= SHADOW_STEP) {
            return Err(Error::Range(format!(
                "peer {} has used up its sequence space (2^50 writes)",
                self.peer_id
            )));
        }
        let at = self.hlc.tick(hlc::wall_ms());
        self.seq += 1;
        let stamp = Stamp {
            at,
            peer: self.peer_id,
            seq: self.seq,
        };
        {
            let mut st = self
                .conn
                .prepare_cached(&store::patch_insert_sql(&t, &cols))?;
            store::bind_deletion_row(&mut st, stamp, &vals)?;
            st.raw_execute()?;
        }
        if t.rowid {
            self.runs.borrow_mut().note(
                &t.name_arc,
                self.peer_id,
                self.seq,
                self.conn.last_insert_rowid(),
            );
        }
        store::apply_delete(&self.conn, &t, &vals, stamp)?;
        self.units.held.push((self.seq, at));
        if self.collecting_changes() {
            let rp = RowPatch {
                stamp,
                cols: &cols,
                values: &vals,
            };
            self.units
                .changes
                .push(super::txn::Change::deletion(&t, self.peer_id, &rp));
        }
        if self.peers.values().any(|p| p.connected) {
            let mut columns = t.pk.clone();
            columns.push(schema::DELETED_COL.to_string());
            let mut values = vals;
            values.push(Value::Int(1));
            self.units.staged.push(Patch {
                table: t.name_arc.clone(),
                origin: self.peer_id,
                seq: self.seq,
                at,
                columns: Arc::new(columns),
                values,
            });
        }
        self.counters.local_writes += 1;
        Ok(())
    }

    /// A tombstone: sets `deletedAt` to now.
    pub fn delete(&mut self, table: &str, pk: Vec<(String, Value)>) -> Result<String> {
        self.check_open()?;
        let t = self
            .tables
            .get(table)
            .ok_or_else(|| schema_err(format!("unknown table {table}")))?;
        if !t.has("deletedAt") {
            return Err(schema_err(format!(
                "table {table} has no deletedAt column; delete() needs one"
            )));
        }
        for (c, _) in &pk {
            if !t.is_pk(c) {
                return Err(Error::Type(format!(
                    "delete() takes only primary-key columns of {table}; {c} is not one"
                )));
            }
        }
        let mut row = pk;
        row.push(("deletedAt".into(), Value::Int(hlc::wall_ms() as i64)));
        self.upsert(table, vec![row])
    }
}
