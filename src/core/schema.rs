//! Schema discovery and the library's own tables. A table is replicated when
//! a `<table>_patches` twin exists (replic-sqlite's layout). The library adds
//! what it needs under a `_quilt` prefix: a `_quiltNulls` column on each
//! patches table (explicit NULL writes), a run map (`runs/`) finding
//! patch rows by `(_peerId, _sequenceId)`, and one `_quilt_clock_<t>` table
//! holding the winning stamp of every column of every row (slots by column
//! ordinal: ordinals.rs) and the row's deletion stamp.

use crate::core::error::{schema_err, Result};
use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};

/// Reserved columns every patches table must have.
pub const RESERVED: [&str; 3] = ["_patchedAt", "_sequenceId", "_peerId"];
/// Hidden column listing the columns a patch set to NULL on purpose.
pub const NULLS_COL: &str = "_quiltNulls";
/// Pseudo-column ending the column list of a row deletion (a SQL
/// `DELETE`): the patch names the key and this, whose value is 1. In a
/// `_patches` row it is stored as `_quiltNulls = DELETE_MARK`.
pub const DELETED_COL: &str = "_quiltDeleted";
/// `_quiltNulls` of a stored row deletion (no column name holds a NUL).
pub const DELETE_MARK: &str = "\0";

/// A replicated table as the local schema has it now.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    /// Columns of the base table, in declaration order.
    pub columns: Vec<String>,
    /// Primary-key columns, in key order.
    pub pk: Vec<String>,
    /// Declared type of each primary-key column (for the clock table).
    pub pk_types: Vec<String>,
    /// Column name to its index in `columns`.
    pub index: HashMap<String, usize>,
    /// Index in `columns` of each primary-key column.
    pub pk_index: Vec<usize>,
    /// Stable ordinal of each column (its clock slot and null bit; see
    /// ordinals.rs): 0 for key columns, which have neither.
    pub ordinals: Vec<u16>,
    /// Prepared-statement SQL of the clock table: select, replace.
    pub clock_select: String,
    pub clock_replace: String,
    /// Set the stamps of a row, keeping its deletion stamp.
    pub clock_set: String,
    /// Insert a clock row unless the row has one (a remote patch's guess
    /// that its row is new: store.rs `apply_remote_with`).
    pub clock_claim: String,
    /// Set the deletion stamp of a row, keeping its column stamps.
    pub clock_delete: String,
    /// Shared name, for patches.
    pub name_arc: std::sync::Arc<str>,
    /// The patches table has rowids (found through the run map, no index);
    /// false for a `WITHOUT ROWID` patches table (searched by key).
    pub rowid: bool,
    /// Write SQL per column set, built once (store.rs `write_sql`).
    pub write_sql: WriteSqlCache,
}

/// What the local write path needs per column set, built once
/// (store.rs `write_sql`): SQL, column names, clock template.
#[derive(Debug)]
pub struct WriteSql {
    /// The patch-row insert.
    pub insert: String,
    /// The base-row upsert.
    pub upsert: String,
    /// Column names, shared by every patch of the set.
    pub names: std::sync::Arc<Vec<String>>,
    /// A clock BLOB with a slot per non-key column; stamps go in at `slots`.
    pub template: Vec<u8>,
    pub slots: Vec<usize>,
    /// Position of each key column in the set.
    pub pk_pos: Vec<usize>,
    /// Every non-key column is in the set.
    pub whole: bool,
}

/// [`WriteSql`] by column set (indices into `columns`), at most
/// [`WRITE_SQL_CACHED`] of them (then it starts over).
pub type WriteSqlCache =
    std::sync::Arc<std::sync::Mutex<HashMap<Vec<usize>, std::sync::Arc<WriteSql>>>>;

/// Column sets whose write SQL a table keeps.
pub const WRITE_SQL_CACHED: usize = 256;

impl TableInfo {
    /// Forget the built [`WriteSql`]s (the ordinals they used change).
    pub fn write_sql_clear(&self) {
        self.write_sql
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
    pub fn has(&self, col: &str) -> bool {
        self.index.contains_key(col)
    }
    pub fn is_pk(&self, col: &str) -> bool {
        self.pk.iter().any(|p| p == col)
    }
    pub fn patches(&self) -> String {
        format!("{}_patches", self.name)
    }
    pub fn clock(&self) -> String {
        format!("_quilt_clock_{}", self.name)
    }
}

/// Quote an identifier for SQL.
pub fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Create the library's own tables (idempotent).
pub fn ensure_meta(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _quilt_state(
            id INTEGER PRIMARY KEY CHECK (id = 1),
            peer_id INTEGER NOT NULL, seq INTEGER NOT NULL, hlc INTEGER NOT NULL,
            schema_version INTEGER NOT NULL, protocol INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS _quilt_migrations(
            version INTEGER PRIMARY KEY, up TEXT NOT NULL, down TEXT, renames BLOB);
         CREATE TABLE IF NOT EXISTS _quilt_kept(
            origin INTEGER NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
            tbl TEXT NOT NULL, schema_version INTEGER NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (origin, seq)) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS _quilt_purged(
            origin INTEGER PRIMARY KEY, upto INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS _quilt_digest(
            origin INTEGER PRIMARY KEY, purged INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS _quilt_meta(key TEXT PRIMARY KEY, value);",
    )?;
    crate::core::runs::ensure(conn)?;
    crate::core::atomic::ensure(conn)
}

/// `_quilt_meta` key present once every patches table's runs are built.
pub const RUNS_KEY: &str = "runs_v1";

/// True when the run map is built (false for a file from an older version).
pub fn runs_built(conn: &Connection) -> Result<bool> {
    Ok(crate::core::meta::exists(conn, RUNS_KEY).unwrap_or(false))
}

/// Mark the run map built.
pub fn set_runs_built(conn: &Connection) -> Result<()> {
    crate::core::meta::set(conn, RUNS_KEY, 1)
}

/// SQLite's schema cookie: it moves whenever the schema changes.
pub fn cookie(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("PRAGMA schema_version")?
        .query_row([], |r| r.get(0))?)
}

/// replic-sqlite's own tables: the migrations it ran and the patches it
/// could not apply (other schema versions, and its pings under table `_`).
pub const REPLIC_MIGRATIONS: &str = "migrations";
pub const REPLIC_PENDING: &str = "pending_patches";

fn has_columns(conn: &Connection, table: &str, want: &[&str]) -> Result<bool> {
    let cols = table_columns(conn, table)?;
    Ok(!cols.is_empty() && want.iter().all(|w| cols.iter().any(|c| c.0 == *w)))
}

/// True when `pending_patches` has replic-sqlite's shape.
pub fn is_replic_pending(conn: &Connection) -> Result<bool> {
    has_columns(
        conn,
        REPLIC_PENDING,
        &[
            "_patchedAt",
            "_peerId",
            "_sequenceId",
            "patchVersion",
            "tableName",
            "delta",
        ],
    )
}

/// True when the file was written by replic-sqlite: its `migrations(id, up,
/// down)` and `pending_patches` tables are both there (it creates them
/// together on its first `migrate()`).
pub fn is_replic_file(conn: &Connection) -> Result<bool> {
    Ok(has_columns(conn, REPLIC_MIGRATIONS, &["id", "up", "down"])? && is_replic_pending(conn)?)
}

fn table_columns(conn: &Connection, table: &str) -> Result<Vec<(String, String, i64)>> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({})", q(table)))?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            r.get::<_, i64>(5)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Find every replicated table and check it has what replication needs.
/// A missing primary key or reserved column is an `E_SCHEMA` naming the table.
pub fn load_tables(conn: &Connection) -> Result<BTreeMap<String, TableInfo>> {
    let names: Vec<String> = {
        let mut st = conn.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%\\_patches' ESCAPE '\\'",
        )?;
        let r = st.query_map([], |r| r.get::<_, String>(0))?;
        r.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut out = BTreeMap::new();
    for pname in names {
        let base = &pname[..pname.len() - "_patches".len()];
        if base.is_empty() || base.starts_with("_quilt") {
            continue;
        }
        if pname == REPLIC_PENDING && is_replic_pending(conn)? {
            // replic-sqlite's store of patches for other schema versions, not
            // a replicated table (its rows are imported into `_quilt_kept`).
            continue;
        }
        let cols = table_columns(conn, base)?;
        if cols.is_empty() {
            // A patches table without its base table: nothing to replicate yet.
            continue;
        }
        let pcols = table_columns(conn, &pname)?;
        for r in RESERVED {
            if !pcols.iter().any(|c| c.0 == r) {
                return Err(schema_err(format!(
                    "table {pname} is missing the reserved column {r} (needs _patchedAt, _sequenceId, _peerId)"
                )));
            }
        }
        let mut pk: Vec<(i64, String, String)> = cols
            .iter()
            .filter(|c| c.2 > 0)
            .map(|c| (c.2, c.0.clone(), c.1.clone()))
            .collect();
        if pk.is_empty() {
            return Err(schema_err(format!(
                "replicated table {base} has no PRIMARY KEY; declare one so rows can be matched across peers"
            )));
        }
        pk.sort();
        for c in &cols {
            if !pcols.iter().any(|p| p.0 == c.0) {
                return Err(schema_err(format!(
                    "table {pname} lacks column {} of {base}; a patches table mirrors every column",
                    c.0
                )));
            }
            if c.0.starts_with("_quilt") || RESERVED.contains(&c.0.as_str()) {
                return Err(schema_err(format!(
                    "table {base} uses the reserved column name {}",
                    c.0
                )));
            }
        }
        let columns: Vec<String> = cols.iter().map(|c| c.0.clone()).collect();
        let index: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let pk_names: Vec<String> = pk.iter().map(|p| p.1.clone()).collect();
        let pk_index = pk_names.iter().map(|p| index[p]).collect();
        let clock = q(&format!("_quilt_clock_{base}"));
        let pkc = pk_names.iter().map(|c| q(c)).collect::<Vec<_>>().join(",");
        let ph = vec!["?"; pk_names.len()].join(",");
        let where_pk = pk_names
            .iter()
            .map(|c| format!("{}=?", q(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        out.insert(
            base.to_string(),
            TableInfo {
                name: base.to_string(),
                // Set by ordinals::assign (or carry) once the schema is known.
                ordinals: vec![0; columns.len()],
                columns,
                pk_types: pk.iter().map(|p| p.2.clone()).collect(),
                pk: pk_names,
                index,
                pk_index,
                clock_select: format!("SELECT _stamps, _deleted FROM {clock} WHERE {where_pk}"),
                clock_set: format!(
                    "INSERT INTO {clock}({pkc},_stamps) VALUES({ph},?) ON CONFLICT({pkc}) DO UPDATE SET _stamps=excluded._stamps"
                ),
                clock_claim: format!(
                    "INSERT INTO {clock}({pkc},_stamps) VALUES({ph},?) ON CONFLICT({pkc}) DO NOTHING"
                ),
                clock_delete: format!(
                    "INSERT INTO {clock}({pkc},_stamps,_deleted) VALUES({ph},x'02',?) ON CONFLICT({pkc}) DO UPDATE SET _deleted=excluded._deleted"
                ),
                clock_replace: format!(
                    "INSERT OR REPLACE INTO {clock}({pkc},_stamps) VALUES({ph},?)"
                ),
                name_arc: std::sync::Arc::from(base),
                rowid: conn
                    .prepare(&format!("SELECT rowid FROM {} LIMIT 0", q(&pname)))
                    .is_ok(),
                write_sql: Default::default(),
            },
        );
    }
    Ok(out)
}

/// Add the hidden column, index and clock table of one replicated table.
/// Returns true when the clock table was created just now (so it needs to be
/// rebuilt from existing patches, e.g. in a replic-sqlite file).
pub fn ensure_internal(conn: &Connection, t: &TableInfo) -> Result<bool> {
    let p = t.patches();
    let pcols = table_columns(conn, &p)?;
    if !pcols.iter().any(|c| c.0 == NULLS_COL) {
        conn.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN {} TEXT",
            q(&p),
            NULLS_COL
        ))?;
    }
    let index = q(&format!("_quilt_idx_{}", t.name));
    if t.rowid {
        // Found through the run map (runs/) instead.
        conn.execute_batch(&format!("DROP INDEX IF EXISTS {index}"))?;
    } else {
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS {index} ON {}(_peerId, _sequenceId)",
            q(&p)
        ))?;
    }
    let clock = t.clock();
    let existing = table_columns(conn, &clock)?;
    let want: Vec<&String> = t.pk.iter().collect();
    let have: Vec<&String> = existing.iter().filter(|c| c.2 > 0).map(|c| &c.0).collect();
    if !existing.is_empty() && want == have {
        if !existing.iter().any(|c| c.0 == "_deleted") {
            // Files from before row deletions: add the deletion stamp.
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN _deleted BLOB",
                q(&clock)
            ))?;
        }
        return Ok(false);
    }
    if !existing.is_empty() {
        // The primary key changed: the clock is rebuilt from the patches.
        conn.execute_batch(&format!("DROP TABLE {}", q(&clock)))?;
    }
    let cols: Vec<String> =
        t.pk.iter()
            .zip(&t.pk_types)
            .map(|(c, ty)| format!("{} {}", q(c), ty))
            .collect();
    let pk: Vec<String> = t.pk.iter().map(|c| q(c)).collect();
    conn.execute_batch(&format!(
        "CREATE TABLE {}({}, _stamps BLOB NOT NULL, _deleted BLOB, PRIMARY KEY({})) WITHOUT ROWID",
        q(&clock),
        cols.join(", "),
        pk.join(", ")
    ))?;
    Ok(true)
}
