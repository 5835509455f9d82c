//! The read path of `all()`/`get()`.
//!
//! Reads share the writer's connection (an in-memory database cannot be
//! opened twice), so they are fenced by a SQLite authorizer installed once
//! at open. Outside a read it hands over to the fence of captured SQL
//! (fence.rs), which allows everything unless user SQL of `exec()`/
//! `prepare()` is running; either way it costs nothing at run time: SQLite
//! consults it only while compiling a statement, and the write path's
//! statements are compiled once and cached. While a read is compiled
//! or stepped (a thread-local flag, set by [`Engine::query_with`]), it
//! allows only `SELECT`, column reads, functions, recursive CTEs and the
//! read-only PRAGMAs listed below, and refuses everything else: `ATTACH`,
//! `DETACH`, `BEGIN`/`COMMIT`/`ROLLBACK`, `SAVEPOINT`/`RELEASE`, PRAGMAs that
//! set something, and every write. A refused statement is never compiled, so
//! it cannot leave a transaction open or the connection changed, and
//! `sqlite3_stmt_readonly` is still checked on top (it catches `VACUUM`,
//! which no authorizer action names).
//!
//! The flag is thread-local rather than per engine because SQLite calls the
//! authorizer synchronously on the thread that prepares or steps, and an
//! engine is only ever used from one thread at a time.

use super::{Engine, Params};
use crate::core::error::{Error, Result};
use crate::core::value::Value;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};

thread_local! {
    /// True while this thread compiles or steps an `all()`/`get()` statement.
    static READING: Cell<bool> = const { Cell::new(false) };
    /// What the authorizer last refused during a read, for the message.
    static REFUSED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Every read statement is cached under this prefix, so a read never
/// reuses a statement the write path compiled without the fence.
const READ_TAG: &str = "/*quilt:read*/ ";

/// PRAGMAs allowed in a read with or without an argument: they report on
/// a table, an index or the file and change nothing.
const PRAGMA_WITH_ARG: &[&str] = &[
    "foreign_key_check",
    "foreign_key_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "quick_check",
    "table_info",
    "table_list",
    "table_xinfo",
];

/// PRAGMAs allowed in a read only without a value (`PRAGMA user_version`
/// reads it, `PRAGMA user_version = 5` would set it).
const PRAGMA_QUERY: &[&str] = &[
    "application_id",
    "auto_vacuum",
    "collation_list",
    "compile_options",
    "data_version",
    "database_list",
    "encoding",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "module_list",
    "page_count",
    "page_size",
    "pragma_list",
    "schema_version",
    "synchronous",
    "user_version",
];

/// Install the fence on the engine's connection (once, at open).
pub(super) fn install(conn: &Connection) {
    conn.authorizer(Some(authorize));
}

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    if !READING.with(Cell::get) {
        // User SQL of exec()/prepare() has its own fence (fence.rs).
        return super::fence::authorize(&ctx);
    }
    match refusal(&ctx.action) {
        None => Authorization::Allow,
        Some(what) => {
            REFUSED.with(|r| *r.borrow_mut() = Some(what));
            Authorization::Deny
        }
    }
}

/// What a read refuses in `action`, or `None` when the action is a read.
pub(crate) fn refusal(action: &AuthAction<'_>) -> Option<String> {
    let listed = |list: &[&str], name: &str| list.iter().any(|p| p.eq_ignore_ascii_case(name));
    Some(match action {
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Function { .. }
        | AuthAction::Recursive => return None,
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => {
            if listed(PRAGMA_WITH_ARG, pragma_name)
                || (pragma_value.is_none() && listed(PRAGMA_QUERY, pragma_name))
            {
                return None;
            }
            match pragma_value {
                Some(v) => format!("PRAGMA {pragma_name} = {v}"),
                None => format!("PRAGMA {pragma_name}"),
            }
        }
        AuthAction::Transaction { .. } => "a transaction statement (BEGIN/COMMIT/ROLLBACK)".into(),
        AuthAction::Savepoint { .. } => "SAVEPOINT/RELEASE".into(),
        AuthAction::Attach { .. } => "ATTACH".into(),
        AuthAction::Detach { .. } => "DETACH".into(),
        AuthAction::Insert { table_name } => format!("a write (INSERT into {table_name})"),
        AuthAction::Update { table_name, .. } => format!("a write (UPDATE of {table_name})"),
        AuthAction::Delete { table_name } => format!("a write (DELETE from {table_name})"),
        other => format!("a schema or maintenance change ({other:?})"),
    })
}

/// Fences one read: set on entry, cleared on drop (also on early return).
struct Fence(bool);

impl Fence {
    fn enter() -> Fence {
        REFUSED.with(|r| r.borrow_mut().take());
        Fence(READING.with(|r| r.replace(true)))
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        READING.with(|r| r.set(self.0));
    }
}

/// A refusal, with what was refused when the authorizer said so.
fn read_only(sql: &str) -> Error {
    let what = REFUSED
        .with(|r| r.borrow_mut().take())
        .unwrap_or_else(|| "a statement that writes".into());
    Error::ReadOnly(format!(
        "all()/get() run read-only statements only; {what} is refused: {sql}"
    ))
}

fn is_auth_denied(e: &Error) -> bool {
    matches!(
        e,
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied
    )
}

impl Engine {
    /// `all`/`get`: read-only statements only.
    pub fn query(
        &self,
        sql: &str,
        params: &[Value],
        one: bool,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        self.query_with(sql, Params::Positional(params), one)
    }

    /// `all`/`get` with positional (`?`) or named (`@x`, `:x`, `$x`)
    /// parameters, behind the read fence (module docs).
    pub fn query_with(
        &self,
        sql: &str,
        params: Params,
        one: bool,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        self.check_open()?;
        let _fence = Fence::enter();
        match self.run_read(sql, params, one) {
            Err(e) if is_auth_denied(&e) => Err(read_only(sql)),
            r => r,
        }
    }

    fn run_read(
        &self,
        sql: &str,
        params: Params,
        one: bool,
    ) -> Result<(Vec<String>, Vec<Vec<Value>>)> {
        let mut st = self.conn.prepare_cached(&format!("{READ_TAG}{sql}"))?;
        if !st.readonly() {
            return Err(read_only(sql));
        }
        let params = order_params(&st, params)?;
        let names: Vec<String> = st.column_names().into_iter().map(String::from).collect();
        let n = names.len();
        let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(r.get::<_, Value>(i)?);
            }
            out.push(row);
            if one {
                break;
            }
        }
        Ok((names, out))
    }
}

/// Parameters in the statement's order: positional (`?`) as given, named
/// (`@x`, `:x`, `$x`) looked up by name without the prefix. Counts must match.
pub(super) fn order_params<'p>(
    st: &rusqlite::Statement<'_>,
    params: Params<'p>,
) -> Result<Cow<'p, [Value]>> {
    let expected = st.parameter_count();
    let params: Cow<'p, [Value]> = match params {
        Params::Positional(p) => Cow::Borrowed(p),
        Params::Named(named) => {
            let mut out = Vec::with_capacity(expected);
            for i in 1..=expected {
                let name = st
                    .parameter_name(i)
                    .map(|n| n[1..].to_string())
                    .ok_or_else(|| {
                        Error::Range(format!(
                            "parameter {i} is positional; pass an array, not an object"
                        ))
                    })?;
                let v = named
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| Error::Range(format!("missing named parameter {name}")))?;
                out.push(v);
            }
            Cow::Owned(out)
        }
    };
    if params.len() != expected {
        return Err(Error::Range(format!(
            "statement takes {expected} parameters, {} given",
            params.len()
        )));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::refusal;
    use rusqlite::hooks::{AuthAction, TransactionOperation};

    #[test]
    fn reads_are_allowed_and_everything_else_refused() {
        for a in [
            AuthAction::Select,
            AuthAction::Recursive,
            AuthAction::Read {
                table_name: "t",
                column_name: "v",
            },
            AuthAction::Function {
                function_name: "count",
            },
        ] {
            assert_eq!(refusal(&a), None, "{a:?}");
        }
        for a in [
            AuthAction::Transaction {
                operation: TransactionOperation::Begin,
            },
            AuthAction::Savepoint {
                operation: TransactionOperation::Begin,
                savepoint_name: "s",
            },
            AuthAction::Attach { filename: "x.db" },
            AuthAction::Detach { database_name: "x" },
            AuthAction::Insert { table_name: "t" },
            AuthAction::Update {
                table_name: "t",
                column_name: "v",
            },
            AuthAction::Delete { table_name: "t" },
            AuthAction::CreateTempTable { table_name: "x" },
            AuthAction::Unknown {
                code: 999,
                arg1: None,
                arg2: None,
            },
        ] {
            assert!(refusal(&a).is_some(), "{a:?} must be refused");
        }
    }

    #[test]
    fn pragmas_that_read_are_allowed_and_pragmas_that_set_are_not() {
        let p = |name, value| AuthAction::Pragma {
            pragma_name: name,
            pragma_value: value,
        };
        for (n, v) in [
            ("table_info", Some("t")),
            ("TABLE_INFO", Some("'t'")),
            ("index_list", Some("t")),
            ("integrity_check", None),
            ("user_version", None),
            ("foreign_keys", None),
        ] {
            assert_eq!(refusal(&p(n, v)), None, "PRAGMA {n} {v:?}");
        }
        for (n, v) in [
            ("user_version", Some("7")),
            ("foreign_keys", Some("OFF")),
            ("query_only", Some("1")),
            ("query_only", None),
            ("synchronous", Some("OFF")),
            ("journal_mode", None),
            ("optimize", None),
            ("wal_checkpoint", Some("TRUNCATE")),
            ("writable_schema", Some("1")),
        ] {
            assert!(refusal(&p(n, v)).is_some(), "PRAGMA {n} {v:?}");
        }
    }
}
