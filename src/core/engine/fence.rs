//! The two watchers of user SQL (capture.rs), for one statement at a time:
//!
//! - a fence (the connection's authorizer, installed by read.rs, asks
//!   [`authorize`] while a thread-local flag is set) refuses, before anything
//!   runs: writes to `<t>_patches` and `_quilt_*` tables (`E_READONLY`), DDL
//!   that touches a replicated table or creates a `_patches` twin
//!   (`E_SCHEMA`: schema changes go through `migrate()`), transaction
//!   statements (use `transaction(fn)`), ATTACH/DETACH, and PRAGMAs that set
//!   something (`E_ARG`);
//! - SQLite's preupdate hook (compiled in by `SQLITE_ENABLE_PREUPDATE_HOOK`
//!   in `.cargo/config.toml`), installed only for the statement, copies the
//!   old and new values of every row it changes in a replicated table into a
//!   buffer (the hook may not run SQL).
//!
//! [`Watch`] sets both up and takes them down again.

use super::read::refusal;
use super::*;
use rusqlite::ffi;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

thread_local! {
    /// Replicated table names while this thread compiles or steps user SQL.
    static FENCE: RefCell<Option<Arc<HashSet<String>>>> = const { RefCell::new(None) };
    /// Why the fence last refused, for the error.
    static REFUSED: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// One row change seen by the preupdate hook.
#[derive(Debug)]
pub(super) struct RawChange {
    pub(super) table: String,
    pub(super) old: Option<Vec<Value>>,
    pub(super) new: Option<Vec<Value>>,
    /// A value could not be read: refuse the statement rather than guess.
    pub(super) broken: bool,
}

/// The authorizer's answer for user SQL (read.rs calls this outside reads).
pub(super) fn authorize(ctx: &AuthContext<'_>) -> Authorization {
    let verdict = FENCE.with(|f| {
        f.borrow()
            .as_ref()
            .and_then(|names| refuse(&ctx.action, ctx.database_name, names))
    });
    match verdict {
        None => Authorization::Allow,
        Some(e) => {
            REFUSED.with(|r| *r.borrow_mut() = Some(e));
            Authorization::Deny
        }
    }
}

/// quilt's own tables: patch logs, clocks, state.
fn internal(table: &str) -> bool {
    table.starts_with("_quilt") || table.ends_with("_patches")
}

/// Why user SQL may not do `action`, or `None` when it may.
fn refuse(action: &AuthAction<'_>, db: Option<&str>, names: &HashSet<String>) -> Option<Error> {
    let main = db.is_none_or(|d| d == "main");
    let replicated = |t: &str| main && (names.contains(t) || internal(t));
    let ddl = |what: &str, t: &str| {
        Some(schema_err(format!(
            "{what} of replicated table {t} is refused through SQL: change the schema of replicated tables with migrate()"
        )))
    };
    match action {
        AuthAction::Insert { table_name: t }
        | AuthAction::Update { table_name: t, .. }
        | AuthAction::Delete { table_name: t }
            if main && internal(t) =>
        {
            Some(Error::ReadOnly(format!(
                "table {t} is written by quilt only; write the base table instead"
            )))
        }
        AuthAction::CreateTable { table_name: t } | AuthAction::CreateTempTable { table_name: t }
            if replicated(t) =>
        {
            ddl("CREATE TABLE", t)
        }
        AuthAction::DropTable { table_name: t } | AuthAction::DropTempTable { table_name: t }
            if replicated(t) =>
        {
            ddl("DROP TABLE", t)
        }
        AuthAction::AlterTable { table_name: t, .. } if replicated(t) => {
            ddl("ALTER TABLE", t)
        }
        AuthAction::CreateIndex { table_name: t, .. }
        | AuthAction::CreateTempIndex { table_name: t, .. }
        | AuthAction::DropIndex { table_name: t, .. }
        | AuthAction::DropTempIndex { table_name: t, .. }
            if replicated(t) =>
        {
            ddl("an index", t)
        }
        AuthAction::CreateTrigger { table_name: t, .. }
        | AuthAction::CreateTempTrigger { table_name: t, .. }
        | AuthAction::DropTrigger { table_name: t, .. }
        | AuthAction::DropTempTrigger { table_name: t, .. }
            if replicated(t) =>
        {
            ddl("a trigger", t)
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Some(Error::Arg(
            "BEGIN/COMMIT/ROLLBACK/SAVEPOINT are not allowed in exec()/prepare(): use replicator.transaction(fn)".into(),
        )),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Some(Error::Arg(
            "ATTACH/DETACH are not allowed in exec()/prepare()".into(),
        )),
        AuthAction::Pragma { .. } => refusal(action).map(|what| {
            Error::Arg(format!(
                "{what} is not allowed in exec()/prepare(): quilt owns the connection settings"
            ))
        }),
        _ => None,
    }
}

/// What the preupdate hook sees and fills, owned by [`Watch`].
struct Hooked {
    watched: Arc<HashSet<String>>,
    buf: Vec<RawChange>,
}

/// The fence and (for writes) the preupdate hook, for one statement; both
/// go when dropped, also on early return.
pub(super) struct Watch<'c> {
    conn: &'c Connection,
    hook: Option<Box<Hooked>>,
    prev: Option<Arc<HashSet<String>>>,
}

impl<'c> Watch<'c> {
    pub(super) fn start(conn: &'c Connection, names: Arc<HashSet<String>>, hook: bool) -> Self {
        REFUSED.with(|r| r.borrow_mut().take());
        let prev = FENCE.with(|f| f.replace(Some(names.clone())));
        let mut w = Watch {
            conn,
            hook: None,
            prev,
        };
        if hook {
            let mut h = Box::new(Hooked {
                watched: names,
                buf: Vec::new(),
            });
            let ctx: *mut Hooked = &mut *h;
            // SAFETY: the box outlives the registration: `unhook` (also on
            // drop) removes it before the box is dropped or taken.
            unsafe {
                ffi::sqlite3_preupdate_hook(conn.handle(), Some(on_preupdate), ctx.cast());
            }
            w.hook = Some(h);
        }
        w
    }

    /// Remove the hook and hand over what it saw.
    pub(super) fn take(&mut self) -> Vec<RawChange> {
        self.unhook();
        self.hook.take().map(|h| h.buf).unwrap_or_default()
    }

    fn unhook(&mut self) {
        if self.hook.is_some() {
            // SAFETY: the connection is open (it outlives `self`).
            unsafe {
                ffi::sqlite3_preupdate_hook(self.conn.handle(), None, std::ptr::null_mut());
            }
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.unhook();
        let prev = self.prev.take();
        FENCE.with(|f| *f.borrow_mut() = prev);
    }
}

/// The preupdate hook: copy the old and new images of one row change of a
/// watched table (no SQL may run here, and nothing may unwind out).
unsafe extern "C" fn on_preupdate(
    ctx: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    zdb: *const c_char,
    ztable: *const c_char,
    _old_rowid: i64,
    _new_rowid: i64,
) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if ctx.is_null() || zdb.is_null() || ztable.is_null() {
            return;
        }
        // SAFETY: `ctx` is the `Hooked` box registered by `Watch::start`,
        // alive while the hook is registered; SQLite passes valid C strings.
        let hook = unsafe { &mut *(ctx as *mut Hooked) };
        if unsafe { CStr::from_ptr(zdb) }.to_bytes() != b"main" {
            return;
        }
        let Ok(table) = unsafe { CStr::from_ptr(ztable) }.to_str() else {
            return;
        };
        if !hook.watched.contains(table) {
            return;
        }
        let mut broken = false;
        let mut image = |new: bool| -> Vec<Value> {
            // SAFETY: called inside the preupdate callback, as SQLite asks.
            let n = unsafe { ffi::sqlite3_preupdate_count(db) }.max(0);
            (0..n)
                .map(|i| {
                    let mut v: *mut ffi::sqlite3_value = std::ptr::null_mut();
                    let rc = unsafe {
                        if new {
                            ffi::sqlite3_preupdate_new(db, i, &mut v)
                        } else {
                            ffi::sqlite3_preupdate_old(db, i, &mut v)
                        }
                    };
                    if rc != ffi::SQLITE_OK || v.is_null() {
                        broken = true;
                        return Value::Null;
                    }
                    unsafe { value_of(v) }
                })
                .collect()
        };
        let (old, new) = match op {
            ffi::SQLITE_INSERT => (None, Some(image(true))),
            ffi::SQLITE_DELETE => (Some(image(false)), None),
            ffi::SQLITE_UPDATE => (Some(image(false)), Some(image(true))),
            _ => (None, None),
        };
        hook.buf.push(RawChange {
            table: table.to_string(),
            broken: broken || (old.is_none() && new.is_none()),
            old,
            new,
        });
    }));
}

/// A protected SQLite value as a cell value.
///
/// # Safety
/// `v` must be a valid value handed out by SQLite for the current callback.
unsafe fn value_of(v: *mut ffi::sqlite3_value) -> Value {
    unsafe {
        match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => Value::Int(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
                if p.is_null() {
                    Value::Text(String::new())
                } else {
                    let b = std::slice::from_raw_parts(p, n);
                    Value::Text(String::from_utf8_lossy(b).into_owned())
                }
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_value_blob(v) as *const u8;
                let n = ffi::sqlite3_value_bytes(v).max(0) as usize;
                if p.is_null() || n == 0 {
                    Value::Blob(Vec::new())
                } else {
                    Value::Blob(std::slice::from_raw_parts(p, n).to_vec())
                }
            }
            _ => Value::Null,
        }
    }
}

/// An error of user SQL, with the fence's reason when it refused.
pub(super) fn user_err(e: Error) -> Error {
    match e {
        Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::AuthorizationForStatementDenied =>
        {
            REFUSED
                .with(|r| r.borrow_mut().take())
                .unwrap_or_else(|| Error::ReadOnly("the statement is not allowed".into()))
        }
        Error::Sqlite(rusqlite::Error::MultipleStatement) => Error::Range(
            "the SQL string holds more than one statement; prepare() takes one (exec() runs many)"
                .into(),
        ),
        e => e,
    }
}
