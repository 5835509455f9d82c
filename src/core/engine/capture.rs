//! Captured SQL: `exec(sql)` and prepared statements (`run`/`all`/`get`).
//!
//! User SQL runs on the engine's connection inside a unit (txn.rs). While it
//! is compiled and stepped, the fence and the preupdate hook watch it
//! (fence.rs): the fence refuses what user SQL may not do, the hook copies
//! the old and new values of every row it changes in a replicated table
//! into a buffer.
//!
//! When the statement is done, still inside the unit, the buffer becomes
//! patches: per row, its first old image and last new image. A new row
//! gives a patch of the whole row; a changed row a patch of its key and the
//! columns whose value changed (none changed: no patch); a deleted row goes
//! to [`Engine::record_delete`]. Patches are stamped and stored exactly like
//! `upsert`'s (`write_checked` without the base-row upsert: the user's SQL
//! already changed the base row). Tables without a `_patches` twin are not
//! watched: their writes stay local. quilt's own writes happen with the
//! hook removed and the fence down, so they are never captured.

use super::fence::{user_err, RawChange, Watch};
use super::read::order_params;
use super::*;
use crate::core::batch::Batch;

/// Every user statement is cached under this prefix, apart from quilt's own
/// statements and from reads (which are compiled behind the read fence).
const SQL_TAG: &str = "/*quilt:sql*/ ";

/// How a statement's rows are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlMode {
    /// Step to the end; no rows.
    Run,
    /// Every row.
    All,
    /// The first row (a writing statement still runs to the end).
    Get,
}

/// The result of a statement (`run()`, `all()`, `get()`).
#[derive(Debug, Clone, Default)]
pub struct SqlOutput {
    /// Rows the statement inserted, updated or deleted (`sqlite3_changes`).
    pub changes: u64,
    pub last_insert_rowid: i64,
    /// This peer's seq after the statement: its session token is
    /// `"<peerId>.<seq>"` (`Engine::token`).
    pub seq: u64,
    /// Result column names; empty when they are the statement's columns
    /// as prepared (`names_as_prepared`: no copy per call).
    pub names: Vec<String>,
    pub names_as_prepared: bool,
    pub rows: Vec<Vec<Value>>,
}

/// What `prepare()` learns about a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    /// It returns rows (`all`/`get`/`iterate` make sense).
    pub reader: bool,
    /// It writes nothing.
    pub readonly: bool,
    /// The name of each parameter, without its `@`/`:`/`$`, in binding
    /// order; `None` when one of them is positional (`?`).
    pub params: Option<Vec<String>>,
    /// How many parameters it binds.
    pub count: usize,
    /// What each `run`/`all`/`get` of it needs (the binding keeps it with
    /// the JS statement, so no SQL text crosses per call).
    pub prepared: PreparedSql,
}

/// A statement `prepare()` compiled: its cache key and what does not
/// change between runs (a statement's kind is fixed by its text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSql {
    /// The statement-cache key (`tagged`).
    key: String,
    /// It may be DDL (`maybe_ddl`): a run reads the schema cookie.
    ddl: bool,
    readonly: bool,
    /// Its result columns when prepared (a schema change may change them
    /// for `SELECT *`; a run then reports its own).
    columns: Vec<String>,
}

impl PreparedSql {
    /// The result column names it had when prepared.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

/// One row's first old image and last new image within a unit of capture.
struct Touched {
    table: String,
    old: Option<Vec<Value>>,
    new: Option<Vec<Value>>,
}

/// Patches of one table waiting to be written together (cells name the
/// table's column ordinals).
struct Pending {
    table: String,
    rows: Batch,
}

impl Pending {
    fn write(self, e: &mut Engine) -> Result<()> {
        e.write_ordinals(&self.table, &self.rows, false)
    }
}

impl Engine {
    /// Replicated table names for the fence (`set_tables` forgets them
    /// when the tables change).
    fn fence_names(&self) -> Arc<HashSet<String>> {
        let mut cached = self.units.fence.borrow_mut();
        if let Some(names) = cached.as_ref() {
            return names.clone();
        }
        let names: Arc<HashSet<String>> = Arc::new(self.tables.keys().cloned().collect());
        *cached = Some(names.clone());
        names
    }

    fn schema_cookie(&self) -> Result<i64> {
        schema::cookie(&self.conn)
    }

    /// After user DDL (the schema cookie moved): the fence refuses DDL on
    /// replicated tables by name, but a rename or a table created next to
    /// an orphan `_patches` table could still change which tables are
    /// replicated; that only `migrate()` may do.
    fn check_replicated_set(&self, cookie: i64) -> Result<()> {
        if self.schema_cookie()? == cookie {
            return Ok(());
        }
        let now = schema::load_tables(&self.conn)?;
        if now.keys().ne(self.tables.keys()) {
            return Err(schema_err(
                "this statement would change which tables are replicated (a table and its _patches twin); use migrate() for that",
            ));
        }
        Ok(())
    }

    /// `prepare(sql)`: compile once behind the fence (errors show at once).
    pub fn prepare_sql(&mut self, sql: &str) -> Result<StatementInfo> {
        self.check_open()?;
        let _watch = Watch::start(&self.conn, self.fence_names(), false);
        let key = tagged(sql);
        let st = self
            .conn
            .prepare_cached(&key)
            .map_err(|e| user_err(e.into()))?;
        let prepared = PreparedSql {
            key,
            ddl: maybe_ddl(sql),
            readonly: st.readonly(),
            columns: st.column_names().into_iter().map(String::from).collect(),
        };
        let count = st.parameter_count();
        let params = (1..=count)
            .map(|i| {
                st.parameter_name(i)
                    .filter(|n| !n.starts_with('?'))
                    .and_then(|n| n.get(1..))
                    .map(String::from)
            })
            .collect();
        Ok(StatementInfo {
            reader: st.column_count() > 0,
            readonly: prepared.readonly,
            params,
            count,
            prepared,
        })
    }

    /// `exec(sql)`: every statement of `sql`, in one unit, captured.
    pub fn exec_sql(&mut self, sql: &str) -> Result<String> {
        self.check_open()?;
        self.in_unit(|e| {
            let cookie = e.schema_cookie()?;
            let raw = {
                let mut watch = Watch::start(&e.conn, e.fence_names(), true);
                let mut batch = rusqlite::Batch::new(&e.conn, sql);
                while let Some(mut st) =
                    rusqlite::fallible_iterator::FallibleIterator::next(&mut batch)
                        .map_err(|e| user_err(e.into()))?
                {
                    let mut rows = st.raw_query();
                    while rows.next().map_err(|e| user_err(e.into()))?.is_some() {}
                }
                watch.take()
            };
            e.check_replicated_set(cookie)?;
            e.capture(raw)?;
            Ok(e.token())
        })
    }

    /// [`Engine::run_prepared`] of `sql`, prepared first (cached).
    pub fn run_sql(&mut self, sql: &str, params: Params, mode: SqlMode) -> Result<SqlOutput> {
        let p = self.prepare_sql(sql)?.prepared;
        self.run_prepared(&p, params, mode)
    }

    /// `run`/`all`/`get` of a prepared statement. A statement that writes
    /// runs in its own unit (a light one inside `transaction(fn)`: txn.rs)
    /// and its changes to replicated tables are captured.
    pub fn run_prepared(
        &mut self,
        p: &PreparedSql,
        params: Params,
        mode: SqlMode,
    ) -> Result<SqlOutput> {
        self.check_open()?;
        // Inside a transaction a light unit costs nothing, so a read runs
        // in one too (the hook sees no change); outside, a read must not
        // take the write lock of a unit.
        if p.readonly && !self.units.live() {
            let (mut out, _) = self.step_sql(p, params, mode, false).map_err(|e| e.0)?;
            out.seq = self.seq;
            return Ok(out);
        }
        self.light_unit(|e| {
            // Only a statement that may be DDL can change which tables are
            // replicated; others skip reading the schema cookie.
            let cookie = if p.ddl {
                Some(e.schema_cookie()?)
            } else {
                None
            };
            let (mut out, raw) = match e.step_sql(p, params, mode, true) {
                Ok(r) => r,
                Err((err, raw)) => {
                    // Rows a failed statement changed may still be there
                    // (OR FAIL, RAISE(FAIL) in a trigger): then the
                    // transaction cannot go on (txn.rs, light units).
                    e.units.left_rows = e.changes_left(&raw).unwrap_or(true);
                    return Err(err);
                }
            };
            if let Some(c) = cookie {
                e.check_replicated_set(c)?;
            }
            e.capture(raw)?;
            out.seq = e.seq;
            Ok(out)
        })
    }

    /// Compile (cached), bind, step behind the fence; rows as `mode` asks.
    /// What the hook saw comes back on failure too.
    fn step_sql(
        &self,
        p: &PreparedSql,
        params: Params,
        mode: SqlMode,
        hook: bool,
    ) -> std::result::Result<(SqlOutput, Vec<RawChange>), (Error, Vec<RawChange>)> {
        let mut watch = Watch::start(&self.conn, self.fence_names(), hook);
        let run = || -> Result<SqlOutput> {
            let mut st = self.conn.prepare_cached(&p.key)?;
            let values = order_params(&st, params)?;
            for (i, v) in values.iter().enumerate() {
                st.raw_bind_parameter(i + 1, v)?;
            }
            let n = st.column_count();
            let readonly = st.readonly();
            let mut out = SqlOutput::default();
            if mode != SqlMode::Run {
                let now = st.column_names();
                if now.len() == p.columns.len() && now.iter().zip(&p.columns).all(|(a, b)| a == b) {
                    out.names_as_prepared = true;
                } else {
                    out.names = now.into_iter().map(String::from).collect();
                }
            }
            {
                let mut rows = st.raw_query();
                while let Some(r) = rows.next()? {
                    let keep = match mode {
                        SqlMode::Run => false,
                        SqlMode::All => true,
                        SqlMode::Get => out.rows.is_empty(),
                    };
                    if keep {
                        let mut row = Vec::with_capacity(n);
                        for i in 0..n {
                            row.push(r.get::<_, Value>(i)?);
                        }
                        out.rows.push(row);
                    } else if readonly && mode == SqlMode::Get {
                        break;
                    }
                }
            }
            if !readonly {
                out.changes = self.conn.changes();
                out.last_insert_rowid = self.conn.last_insert_rowid();
            }
            Ok(out)
        };
        match run() {
            Ok(out) => Ok((out, watch.take())),
            Err(e) => Err((user_err(e), watch.take())),
        }
    }

    /// After a statement failed: is any row the hook saw it change still
    /// changed? (Under the default ABORT, SQLite undid them all.) A row it
    /// changed must be as its old image shows; a row it inserted, or moved
    /// to a new key, must be absent. Conservative: a row changed twice by
    /// the statement counts as left behind.
    fn changes_left(&self, raw: &[RawChange]) -> Result<bool> {
        for r in raw {
            let Some(t) = self.tables.get(&r.table) else {
                continue;
            };
            let key = |img: &Vec<Value>| -> Option<Vec<Value>> {
                t.pk_index.iter().map(|&i| img.get(i).cloned()).collect()
            };
            let mut expect: Vec<(Vec<Value>, Option<&Vec<Value>>)> = Vec::new();
            if let Some(o) = &r.old {
                expect.push((key(o).unwrap_or_default(), Some(o)));
            }
            if let Some(n) = &r.new {
                let k = key(n).unwrap_or_default();
                if expect.first().is_none_or(|(ko, _)| *ko != k) {
                    expect.push((k, None));
                }
            }
            for (k, img) in expect {
                if k.len() != t.pk_index.len() {
                    return Ok(true);
                }
                let pk: Vec<&Value> = k.iter().collect();
                let now = store::read_base_row(&self.conn, t, &pk)?;
                let same = match (&now, img) {
                    (None, None) => true,
                    (Some(n), Some(o)) => {
                        n.len() == o.len() && n.iter().zip(o).all(|(a, b)| same_value(a, b))
                    }
                    _ => false,
                };
                if !same {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Turn the hook's buffer into patches (module docs).
    fn capture(&mut self, raw: Vec<RawChange>) -> Result<()> {
        if raw.is_empty() {
            return Ok(());
        }
        let single = raw.len() == 1;
        let mut rows: Vec<Touched> = Vec::with_capacity(raw.len());
        let mut at: HashMap<(String, String), usize> = HashMap::new();
        for r in raw {
            let Some(t) = self.tables.get(&r.table) else {
                continue;
            };
            let n = t.columns.len();
            if r.broken
                || [&r.old, &r.new]
                    .iter()
                    .any(|i| i.as_ref().is_some_and(|v| v.len() != n))
            {
                return Err(schema_err(format!(
                    "a changed row of {} could not be read in full (generated or hidden columns are not supported in replicated tables)",
                    t.name
                )));
            }
            let key = |row: &[Value]| {
                format!(
                    "{:?}",
                    t.pk_index.iter().map(|&i| &row[i]).collect::<Vec<_>>()
                )
            };
            let moved = |o: &[Value], n: &[Value]| t.pk_index.iter().any(|&i| o[i] != n[i]);
            if single && !matches!((&r.old, &r.new), (Some(o), Some(n)) if moved(o, n)) {
                // One row changed (a one-row statement): no folding to do.
                rows.push(Touched {
                    table: r.table,
                    old: r.old,
                    new: r.new,
                });
                continue;
            }
            let mut touch = |key: String, old: Option<Vec<Value>>, new: Option<Vec<Value>>| match at
                .get(&(r.table.clone(), key.clone()))
            {
                Some(&i) => rows[i].new = new,
                None => {
                    at.insert((r.table.clone(), key), rows.len());
                    rows.push(Touched {
                        table: r.table.clone(),
                        old,
                        new,
                    });
                }
            };
            match (r.old, r.new) {
                (Some(old), Some(new)) if moved(&old, &new) => {
                    // A key change: the old row goes, a new one comes.
                    touch(key(&old), Some(old), None);
                    touch(key(&new), None, Some(new));
                }
                (old, new) => {
                    let k = key(old.as_deref().or(new.as_deref()).unwrap_or_default());
                    touch(k, old, new);
                }
            }
        }
        // Consecutive patches of one table go through one write.
        let mut batch: Option<Pending> = None;
        for row in rows {
            let Some(t) = self.tables.get(&row.table) else {
                continue;
            };
            let (cols, vals): (Vec<usize>, Vec<Value>) = match (row.old, row.new) {
                (None, None) => continue,
                (Some(old), None) => {
                    let pk = t
                        .pk_index
                        .iter()
                        .map(|&i| (t.columns[i].clone(), old[i].clone()))
                        .collect();
                    let table = row.table;
                    if let Some(b) = batch.take() {
                        b.write(self)?;
                    }
                    self.record_delete(&table, pk)?;
                    continue;
                }
                (None, Some(new)) => ((0..new.len()).collect(), new),
                (Some(old), Some(new)) => new
                    .into_iter()
                    .enumerate()
                    .filter(|(i, v)| t.pk_index.contains(i) || !same_value(&old[*i], v))
                    .unzip(),
            };
            if cols.len() == t.pk_index.len() {
                continue; // nothing but the key: nothing changed
            }
            Self::check_key(t, &cols, |p| vals[p].is_null())?;
            if batch.as_ref().is_none_or(|b| b.table != row.table) {
                if let Some(b) = batch.take() {
                    b.write(self)?;
                }
            }
            let b = batch.get_or_insert_with(|| Pending {
                table: row.table,
                rows: Batch::default(),
            });
            for (i, v) in cols.into_iter().zip(&vals) {
                b.rows.push(i, v.to_ref());
            }
            b.rows.end_row();
        }
        if let Some(b) = batch {
            b.write(self)?;
        }
        Ok(())
    }

    /// THE capture point of SQL `DELETE` on a replicated table (also the old
    /// row of a primary-key change, and a row `INSERT OR REPLACE` removes
    /// for good): `pk` is the deleted row's key, `(column, value)` in key
    /// order, and the row is already gone from the base table (inside the
    /// open unit). It becomes a row deletion (write.rs `write_deletion`).
    pub(super) fn record_delete(&mut self, table: &str, pk: Vec<(String, Value)>) -> Result<()> {
        self.write_deletion(table, pk)
    }
}

/// The cache key of a user statement.
fn tagged(sql: &str) -> String {
    let mut s = String::with_capacity(SQL_TAG.len() + sql.len());
    s.push_str(SQL_TAG);
    s.push_str(sql);
    s
}

/// `sql` may be DDL: its first keyword, after blanks and comments, is
/// CREATE, DROP or ALTER (SQLite has no other DDL that could change which
/// tables are replicated). Unterminated comments count as maybe.
fn maybe_ddl(sql: &str) -> bool {
    let b = sql.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if b[i..].starts_with(b"--") {
            match b[i..].iter().position(|&c| c == b'\n') {
                Some(n) => i += n + 1,
                None => return false,
            }
        } else if b[i..].starts_with(b"/*") {
            match b[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(n) => i += n + 4,
                None => return true,
            }
        } else {
            break;
        }
    }
    let word = |kw: &[u8]| {
        b.len() >= i + kw.len()
            && b[i..i + kw.len()].eq_ignore_ascii_case(kw)
            && b.get(i + kw.len())
                .is_none_or(|c| !c.is_ascii_alphanumeric() && *c != b'_')
    };
    word(b"create") || word(b"drop") || word(b"alter")
}

/// Old and new image of a column hold the same value. A REAL column stores
/// an integral value as an integer, so the preupdate hook may show `85`
/// where a read shows `85.0`: numerically equal numbers are the same.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(i), Value::Real(f)) | (Value::Real(f), Value::Int(i)) => *f == *i as f64,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::maybe_ddl;

    #[test]
    fn ddl_is_found_behind_blanks_and_comments() {
        for sql in [
            "CREATE TABLE x (a)",
            "  drop table t",
            "-- note\n Alter TABLE t ADD b",
            "/* a */ /* b */create index i on t(a)",
            "/* never closed",
            "\tCREATE\nTABLE y(a)",
        ] {
            assert!(maybe_ddl(sql), "{sql}");
        }
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET created = 1",
            "SELECT 'create'",
            "createdAt",
            "-- create",
            "",
            "   ",
            "dropped",
        ] {
            assert!(!maybe_ddl(sql), "{sql}");
        }
    }
}
