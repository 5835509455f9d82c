//! The one way quilt opens and closes SQLite transactions: `BEGIN
//! IMMEDIATE`, `COMMIT` and `ROLLBACK` at the top level, and named
//! savepoints inside one. Every statement is a const string prepared once
//! (`prepare_cached`), so a write pays for no SQL parsing and no formatting.
//! The engine's units of work (engine/txn.rs) build on these.

use crate::core::error::Result;
use rusqlite::Connection;

/// A named savepoint: its three statements, spelled out once.
pub struct Savepoint {
    open: &'static str,
    release: &'static str,
    /// `ROLLBACK TO` then `RELEASE`: undone and closed.
    undo: &'static str,
}

macro_rules! savepoint {
    ($name:literal) => {
        Savepoint {
            open: concat!("SAVEPOINT ", $name),
            release: concat!("RELEASE ", $name),
            undo: concat!("ROLLBACK TO ", $name, "; RELEASE ", $name),
        }
    };
}

/// A unit of work opened inside another (engine/txn.rs).
pub const UNIT: Savepoint = savepoint!("quilt_unit");
/// One kept patch of an atomic group being replayed (engine/atomic.rs).
pub const GROUP: Savepoint = savepoint!("quilt_group");
/// One patch of a frame stored patch by patch (engine/replication.rs).
pub const PATCH: Savepoint = savepoint!("quilt_patch");
/// The dry run of a migration step (engine/migrate.rs).
pub const PROBE: Savepoint = savepoint!("quilt_probe");
/// A reload of the replicated tables (engine/mod.rs `refresh_schema`).
pub const SCHEMA: Savepoint = savepoint!("quilt_schema");

fn run(conn: &Connection, sql: &'static str) -> Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// `BEGIN IMMEDIATE`: open a transaction holding the write lock.
pub fn begin(conn: &Connection) -> Result<()> {
    run(conn, "BEGIN IMMEDIATE")
}

/// `COMMIT`.
pub fn commit(conn: &Connection) -> Result<()> {
    run(conn, "COMMIT")
}

/// `ROLLBACK`, errors ignored: a failed one (SQLite already rolled back on
/// its own, e.g. after a full disk) leaves nothing open either way.
pub fn rollback(conn: &Connection) {
    let _ = conn.execute_batch("ROLLBACK");
}

/// Open savepoint `sp`.
pub fn savepoint(conn: &Connection, sp: &Savepoint) -> Result<()> {
    run(conn, sp.open)
}

/// Keep what was done since savepoint `sp` and close it.
pub fn release(conn: &Connection, sp: &Savepoint) -> Result<()> {
    run(conn, sp.release)
}

/// Undo what was done since savepoint `sp` and close it.
pub fn rollback_to(conn: &Connection, sp: &Savepoint) -> Result<()> {
    conn.execute_batch(sp.undo)?;
    Ok(())
}
