//! The SQL of quilt's own state tables, behind small typed functions:
//! `_quilt_state` (peer id, seq, HLC, schema version), `_quilt_meta`
//! (flags and saved blobs by key), `_quilt_migrations` (the steps run and
//! their renames), `_quilt_purged` and `_quilt_digest` (what retention
//! removed per origin), and the queries that read a replic-sqlite file once
//! when it is taken over. Engine files hold no SQL (docs/design.md, "One
//! owner of SQL"); `schema::ensure_meta` creates these tables.

use crate::core::error::Result;
use crate::core::schema::{self, q};
use crate::core::value::Value;
use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, ToSql};
use std::collections::HashMap;

// ----- _quilt_state ---------------------------------------------------------

/// `(peer id, seq, HLC, schema version)`: the one row of `_quilt_state`.
pub type State = (u32, u64, u64, u32);

/// The saved state, or `None` for a new file.
pub fn load_state(conn: &Connection) -> Result<Option<State>> {
    let row: Option<(i64, i64, i64, i64)> = conn
        .query_row(
            "SELECT peer_id, seq, hlc, schema_version FROM _quilt_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    Ok(row.map(|(p, s, h, v)| (p as u32, s as u64, h as u64, v as u32)))
}

/// The first state of a new file: `peer_id`, nothing written yet.
pub fn create_state(conn: &Connection, peer_id: u32, protocol: u8) -> Result<()> {
    conn.execute(
        "INSERT INTO _quilt_state(id, peer_id, seq, hlc, schema_version, protocol) VALUES(1, ?, 0, 0, 0, ?)",
        rusqlite::params![peer_id as i64, protocol as i64],
    )?;
    Ok(())
}

/// Save the state.
pub fn save_state(conn: &Connection, (peer_id, seq, hlc, version): State) -> Result<()> {
    conn.prepare_cached(
        "UPDATE _quilt_state SET peer_id=?, seq=?, hlc=?, schema_version=? WHERE id=1",
    )?
    .execute(rusqlite::params![
        peer_id as i64,
        seq as i64,
        hlc as i64,
        version as i64
    ])?;
    Ok(())
}

// ----- _quilt_meta ----------------------------------------------------------

/// The value under `key`, if there is one.
pub fn get<T: FromSql>(conn: &Connection, key: &str) -> Result<Option<T>> {
    Ok(conn
        .prepare_cached("SELECT value FROM _quilt_meta WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, T>(0))
        .optional()?)
}

/// True when `key` is set (whatever its value).
pub fn exists(conn: &Connection, key: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM _quilt_meta WHERE key = ?1")?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Set `key` to `value`.
pub fn set(conn: &Connection, key: &str, value: impl ToSql) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES(?1, ?2)")?
        .execute(rusqlite::params![key, value])?;
    Ok(())
}

/// Remove `key`.
pub fn delete(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM _quilt_meta WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}

/// Every `(key, value)` whose key starts with `prefix`, as integers.
pub fn with_prefix(conn: &Connection, prefix: &str) -> Result<Vec<(String, i64)>> {
    let mut st = conn.prepare_cached(
        "SELECT key, value FROM _quilt_meta WHERE substr(key, 1, length(?1)) = ?1",
    )?;
    let rows = st.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Let SQLite refresh its planner statistics (at close; errors ignored).
pub fn optimize(conn: &Connection) {
    let _ = conn.execute_batch("PRAGMA optimize");
}

// ----- _quilt_migrations ----------------------------------------------------

/// A column rename `(table, old, new)` declared by a migration step.
pub type Rename = (String, String, String);

/// Record migration step `version` (replacing what was there).
pub fn record_migration(
    conn: &Connection,
    version: u32,
    up: &str,
    down: Option<&str>,
    renames: Option<&[Rename]>,
) -> Result<()> {
    let renames = renames.map(|r| rmp_serde::to_vec(r).unwrap_or_default());
    conn.execute(
        "INSERT OR REPLACE INTO _quilt_migrations(version, up, down, renames) VALUES(?,?,?,?)",
        rusqlite::params![version as i64, up, down, renames],
    )?;
    Ok(())
}

/// The recorded `down` step of migration `version`, if it has one.
pub fn down_step(conn: &Connection, version: u32) -> Result<Option<String>> {
    let down: Option<Option<String>> = conn
        .query_row(
            "SELECT down FROM _quilt_migrations WHERE version=?",
            [version as i64],
            |r| r.get(0),
        )
        .optional()?;
    Ok(down.flatten())
}

/// How many migration steps are recorded.
pub fn migration_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM _quilt_migrations", [], |r| r.get(0))?)
}

/// The declared renames of every recorded step, in version order, each
/// with its version (a list that does not decode is skipped).
pub fn renames(conn: &Connection) -> Result<Vec<(u32, String, String, String)>> {
    let mut st = conn.prepare("SELECT version, renames FROM _quilt_migrations ORDER BY version")?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, Option<Vec<u8>>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (v, blob) = row?;
        if let Some(b) = blob {
            if let Ok(list) = rmp_serde::from_slice::<Vec<Rename>>(&b) {
                out.extend(list.into_iter().map(|(t, o, n)| (v as u32, t, o, n)));
            }
        }
    }
    Ok(out)
}

// ----- _quilt_purged, _quilt_digest -----------------------------------------

/// Retention removed the patches of `origin` up to `upto`; `digest` is the
/// XOR of every removed patch's hash.
pub fn record_purge(conn: &Connection, origin: u32, upto: u64, digest: u64) -> Result<()> {
    conn.prepare_cached("INSERT OR REPLACE INTO _quilt_purged(origin, upto) VALUES(?, ?)")?
        .execute(rusqlite::params![origin as i64, upto as i64])?;
    conn.prepare_cached("INSERT OR REPLACE INTO _quilt_digest(origin, purged) VALUES(?, ?)")?
        .execute(rusqlite::params![origin as i64, digest as i64])?;
    Ok(())
}

/// The digest of the purged patches per origin (unreadable rows skipped).
pub fn purged_digests(conn: &Connection) -> Result<HashMap<u32, u64>> {
    let mut st = conn.prepare("SELECT origin, purged FROM _quilt_digest")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows
        .filter_map(|r| r.ok())
        .map(|(o, d)| (o as u32, d as u64))
        .collect())
}

/// `(origin, upto)` of every purged prefix, as stored.
pub fn purged(conn: &Connection) -> Result<Vec<(i64, i64)>> {
    let mut st = conn.prepare("SELECT origin, upto FROM _quilt_purged")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

// ----- a replic-sqlite file, read once when taken over ----------------------

/// A step of replic-sqlite's `migrations`: `(id, up, down)`.
pub type ReplicStep = (i64, String, Option<String>);

/// A row of replic-sqlite's `pending_patches`: `(at, origin, seq, schema
/// version, table, delta as JSON text)`.
pub type PendingRow = (i64, i64, i64, i64, String, Option<String>);

/// replic-sqlite's recorded migration steps, in id order.
pub fn replic_steps(conn: &Connection) -> Result<Vec<ReplicStep>> {
    let mut st = conn.prepare(&format!(
        "SELECT id, CAST(up AS TEXT), CAST(down AS TEXT) FROM {} WHERE id > 0 ORDER BY id",
        q(schema::REPLIC_MIGRATIONS)
    ))?;
    let r = st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            r.get(2)?,
        ))
    })?;
    Ok(r.collect::<rusqlite::Result<_>>()?)
}

/// replic-sqlite's `pending_patches`, by origin and seq. `delta` is JSONB
/// (or JSON text); a row SQLite cannot read as JSON has `None`.
pub fn replic_pending(conn: &Connection) -> Result<Vec<PendingRow>> {
    let mut st = conn.prepare(&format!(
        "SELECT _patchedAt, _peerId, _sequenceId, patchVersion, CAST(tableName AS TEXT),
                CASE WHEN json_valid(delta, 9) THEN json(delta) END
         FROM {} ORDER BY _peerId, _sequenceId",
        q(schema::REPLIC_PENDING)
    ))?;
    let r = st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get::<_, Option<String>>(4)?.unwrap_or_default(),
            r.get(5)?,
        ))
    })?;
    Ok(r.collect::<rusqlite::Result<_>>()?)
}

/// The non-NULL members of a JSON object, `(key, value)` in order.
pub fn json_members(conn: &Connection, json: &str) -> Result<Vec<(Option<String>, Value)>> {
    let mut st =
        conn.prepare_cached("SELECT key, value FROM json_each(?1) WHERE type <> 'null'")?;
    let r = st.query_map([json], |r| {
        Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Value>(1)?))
    })?;
    Ok(r.collect::<rusqlite::Result<_>>()?)
}
