//! Atomic groups on disk: which seq ranges of an origin were committed
//! together (`_quilt_atomic`, kept as long as their patches, so any holder
//! can tell a third peer), and which of them this peer holds only in part
//! (`_quilt_waiting`: their patches wait in `_quilt_kept`, unapplied, until
//! the rest arrives). See engine/groups.rs.

use crate::core::error::Result;
use rusqlite::Connection;

/// `(origin, first, last)`.
pub type Atomic = (u32, u64, u64);

/// Create the tables (idempotent).
pub fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _quilt_atomic(
            origin INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
            PRIMARY KEY (origin, first)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS _quilt_waiting(
            origin INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL,
            PRIMARY KEY (origin, first)) WITHOUT ROWID;",
    )?;
    Ok(())
}

fn put(conn: &Connection, table: &str, u: Atomic) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR IGNORE INTO {table}(origin, first, last) VALUES(?1, ?2, ?3)"
    ))?
    .execute(rusqlite::params![u.0 as i64, u.1 as i64, u.2 as i64])?;
    Ok(())
}

/// Remember that `u` was committed as one group.
pub fn record(conn: &Connection, u: Atomic) -> Result<()> {
    put(conn, "_quilt_atomic", u)
}

/// Atomics of `origin` overlapping `[a, b]`.
pub fn overlapping(conn: &Connection, origin: u32, a: u64, b: u64) -> Result<Vec<Atomic>> {
    let mut st = conn.prepare_cached(
        "SELECT first, last FROM _quilt_atomic WHERE origin=?1 AND first<=?3 AND last>=?2 LIMIT 4096",
    )?;
    let rows = st.query_map(
        rusqlite::params![
            origin as i64,
            i64::try_from(a).unwrap_or(i64::MAX),
            i64::try_from(b).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok((
                origin,
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A group held in part: its patches wait.
pub fn add_waiting(conn: &Connection, u: Atomic) -> Result<()> {
    put(conn, "_quilt_waiting", u)
}

/// A waiting group is complete (or dropped).
pub fn remove_waiting(conn: &Connection, u: Atomic) -> Result<()> {
    conn.prepare_cached("DELETE FROM _quilt_waiting WHERE origin=?1 AND first=?2")?
        .execute(rusqlite::params![u.0 as i64, u.1 as i64])?;
    Ok(())
}

/// Every waiting group.
pub fn waiting(conn: &Connection) -> Result<Vec<Atomic>> {
    let mut st = conn.prepare_cached("SELECT origin, first, last FROM _quilt_waiting")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?.max(0) as u32,
            r.get::<_, i64>(1)?.max(0) as u64,
            r.get::<_, i64>(2)?.max(0) as u64,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Forget groups of `origin` that end at or below `upto` (purged).
pub fn purge(conn: &Connection, origin: u32, upto: u64) -> Result<()> {
    conn.prepare_cached("DELETE FROM _quilt_atomic WHERE origin=?1 AND last<=?2")?
        .execute(rusqlite::params![
            origin as i64,
            i64::try_from(upto).unwrap_or(i64::MAX)
        ])?;
    Ok(())
}
