//! Stable column ordinals: the index of a column's slot in the clock BLOB
//! and of its bit in a patch's explicit-NULL bitmap (see clock.rs).
//!
//! A non-key column gets an ordinal the first time a schema version has it
//! (`1, 2, ...`; 0 is the row-level slot, and key columns have none). The
//! ordinal stays with the column across declared renames, forward and back
//! (`_quilt_migrations.renames`), and is never given to another column,
//! even after the column is dropped. The map of each table at each schema
//! version is kept in `_quilt_columns(tbl, version, name, ordinal)`;
//! `_quilt_meta` key `columns_at` is the version the last map was made for,
//! so the next one starts from it and follows the renames in between.
//!
//! Files written before ordinals (clock rows keyed by column name) are
//! converted once on open, in the same transaction; `_quilt_meta` key
//! `clock_format` records it.

use crate::core::clock::{self, CLOCK_FORMAT, ROW_SLOT};
use crate::core::error::{schema_err, Result};
use crate::core::meta;
use crate::core::schema::{q, TableInfo, NULLS_COL};
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, HashMap, HashSet};

pub const COLUMNS_AT_KEY: &str = "columns_at";
pub const CLOCK_FORMAT_KEY: &str = "clock_format";

/// A declared rename: (schema version, table, old name, new name).
pub type Rename = (u32, String, String, String);

/// Create `_quilt_columns` (idempotent).
pub fn ensure(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _quilt_columns(
            tbl TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,
            ordinal INTEGER NOT NULL, PRIMARY KEY (tbl, version, name)) WITHOUT ROWID;",
    )?;
    Ok(())
}

fn meta_int(conn: &Connection, key: &str) -> Result<Option<i64>> {
    Ok(meta::get::<Option<i64>>(conn, key)?.flatten())
}

/// The stored map of `tbl` at `version`, sorted by name.
pub fn stored(conn: &Connection, tbl: &str, version: u32) -> Result<Vec<(String, u16)>> {
    let mut st = conn.prepare_cached(
        "SELECT name, ordinal FROM _quilt_columns WHERE tbl = ?1 AND version = ?2 ORDER BY name",
    )?;
    let rows = st.query_map(rusqlite::params![tbl, version as i64], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (n, k) = r?;
        // A damaged row is left out (its column gets a fresh ordinal).
        if let Ok(k) = u16::try_from(k) {
            if k != ROW_SLOT {
                out.push((n, k));
            }
        }
    }
    Ok(out)
}

/// The renames that take names at version `from` to version `to`, as
/// (table, name before, name after), in the order to apply them.
pub fn rename_path(renames: &[Rename], from: u32, to: u32) -> Vec<(&str, &str, &str)> {
    if from < to {
        renames
            .iter()
            .filter(|r| r.0 > from && r.0 <= to)
            .map(|r| (r.1.as_str(), r.2.as_str(), r.3.as_str()))
            .collect()
    } else {
        renames
            .iter()
            .rev()
            .filter(|r| r.0 > to && r.0 <= from)
            .map(|r| (r.1.as_str(), r.3.as_str(), r.2.as_str()))
            .collect()
    }
}

/// A column name after the renames of `path` (as `map_column` does).
pub fn follow(table: &str, name: &str, path: &[(&str, &str, &str)]) -> String {
    let mut name = name.to_string();
    for (t, a, b) in path {
        if *t == table && *a == name {
            name = b.to_string();
        }
    }
    name
}

/// Ordinals of `next` taken from `prev` by name after `path` (no new
/// ones: 0 for a column `prev` did not have). For the tables a migration
/// step leaves, between the steps of one `migrate()`.
pub fn carry(prev: &TableInfo, next: &mut TableInfo, path: &[(&str, &str, &str)]) {
    let by_name: HashMap<String, u16> = prev
        .columns
        .iter()
        .zip(&prev.ordinals)
        .filter(|(_, &k)| k != ROW_SLOT)
        .map(|(c, &k)| (follow(&prev.name, c, path), k))
        .collect();
    next.write_sql_clear();
    next.ordinals = next
        .columns
        .iter()
        .map(|c| {
            if next.is_pk(c) {
                ROW_SLOT
            } else {
                by_name.get(c).copied().unwrap_or(ROW_SLOT)
            }
        })
        .collect();
}

/// Give every table its ordinals at schema `version`, starting from the map
/// of the version the last one was made for and following the declared
/// renames in between; new columns get fresh ordinals. Stores the maps
/// that changed.
pub fn assign(
    conn: &Connection,
    tables: &mut BTreeMap<String, TableInfo>,
    version: u32,
    renames: &[Rename],
) -> Result<()> {
    let from = meta_int(conn, COLUMNS_AT_KEY)?
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(version);
    let path = rename_path(renames, from, version);
    for t in tables.values_mut() {
        let prev = stored(conn, &t.name, from)?;
        let mut by_name: HashMap<String, u16> = HashMap::new();
        for (n, k) in &prev {
            by_name.entry(follow(&t.name, n, &path)).or_insert(*k);
        }
        let max: i64 = conn
            .prepare_cached("SELECT ifnull(max(ordinal), 0) FROM _quilt_columns WHERE tbl = ?1")?
            .query_row([&t.name], |r| r.get(0))?;
        let mut next = u16::try_from(max.max(0)).unwrap_or(u16::MAX) as u32 + 1;
        let mut used = HashSet::new();
        let mut ordinals = Vec::with_capacity(t.columns.len());
        for c in &t.columns {
            if t.is_pk(c) {
                ordinals.push(ROW_SLOT);
                continue;
            }
            let k = match by_name.get(c) {
                Some(&k) if used.insert(k) => k,
                _ => {
                    let k = u16::try_from(next).map_err(|_| {
                        schema_err(format!("table {} has used up its column ordinals", t.name))
                    })?;
                    next += 1;
                    used.insert(k);
                    k
                }
            };
            ordinals.push(k);
        }
        t.write_sql_clear();
        t.ordinals = ordinals;
        let mut want: Vec<(String, u16)> = t
            .columns
            .iter()
            .zip(&t.ordinals)
            .filter(|(_, &k)| k != ROW_SLOT)
            .map(|(c, &k)| (c.clone(), k))
            .collect();
        want.sort();
        if stored(conn, &t.name, version)? != want {
            conn.prepare_cached("DELETE FROM _quilt_columns WHERE tbl = ?1 AND version = ?2")?
                .execute(rusqlite::params![t.name, version as i64])?;
            let mut ins = conn.prepare_cached(
                "INSERT INTO _quilt_columns(tbl, version, name, ordinal) VALUES(?1, ?2, ?3, ?4)",
            )?;
            for (c, k) in &want {
                ins.execute(rusqlite::params![t.name, version as i64, c, *k as i64])?;
            }
        }
    }
    if meta_int(conn, COLUMNS_AT_KEY)? != Some(version as i64) {
        meta::set(conn, COLUMNS_AT_KEY, version as i64)?;
    }
    Ok(())
}

/// Give a patches table a `_quiltNulls` column that can hold a BLOB: a
/// STRICT table gets it as `ANY` (its first-format `TEXT` column, which
/// refuses BLOBs, is replaced once, values kept); others as `BLOB` (a
/// first-format `TEXT` column there stores BLOBs as they are).
pub fn ensure_nulls_column(conn: &Connection, t: &TableInfo) -> Result<()> {
    let p = q(&t.patches());
    let strict: bool = conn
        .prepare_cached("SELECT strict FROM pragma_table_list WHERE name = ?1 AND schema = 'main'")?
        .query_row([t.patches()], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some_and(|s| s != 0);
    let ty: Option<String> = conn
        .prepare_cached("SELECT upper(type) FROM pragma_table_xinfo(?1) WHERE name = ?2")?
        .query_row([t.patches().as_str(), NULLS_COL], |r| r.get(0))
        .optional()?;
    match ty.as_deref() {
        None => conn.execute_batch(&format!(
            "ALTER TABLE {p} ADD COLUMN {NULLS_COL} {}",
            if strict { "ANY" } else { "BLOB" }
        ))?,
        Some("TEXT") if strict => conn.execute_batch(&format!(
            "ALTER TABLE {p} RENAME COLUMN {NULLS_COL} TO _quiltNullsText;
             ALTER TABLE {p} ADD COLUMN {NULLS_COL} ANY;
             UPDATE {p} SET {NULLS_COL} = _quiltNullsText WHERE _quiltNullsText IS NOT NULL;
             ALTER TABLE {p} DROP COLUMN _quiltNullsText;"
        ))?,
        Some(_) => {}
    }
    Ok(())
}

fn table_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Convert clock rows of the first format (keyed by column name) to the
/// ordinal format, once per file. Rows naming columns the schema no longer
/// has lose those stamps (nothing can read them).
pub fn upgrade_clocks(conn: &Connection, tables: &BTreeMap<String, TableInfo>) -> Result<()> {
    if meta_int(conn, CLOCK_FORMAT_KEY)? == Some(CLOCK_FORMAT as i64) {
        return Ok(());
    }
    for t in tables.values() {
        let clock = t.clock();
        if !table_exists(conn, &clock)? {
            continue;
        }
        // Names as the first format stored them: truncated to 255 bytes.
        let mut names: HashMap<Vec<u8>, u16> = HashMap::new();
        for (c, &k) in t.columns.iter().zip(&t.ordinals) {
            if k != ROW_SLOT {
                let b = c.as_bytes();
                names.entry(b[..b.len().min(255)].to_vec()).or_insert(k);
            }
        }
        // One streaming UPDATE; the function exists only for this statement.
        conn.create_scalar_function(
            "quilt_clock_upgrade",
            1,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |ctx| {
                let old: Vec<u8> = ctx.get::<Option<Vec<u8>>>(0)?.unwrap_or_default();
                Ok(clock::upgrade_clock(&old, |n| names.get(n).copied()))
            },
        )?;
        let res = conn.execute_batch(&format!(
            "UPDATE {} SET _stamps = quilt_clock_upgrade(_stamps)",
            q(&clock)
        ));
        conn.remove_function("quilt_clock_upgrade", 1)?;
        res?;
    }
    meta::set(conn, CLOCK_FORMAT_KEY, CLOCK_FORMAT as i64)?;
    Ok(())
}
