//! The napi side of captured SQL (`exec`, prepared statements), of
//! `transaction(fn)` and of `'change'` records. `lib/sql.js` builds the
//! better-sqlite3-shaped `Statement` and `transaction` on top of these.

use super::{JsOut, JsParams, JsRows, JsSql, JsUtf16, NativeReplicator, OrJs};
use crate::core::engine::{Change, Params, PreparedSql, SqlMode};
use napi::bindgen_prelude::*;
use napi_derive::napi;

/// What `prepare()` learned about a statement.
#[napi(object, object_from_js = false)]
pub struct NativeStatementInfo {
    /// It returns rows.
    pub reader: bool,
    /// It writes nothing.
    pub readonly: bool,
    /// Parameter names in binding order (all named), else null: lets
    /// `lib/sql.js` pass an object's values as an array.
    pub params: Option<Vec<String>>,
    /// How many parameters it binds.
    pub count: u32,
    /// Its result column names (empty when it returns no rows).
    pub columns: Vec<String>,
    /// Passed back to `run`/`sqlAll`/`sqlGet` (no SQL text per call).
    #[napi(ts_type = "ExternalObject<unknown>")]
    pub handle: External<PreparedSql>,
}

/// `getPacked`'s result.
pub enum PackedRow {
    /// No row: `undefined`.
    None,
    /// The row packed into `io`; its strings joined.
    Text(String),
    /// The row as an object.
    Row(JsRows),
}

impl ToNapiValue for PackedRow {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
        match val {
            PackedRow::None => <()>::to_napi_value(env, ()),
            PackedRow::Text(t) => String::to_napi_value(env, t),
            PackedRow::Row(r) => JsRows::to_napi_value(env, r),
        }
    }
}

/// One changed row of a `'change'` event.
#[napi(object, object_from_js = false)]
pub struct NativeChange {
    pub table: String,
    /// Primary-key column to value.
    #[napi(ts_type = "Record<string, unknown>")]
    pub key: JsRows,
    pub columns: Vec<String>,
    pub origin: u32,
    pub deleted: bool,
}

fn params(p: &Option<JsParams>) -> Params<'_> {
    match p {
        None => Params::Positional(&[]),
        Some(JsParams::Positional(v)) => Params::Positional(v),
        Some(JsParams::Named(n)) => Params::Named(n),
    }
}

impl NativeReplicator {
    /// `sqlAll`/`sqlGet`: the rows `mode` asks for, as `JsRows`.
    fn rows(
        &mut self,
        env: &Env,
        handle: &PreparedSql,
        params: Params<'_>,
        mode: SqlMode,
    ) -> Result<JsRows> {
        let out = self.e(env)?.run_prepared(handle, params, mode).js(env)?;
        Ok(JsRows {
            names: result_names(handle, out.names, out.names_as_prepared),
            rows: out.rows,
            one: mode == SqlMode::Get,
        })
    }
}

/// A run's result column names (the statement's own when they are as
/// prepared).
fn result_names(handle: &PreparedSql, names: Vec<String>, as_prepared: bool) -> Vec<String> {
    if as_prepared {
        handle.columns().to_vec()
    } else {
        names
    }
}

fn change(c: Change) -> NativeChange {
    let (names, values) = c.key.into_iter().unzip();
    NativeChange {
        table: c.table,
        key: JsRows {
            names,
            rows: vec![values],
            one: true,
        },
        columns: c.columns,
        origin: c.origin,
        deleted: c.deleted,
    }
}

#[napi]
impl NativeReplicator {
    /// Run every statement of `sql` in one transaction; writes to
    /// replicated tables are captured. Returns the current token.
    #[napi(catch_unwind, ts_args_type = "sql: string")]
    pub fn exec(&mut self, env: Env, sql: JsSql) -> Result<String> {
        self.e(&env)?.exec_sql(&sql.0).js(&env)
    }

    /// Compile one statement (cached) and say what it is.
    #[napi(catch_unwind, ts_args_type = "sql: string")]
    pub fn prepare(&mut self, env: Env, sql: JsSql) -> Result<NativeStatementInfo> {
        let info = self.e(&env)?.prepare_sql(&sql.0).js(&env)?;
        Ok(NativeStatementInfo {
            reader: info.reader,
            readonly: info.readonly,
            params: info.params,
            count: u32::try_from(info.count).unwrap_or(u32::MAX),
            columns: info.prepared.columns().to_vec(),
            handle: External::new(info.prepared),
        })
    }

    /// Run a prepared statement to its end; `out` receives `[changes,
    /// lastInsertRowid, seq]` (no result object to build per call; the
    /// token is `"<peerId>.<seq>"`).
    #[napi(
        catch_unwind,
        ts_args_type = "handle: ExternalObject<unknown>, params: unknown, out: Float64Array"
    )]
    pub fn run(
        &mut self,
        env: Env,
        handle: &External<PreparedSql>,
        params_: Option<JsParams>,
        out: JsOut,
    ) -> Result<()> {
        let r = self
            .e(&env)?
            .run_prepared(handle, params(&params_), SqlMode::Run)
            .js(&env)?;
        out.set(&[r.changes as f64, r.last_insert_rowid as f64, r.seq as f64]);
        Ok(())
    }

    /// `run` with its parameters packed by `lib/sql.js` (no N-API call
    /// per parameter): in `io` from index 3 a tag per parameter, then
    /// their numbers; their strings joined in `text`. `io[0..3]` receives
    /// `[changes, lastInsertRowid, seq]` as `run`'s `out` does.
    #[napi(
        catch_unwind,
        ts_args_type = "handle: ExternalObject<unknown>, io: Float64Array, text: string"
    )]
    pub fn run_packed(
        &mut self,
        env: Env,
        handle: &External<PreparedSql>,
        io: JsOut,
        text: JsUtf16,
    ) -> Result<()> {
        let values = io.params(env.raw(), 3, &text.0)?;
        let r = self
            .e(&env)?
            .run_prepared(handle, Params::Positional(&values), SqlMode::Run)
            .js(&env)?;
        io.set(&[r.changes as f64, r.last_insert_rowid as f64, r.seq as f64]);
        Ok(())
    }

    /// Every row of a prepared statement (writes are captured).
    #[napi(
        catch_unwind,
        ts_args_type = "handle: ExternalObject<unknown>, params?: unknown",
        ts_return_type = "any"
    )]
    pub fn sql_all(
        &mut self,
        env: Env,
        handle: &External<PreparedSql>,
        params_: Option<JsParams>,
    ) -> Result<JsRows> {
        self.rows(&env, handle, params(&params_), SqlMode::All)
    }

    /// The first row of a prepared statement, or undefined.
    #[napi(
        catch_unwind,
        ts_args_type = "handle: ExternalObject<unknown>, params?: unknown",
        ts_return_type = "any"
    )]
    pub fn sql_get(
        &mut self,
        env: Env,
        handle: &External<PreparedSql>,
        params_: Option<JsParams>,
    ) -> Result<JsRows> {
        self.rows(&env, handle, params(&params_), SqlMode::Get)
    }

    /// `sqlAll` (`one` false) or `sqlGet` (`one` true) with parameters
    /// packed as for `runPacked` (nothing is written back).
    #[napi(
        catch_unwind,
        ts_args_type = "handle: ExternalObject<unknown>, io: Float64Array, text: string, one: boolean",
        ts_return_type = "any"
    )]
    pub fn rows_packed(
        &mut self,
        env: Env,
        handle: &External<PreparedSql>,
        io: JsOut,
        text: JsUtf16,
        one: bool,
    ) -> Result<JsRows> {
        let values = io.params(env.raw(), 3, &text.0)?;
        let mode = if one { SqlMode::Get } else { SqlMode::All };
        self.rows(&env, handle, Params::Positional(&values), mode)
    }

    /// `get` with packed parameters (as `rowsPacked`) and, when it can, a
    /// packed row: when the row's columns are the statement's as prepared
    /// (`columns` of `prepare`), each value null, text or a number
    /// (integers within 2^53), and `io` has room, `io` from index 3 gets a
    /// tag per column, then each one's number (a string's UTF-16 length),
    /// and the result is every string joined. Otherwise the row object, or
    /// undefined when there is no row.
    #[napi(
        catch_unwind,
        ts_args_type = "handle: ExternalObject<unknown>, io: Float64Array, text: string",
        ts_return_type = "string | Record<string, unknown> | undefined"
    )]
    pub fn get_packed(
        &mut self,
        env: Env,
        handle: &External<PreparedSql>,
        io: JsOut,
        text: JsUtf16,
    ) -> Result<PackedRow> {
        let values = io.params(env.raw(), 3, &text.0)?;
        let mut out = self
            .e(&env)?
            .run_prepared(handle, Params::Positional(&values), SqlMode::Get)
            .js(&env)?;
        let Some(row) = out.rows.pop() else {
            return Ok(PackedRow::None);
        };
        if out.names_as_prepared {
            if let Some(text) = io.pack_row(3, &row) {
                return Ok(PackedRow::Text(text));
            }
        }
        Ok(PackedRow::Row(JsRows {
            names: result_names(handle, out.names, out.names_as_prepared),
            rows: vec![row],
            one: true,
        }))
    }

    /// `transaction(fn)` starts (nested: a savepoint).
    #[napi(catch_unwind)]
    pub fn begin(&mut self, env: Env) -> Result<()> {
        self.e(&env)?.begin_transaction().js(&env)
    }

    /// `transaction(fn)` returned: commit.
    #[napi(catch_unwind)]
    pub fn commit(&mut self, env: Env) -> Result<()> {
        self.e(&env)?.commit_transaction().js(&env)
    }

    /// `transaction(fn)` threw: roll back.
    #[napi(catch_unwind)]
    pub fn rollback(&mut self, env: Env) -> Result<()> {
        self.e(&env)?.rollback_transaction().js(&env)
    }

    /// True while a `transaction(fn)` is open.
    #[napi]
    pub fn in_transaction(&mut self, env: Env) -> Result<bool> {
        Ok(self.e(&env)?.in_transaction())
    }

    /// Collect `'change'` records (someone listens) or not.
    #[napi]
    pub fn collect_changes(&mut self, env: Env, on: bool) -> Result<()> {
        self.e(&env)?.collect_changes(on);
        Ok(())
    }

    /// Committed batches of changes since the last call.
    #[napi(catch_unwind)]
    pub fn take_changes(&mut self) -> Result<Vec<Vec<NativeChange>>> {
        let Some(e) = self.engine.as_mut() else {
            return Ok(Vec::new());
        };
        Ok(e.take_changes()
            .into_iter()
            .map(|b| b.into_iter().map(change).collect())
            .collect())
    }
}
