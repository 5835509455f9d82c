//! Schema changes: migrations forward and back, keeping whole the patch
//! values a migration drops, following renames, and re-merging kept patches
//! once the schema can hold them (API.md guarantee 3).

use super::*;

impl Engine {
    pub(super) fn recount_pending(&mut self) -> Result<()> {
        let kept = store::read_kept(&self.conn, None)?;
        self.pending = kept.iter().filter(|k| !self.fully_known(k)).count() as u64;
        Ok(())
    }

    pub(super) fn fully_known(&self, k: &store::Kept) -> bool {
        let Some(t) = self.tables.get(&*k.patch.table) else {
            return false;
        };
        k.patch
            .columns
            .iter()
            .all(|c| t.has(&self.map_column(&k.patch.table, c, k.schema_version)))
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
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let res = self.migrate_in_tx(migrations, from, to);
        match res {
            Ok(()) => {
                self.conn.execute_batch("COMMIT")?;
                self.recount_pending()?;
                Ok((from, to))
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.schema_version = from;
                let _ = self.refresh_schema();
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
        let tx = &self.conn;
        let mut steps: Vec<(u32, String)> = Vec::new();
        if to > from {
            for (i, m) in migrations.iter().enumerate().skip(from as usize) {
                let v = i as u32 + 1;
                let renames = rmp_serde::to_vec(&m.renames).unwrap_or_default();
                tx.execute(
                    "INSERT OR REPLACE INTO _quilt_migrations(version, up, down, renames) VALUES(?,?,?,?)",
                    rusqlite::params![v as i64, m.up, m.down, renames],
                )?;
                steps.push((v, m.up.clone()));
            }
        } else if to < from {
            for v in ((to + 1)..=from).rev() {
                let down: Option<Option<String>> = tx
                    .query_row(
                        "SELECT down FROM _quilt_migrations WHERE version=?",
                        [v as i64],
                        |r| r.get(0),
                    )
                    .optional()?;
                let down = match down.flatten() {
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
            self.keep_dropped(sql)?;
            self.conn
                .execute_batch(sql)
                .map_err(|e| schema_err(format!("migration to version {v} failed: {e}")))?;
        }
        self.schema_version = to;
        self.refresh_schema()?;
        self.save_state()?;
        self.replay_kept()?;
        Ok(())
    }

    /// Dry-run a migration step in a savepoint to learn which replicated
    /// tables and columns it drops, then copy the patches holding values for
    /// them into `_quilt_kept` before the step runs for real.
    pub(super) fn keep_dropped(&mut self, sql: &str) -> Result<()> {
        if self.tables.is_empty() {
            return Ok(());
        }
        self.conn.execute_batch("SAVEPOINT quilt_probe")?;
        let probe = self
            .conn
            .execute_batch(sql)
            .map_err(Error::from)
            .and_then(|_| schema::load_tables(&self.conn));
        self.conn
            .execute_batch("ROLLBACK TO quilt_probe; RELEASE quilt_probe")?;
        let after = match probe {
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
            let cond = if after.contains_key(&t.name) {
                dropped
                    .iter()
                    .map(|c| {
                        format!(
                            "{0} IS NOT NULL OR instr(','||ifnull({1},'')||',', ','||'{2}'||',')>0",
                            q(c),
                            schema::NULLS_COL,
                            c.replace('\'', "''")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" OR ")
            } else {
                "1".into()
            };
            let sql = format!(
                "SELECT DISTINCT _peerId FROM {} WHERE {cond}",
                q(&t.patches())
            );
            let origins: Vec<i64> = {
                let mut st = self.conn.prepare(&sql)?;
                let r = st.query_map([], |r| r.get(0))?;
                r.collect::<rusqlite::Result<_>>()?
            };
            for o in origins {
                for p in
                    store::read_patches(&self.conn, t, o as u32, 1, u64::MAX >> 1, usize::MAX >> 1)?
                {
                    let touches = p.columns.iter().any(|c| dropped.contains(&c));
                    if touches {
                        store::insert_kept(&self.conn, &p, self.schema_version)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Re-merge every kept patch the schema can now hold (LWW makes this
    /// idempotent and order-free).
    pub(super) fn replay_kept(&mut self) -> Result<()> {
        for k in store::read_kept(&self.conn, None)? {
            let Some(t) = self.tables.get(&*k.patch.table) else {
                continue;
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
                continue;
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
            self.conn
                .prepare_cached(&format!(
                    "DELETE FROM {} WHERE _peerId = ?1 AND _sequenceId = ?2",
                    q(&t.patches())
                ))?
                .execute(rusqlite::params![stamp.peer as i64, stamp.seq as i64])?;
            store::insert_patch_row(&self.conn, t, &store::patch_insert_sql(t, &cols), &rp)?;
            store::apply_remote(&self.conn, t, &rp, None)?;
            if cols.len() == k.patch.columns.len() {
                self.conn
                    .prepare_cached("DELETE FROM _quilt_kept WHERE origin = ?1 AND seq = ?2")?
                    .execute(rusqlite::params![stamp.peer as i64, stamp.seq as i64])?;
            }
        }
        Ok(())
    }
}
