//! Schema changes: migrations forward and back, keeping whole the patch
//! values a migration drops, following renames, and re-merging kept patches
//! once the schema can hold them (API.md guarantee 3).

use super::txn::Change;
use super::*;

impl Engine {
    pub(super) fn recount_pending(&mut self) -> Result<()> {
        let mut pending = 0u64;
        let mut after = None;
        loop {
            let page = store::read_kept_page(&self.conn, after, KEPT_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some((last.patch.origin, last.patch.seq));
            pending += page.iter().filter(|k| !self.fully_known(k)).count() as u64;
        }
        self.pending = pending;
        Ok(())
    }

    pub(super) fn fully_known(&self, k: &store::Kept) -> bool {
        if self.is_replic_ping(&k.patch.table) {
            return true; // nothing to apply, ever
        }
        let Some(t) = self.tables.get(&*k.patch.table) else {
            return false;
        };
        k.patch.columns.iter().all(|c| {
            c == schema::DELETED_COL || t.has(&self.map_column(&k.patch.table, c, k.schema_version))
        })
    }

    /// Map a column name written at schema `from` to the local schema,
    /// following declared renames forward (or backward on a downgrade).
    pub(super) fn map_column(&self, table: &str, col: &str, from: u32) -> String {
        let to = self.schema_version;
        let mut name = col.to_string();
        if from < to {
            for (v, t, o, n) in &self.renames {
                if *v > from && *v <= to && t == table && *o == name {
                    name = n.clone();
                }
            }
        } else if from > to {
            for (v, t, o, n) in self.renames.iter().rev() {
                if *v > to && *v <= from && t == table && *n == name {
                    name = o.clone();
                }
            }
        }
        name
    }

    // ----- schema ---------------------------------------------------------

    /// Bring the schema to `migrations.len()`, forward or backward, in one
    /// transaction; keep whole every patch value a migration drops; then
    /// re-merge kept patches the new schema can hold.
    pub fn migrate(&mut self, migrations: &[Migration]) -> Result<(u32, u32)> {
        self.check_open()?;
        let from = self.schema_version;
        let to = u32::try_from(migrations.len())
            .map_err(|_| Error::Range("too many migrations".into()))?;
        self.begin_tx()?;
        // A failed COMMIT (a deferred foreign key, a full disk) undoes the
        // migration like any other error.
        let res = self
            .migrate_in_tx(migrations, from, to)
            .and_then(|_| self.runs.borrow_mut().flush(&self.conn))
            .and_then(|_| tx::commit(&self.conn));
        match res {
            Ok(()) => {
                // Kept patches the new schema could apply: one 'change'.
                let changes = std::mem::take(&mut self.units.changes);
                self.note_remote_changes(changes);
                self.recount_pending()?;
                self.load_kept_bytes()?;
                Ok((from, to))
            }
            Err(e) => {
                tx::rollback(&self.conn);
                self.units.changes.clear();
                self.schema_version = from;
                self.runs.borrow_mut().discard();
                let _ = self.refresh_schema(false);
                Err(e)
            }
        }
    }

    pub(super) fn migrate_in_tx(
        &mut self,
        migrations: &[Migration],
        from: u32,
        to: u32,
    ) -> Result<()> {
        let mut steps: Vec<(u32, String)> = Vec::new();
        if to > from {
            for (i, m) in migrations.iter().enumerate().skip(from as usize) {
                let v = i as u32 + 1;
                meta::record_migration(&self.conn, v, &m.up, m.down.as_deref(), Some(&m.renames))?;
                steps.push((v, m.up.clone()));
            }
        } else if to < from {
            for v in ((to + 1)..=from).rev() {
                let down = match meta::down_step(&self.conn, v)? {
                    Some(d) => d,
                    None => migrations
                        .get(v as usize - 1)
                        .and_then(|m| m.down.clone())
                        .ok_or_else(|| {
                            schema_err(format!(
                                "migration {v} has no down step; cannot go back to version {to}"
                            ))
                        })?,
                };
                steps.push((v - 1, down));
            }
        }
        for (v, sql) in &steps {
            // Names in the patch tables are those of the version before the step.
            let before = if to > from { v - 1 } else { v + 1 };
            // The step's renames, as (table, name before, name after).
            let path: Vec<(String, String, String)> = if to > from {
                migrations
                    .get(*v as usize - 1)
                    .map(|m| m.renames.clone())
                    .unwrap_or_default()
            } else {
                self.renames
                    .iter()
                    .rev()
                    .filter(|r| r.0 == before)
                    .map(|r| (r.1.clone(), r.3.clone(), r.2.clone()))
                    .collect()
            };
            self.keep_dropped(sql, before, &path)?;
            self.conn
                .execute_batch(sql)
                .map_err(|e| schema_err(format!("migration to version {v} failed: {e}")))?;
        }
        self.schema_version = to;
        self.refresh_schema(!steps.is_empty())?;
        self.save_state()?;
        self.replay_kept()?;
        Ok(())
    }

    /// Dry-run a migration step in a savepoint to learn which replicated
    /// tables and columns it drops, then copy the patches holding values for
    /// them into `_quilt_kept` (named as of `version`, the schema before the
    /// step) before the step runs for real. Leaves `self.tables` as the step
    /// leaves them, so the next step of the same `migrate()` compares with
    /// what is really there (a column a previous step dropped is not read:
    /// `"col"` of a missing column would read as the text 'col').
    pub(super) fn keep_dropped(
        &mut self,
        sql: &str,
        version: u32,
        renames: &[(String, String, String)],
    ) -> Result<()> {
        if self.tables.is_empty() {
            return Ok(());
        }
        tx::savepoint(&self.conn, &tx::PROBE)?;
        let probe = self
            .conn
            .execute_batch(sql)
            .map_err(Error::from)
            .and_then(|_| schema::load_tables(&self.conn));
        tx::rollback_to(&self.conn, &tx::PROBE)?;
        let mut after = match probe {
            Ok(t) => t,
            Err(_) => return Ok(()), // the real run reports the error
        };
        for t in self.tables.values() {
            let dropped: Vec<&String> = match after.get(&t.name) {
                None => t.columns.iter().collect(),
                Some(a) => t.columns.iter().filter(|c| !a.has(c)).collect(),
            };
            if dropped.is_empty() {
                continue;
            }
            // Any explicit NULL may be one of the dropped columns: the
            // patches read below are checked one by one.
            let cols = after.contains_key(&t.name).then_some(dropped.as_slice());
            for o in patches::origins_touching(&self.conn, t, cols)? {
                for p in patches::read_patches(
                    &self.conn,
                    &mut self.runs.borrow_mut(),
                    t,
                    o as u32,
                    1,
                    u64::MAX >> 1,
                    usize::MAX >> 1,
                )? {
                    let touches = p.columns.iter().any(|c| dropped.contains(&c));
                    if touches {
                        store::insert_kept(&self.conn, &p, version)?;
                    }
                }
            }
        }
        // The next step reads patch rows (their null bitmaps) with the
        // ordinals the columns have now, following this step's renames.
        let path: Vec<(&str, &str, &str)> = renames
            .iter()
            .map(|(t, a, b)| (t.as_str(), a.as_str(), b.as_str()))
            .collect();
        for (name, next) in after.iter_mut() {
            if let Some(prev) = self.tables.get(name) {
                crate::core::ordinals::carry(prev, next, &path);
            }
        }
        // Only tables that already have quilt's hidden column and index
        // (created before this migrate()) can hold patches to keep.
        let kept = after
            .into_iter()
            .filter(|(name, _)| self.tables.contains_key(name))
            .collect();
        self.set_tables(kept);
        Ok(())
    }

    /// Re-merge every kept patch the schema can now hold (LWW makes this
    /// idempotent and order-free).
    pub(super) fn replay_kept(&mut self) -> Result<()> {
        let mut after = None;
        loop {
            let page = store::read_kept_page(&self.conn, after, KEPT_PAGE)?;
            let Some(last) = page.last() else { break };
            after = Some((last.patch.origin, last.patch.seq));
            for k in page {
                // A part of an atomic unit waits for the rest (units.rs).
                if !self.in_waiting_group(k.patch.origin, k.patch.seq) {
                    // Reported after the commit, as one batch (migrate).
                    if let Some(c) = self.replay_one(k)? {
                        self.units.changes.push(c);
                    }
                }
            }
        }
        Ok(())
    }

    /// Apply a kept patch as far as the schema holds it; the change it made
    /// when someone listens to `'change'`.
    pub(super) fn replay_one(&mut self, k: store::Kept) -> Result<Option<Change>> {
        let Some(t) = self.tables.get(&*k.patch.table) else {
            return Ok(None);
        };
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for (c, v) in k.patch.columns.iter().zip(&k.patch.values) {
            if let Some(&i) = t.index.get(&self.map_column(&t.name, c, k.schema_version)) {
                cols.push(i);
                vals.push(v.clone());
            }
        }
        if !t.pk_index.iter().all(|p| cols.contains(p)) {
            return Ok(None);
        }
        let stamp = Stamp {
            at: k.patch.at,
            peer: k.patch.origin,
            seq: k.patch.seq,
        };
        let rp = RowPatch {
            stamp,
            cols: &cols,
            values: &vals,
        };
        // The patch row holds what the schema can hold now; a patch the
        // schema holds whole leaves the kept table.
        let is_delete = k.patch.columns.last().map(String::as_str) == Some(schema::DELETED_COL);
        let mut runs = self.runs.borrow_mut();
        patches::delete_patch(&self.conn, &mut runs, t, stamp.peer, stamp.seq)?;
        if is_delete {
            let mut st = self
                .conn
                .prepare_cached(&store::patch_insert_sql(t, &cols))?;
            store::bind_deletion_row(&mut st, stamp, &vals)?;
            st.raw_execute()?;
        } else {
            store::insert_patch_row(&self.conn, t, &store::patch_insert_sql(t, &cols), &rp)?;
        }
        if t.rowid {
            runs.note(
                &t.name_arc,
                stamp.peer,
                stamp.seq,
                self.conn.last_insert_rowid(),
            );
        }
        drop(runs);
        let won = if is_delete {
            let pk: Vec<Value> = t
                .pk_index
                .iter()
                .filter_map(|i| cols.iter().position(|c| c == i))
                .map(|p| vals[p].clone())
                .collect();
            usize::from(store::apply_delete(&self.conn, t, &pk, stamp)?)
        } else {
            store::apply_remote(&self.conn, t, &rp, None)?
        };
        let change = match (won > 0 && self.collecting_changes(), is_delete) {
            (false, _) => None,
            (true, true) => Some(Change::deletion(t, stamp.peer, &rp)),
            (true, false) => Some(self.remote_change(t, &rp)?),
        };
        if cols.len() + usize::from(is_delete) == k.patch.columns.len() {
            store::delete_kept(&self.conn, stamp.peer, stamp.seq)?;
        }
        Ok(change)
    }
}

/// The table name replic-sqlite gives its persistent pings. They hold a
/// sequence number of their origin but no data: kept (so the origin's stream
/// has no hole and they can be served), never pending, never applied.
pub const REPLIC_PING_TABLE: &str = "_";

/// `_quilt_meta` key set once a replic-sqlite file has been taken over.
const ADOPTED_KEY: &str = "replic_adopted";

impl Engine {
    /// A kept patch of replic-sqlite's ping table (and no local table `_`).
    pub(super) fn is_replic_ping(&self, table: &str) -> bool {
        table == REPLIC_PING_TABLE && !self.tables.contains_key(REPLIC_PING_TABLE)
    }

    /// Take over a file written by replic-sqlite, once: its recorded
    /// migrations become quilt's (so `migrate()` with the app's list runs
    /// nothing twice), and its `pending_patches` (patches of other schema
    /// versions, and its pings) are kept whole in `_quilt_kept`, to be
    /// applied by the next `migrate()` the schema allows. Quilt's own files
    /// (no replic tables, or already taken over) are left as they are.
    pub(super) fn adopt_replic(&mut self) -> Result<()> {
        if !schema::is_replic_file(&self.conn)? {
            return Ok(());
        }
        if meta::exists(&self.conn, ADOPTED_KEY)? {
            return Ok(());
        }
        let before = self.schema_version;
        self.begin_tx()?;
        match self.adopt_replic_in_tx() {
            Ok(()) => {
                tx::commit(&self.conn)?;
                Ok(())
            }
            Err(e) => {
                tx::rollback(&self.conn);
                self.schema_version = before;
                self.saved.set(None);
                Err(e)
            }
        }
    }

    fn adopt_replic_in_tx(&mut self) -> Result<()> {
        let ours = meta::migration_count(&self.conn)?;
        if self.schema_version == 0 && ours == 0 {
            let mut version = 0u32;
            for (id, up, down) in meta::replic_steps(&self.conn)? {
                let Ok(v) = u32::try_from(id) else {
                    return Err(schema_err(format!(
                        "replic-sqlite migration id {id} is out of range"
                    )));
                };
                // replic-sqlite stores '' for "no down step".
                let down = down.filter(|d| !d.trim().is_empty());
                meta::record_migration(&self.conn, v, &up, down.as_deref(), None)?;
                version = version.max(v);
            }
            self.schema_version = version;
            self.save_state()?;
        }
        let mut imported = 0u64;
        // A row SQLite cannot read as JSON (its `delta` is None) is kept out
        // rather than trusted.
        for (at, origin, seq, version, table, delta) in meta::replic_pending(&self.conn)? {
            let (Ok(at), Ok(origin), Ok(seq), Ok(version)) = (
                u64::try_from(at),
                u32::try_from(origin),
                u64::try_from(seq),
                u32::try_from(version),
            ) else {
                continue;
            };
            if origin == 0 || seq == 0 || table.is_empty() {
                continue;
            }
            let Some(delta) = delta else { continue };
            let (columns, values) = if table == REPLIC_PING_TABLE {
                // Its content (the sender's peer stats) means nothing here;
                // kept as one JSON text so the patch stays whole.
                (
                    vec![REPLIC_PING_TABLE.to_string()],
                    vec![Value::Text(delta)],
                )
            } else {
                // A NULL in a replic-sqlite patch means "not set": left out.
                meta::json_members(&self.conn, &delta)?
                    .into_iter()
                    .filter_map(|(k, v)| k.filter(|k| !k.is_empty()).map(|k| (k, v)))
                    .unzip()
            };
            if columns.is_empty() {
                continue;
            }
            let p = Patch {
                table: Arc::from(table.as_str()),
                origin,
                seq,
                at: at.min(hlc::MAX_HLC),
                columns: Arc::new(columns),
                values,
            };
            store::insert_kept(&self.conn, &p, version)?;
            imported += 1;
        }
        meta::set(&self.conn, ADOPTED_KEY, imported as i64)?;
        Ok(())
    }
}
