//! quilt's SQL floor (issue 11): the SQL quilt runs for every local write,
//! run straight through rusqlite, so the gap between quilt and its own SQL
//! is measured rather than guessed.
//!
//!   cargo build --release --example floor
//!   BENCH_N=100000 BENCH_RUNS=3 target/release/examples/floor
//!
//! `npm run bench` builds and runs it (row (g)). Same rows as
//! benchmark/bench.js: `t(id, tenantId, name, score, PRIMARY KEY (id,
//! tenantId))`, each case on a fresh file database in WAL mode with
//! `synchronous=NORMAL` and `wal_autocheckpoint=4000` (quilt's connection
//! settings), the same bundled SQLite as quilt (this crate's rusqlite, built
//! with .cargo/config.toml's LIBSQLITE3_FLAGS). Values are bound straight
//! from prepared Rust rows and statements are prepared once per case: what
//! is left is SQLite's own work, B-trees and WAL I/O.
//!
//! The statements and DDL are the text quilt generates today
//! (src/core/store.rs `patch_insert_sql`, `upsert_sql`; src/core/schema.rs
//! `ensure_internal`, `clock_replace`, `clock_merge`), written out here so
//! this file does not break when that code moves. Cases:
//!
//! - (i)   base-row upsert only (what plain better-sqlite3 does in bench (a));
//! - (ii)  + the patch row in `t_patches` (with the hidden `_quiltNulls`);
//! - (iii) + the `(_peerId, _sequenceId)` index on `t_patches`;
//! - (iv)  + the clock row `INSERT OR REPLACE INTO _quilt_clock_t` with a
//!   51-byte stamps BLOB: all of quilt's SQL for a write naming every column
//!   (bench (a)); (iv-m) the same with the merge upsert quilt uses for
//!   partial writes (`ON CONFLICT DO UPDATE SET _stamps =
//!   quilt_clock_merge(..)`);
//! - (v-a) clock table kept, patch rows without the index (found instead by
//!   a run map from (origin, seq range) to rowid range, O(runs), not written
//!   per row);
//! - (v-r) (v-a) plus the `_quilt_runs` row: quilt's SQL now (the floor of
//!   bench row (g)); (iv) is what it was before the run map replaced the
//!   index. One transaction writes it once; in autocommit a run that only
//!   grew is written once per 512 commits (runs/tail.rs `DEFER_MAX`);
//! - (v-b) stamps in a hidden BLOB column of the base table (fixed-width
//!   slots, 2 x 20 bytes) written by the base-row upsert, no clock table;
//!   patch row and index kept;
//! - (v-c) (v-b) without the index.
//!
//! With `BENCH_FLOOR_ONLY=1` it runs only (v-r) in one transaction and
//! prints `{"floorMs": .., "runs": [..]}` (bench.js pairs it with each run
//! of (a)).
//!
//! Each row prints the median of BENCH_RUNS (default 3) runs in ms, its
//! ratio against (i), and the WAL frames (pages) its commit wrote. Then
//! (i), (iv), (v-b) and (v-c) again in autocommit (one transaction per row,
//! as `upsert()` does) with N/10 rows, with pages written per commit,
//! counted in a separate pass with checkpoints off: the `log` column of
//! `PRAGMA wal_checkpoint(TRUNCATE)` (frames in the WAL) summed every 1000
//! commits. The last line is JSON.

use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, Statement};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

type Res<T> = Result<T, Box<dyn Error>>;

const BASE: &str =
    "CREATE TABLE t (id INTEGER, tenantId INTEGER, name TEXT, score REAL, PRIMARY KEY (id, tenantId));";
/// Base table with the stamps in a hidden column (layouts v-b, v-c).
const BASE_HIDDEN: &str = "CREATE TABLE t (id INTEGER, tenantId INTEGER, name TEXT, score REAL, _quiltStamps BLOB, PRIMARY KEY (id, tenantId));";
/// bench.js's patches table, plus the column quilt adds on open.
const PATCHES: &str = "CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
    id INTEGER, tenantId INTEGER, name TEXT, score REAL);
  ALTER TABLE \"t_patches\" ADD COLUMN _quiltNulls TEXT;";
const INDEX: &str =
    "CREATE INDEX IF NOT EXISTS \"_quilt_idx_t\" ON \"t_patches\"(_peerId, _sequenceId);";
const CLOCK_WITH_DELETED: &str = "CREATE TABLE \"_quilt_clock_t\"(\"id\" INTEGER, \"tenantId\" INTEGER, _stamps BLOB NOT NULL, _deleted BLOB, PRIMARY KEY(\"id\", \"tenantId\")) WITHOUT ROWID;";
const CLOCK: &str = "CREATE TABLE \"_quilt_clock_t\"(\"id\" INTEGER, \"tenantId\" INTEGER, _stamps BLOB NOT NULL, PRIMARY KEY(\"id\", \"tenantId\")) WITHOUT ROWID;";

const UPSERT: &str = "INSERT INTO \"t\"(\"id\",\"tenantId\",\"name\",\"score\") VALUES(?,?,?,?) ON CONFLICT(\"id\",\"tenantId\") DO UPDATE SET \"name\"=excluded.\"name\",\"score\"=excluded.\"score\"";
const UPSERT_HIDDEN: &str = "INSERT INTO \"t\"(\"id\",\"tenantId\",\"name\",\"score\",_quiltStamps) VALUES(?,?,?,?,?) ON CONFLICT(\"id\",\"tenantId\") DO UPDATE SET \"name\"=excluded.\"name\",\"score\"=excluded.\"score\",_quiltStamps=excluded._quiltStamps";
const PATCH_INSERT: &str = "INSERT INTO \"t_patches\"(_patchedAt,_sequenceId,_peerId,_quiltNulls,\"id\",\"tenantId\",\"name\",\"score\") VALUES(?,?,?,?,?,?,?,?)";
const CLOCK_REPLACE: &str =
    "INSERT OR REPLACE INTO \"_quilt_clock_t\"(\"id\",\"tenantId\",_stamps) VALUES(?,?,?)";
const CLOCK_SET: &str = "INSERT INTO \"_quilt_clock_t\"(\"id\",\"tenantId\",_stamps) VALUES(?,?,?) ON CONFLICT(\"id\",\"tenantId\") DO UPDATE SET _stamps=excluded._stamps";
const CLOCK_MERGE: &str = "INSERT INTO \"_quilt_clock_t\"(\"id\",\"tenantId\",_stamps) VALUES(?,?,?) ON CONFLICT(\"id\",\"tenantId\") DO UPDATE SET _stamps=quilt_clock_merge(_stamps, excluded._stamps)";

const RUNS: &str = "CREATE TABLE _quilt_runs(tbl TEXT NOT NULL, origin INTEGER NOT NULL, seq0 INTEGER NOT NULL, rowid0 INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (tbl, origin, seq0)) WITHOUT ROWID;";
const RUNS_UPSERT: &str =
    "INSERT OR REPLACE INTO _quilt_runs(tbl, origin, seq0, rowid0, n) VALUES('t', 1, 1, 1, ?1)";

const STAMP_LEN: usize = 20;

#[derive(Clone, Copy, PartialEq)]
enum Stamps {
    /// No stamps written.
    None,
    /// Clock row in `_quilt_clock_t`, quilt's BLOB (name, stamp) pairs.
    ClockReplace,
    ClockMerge,
    /// quilt's clock now: slots by ordinal (a header byte, 20 bytes per
    /// column), set with an upsert that keeps the row's `_deleted` stamp.
    ClockSet,
    /// Fixed-width slots in a hidden column of the base table.
    Hidden,
}

struct Case {
    key: &'static str,
    label: &'static str,
    patch: bool,
    index: bool,
    stamps: Stamps,
    /// One `_quilt_runs` row written per transaction (runs.rs).
    runs: bool,
}

const CASES: &[Case] = &[
    Case {
        key: "upsert",
        label: "(i)    base-row upsert only",
        patch: false,
        index: false,
        stamps: Stamps::None,
        runs: false,
    },
    Case {
        key: "patch",
        label: "(ii)   + patch row",
        patch: true,
        index: false,
        stamps: Stamps::None,
        runs: false,
    },
    Case {
        key: "index",
        label: "(iii)  + (_peerId, _sequenceId) index",
        patch: true,
        index: true,
        stamps: Stamps::None,
        runs: false,
    },
    Case {
        key: "quilt_v1",
        label: "(iv)   + clock row = quilt's SQL until runs",
        patch: true,
        index: true,
        stamps: Stamps::ClockReplace,
        runs: false,
    },
    Case {
        key: "quilt_merge",
        label: "(iv-m) (iv), clock merge upsert",
        patch: true,
        index: true,
        stamps: Stamps::ClockMerge,
        runs: false,
    },
    Case {
        key: "clock_noindex",
        label: "(v-a)  clock table, no patch index",
        patch: true,
        index: false,
        stamps: Stamps::ClockReplace,
        runs: false,
    },
    Case {
        key: "quilt",
        label: "(v-r)  slots clock + run map row = quilt's SQL",
        patch: true,
        index: false,
        stamps: Stamps::ClockSet,
        runs: true,
    },
    Case {
        key: "hidden",
        label: "(v-b)  stamps in hidden column, index",
        patch: true,
        index: true,
        stamps: Stamps::Hidden,
        runs: false,
    },
    Case {
        key: "hidden_noindex",
        label: "(v-c)  stamps in hidden column, no index",
        patch: true,
        index: false,
        stamps: Stamps::Hidden,
        runs: false,
    },
];
/// Cases run again in autocommit.
const AUTO: &[&str] = &["upsert", "quilt_v1", "quilt", "hidden_noindex"];

struct Row {
    id: i64,
    tenant: i64,
    name: String,
    score: f64,
}

/// bench.js's makeRows.
fn make_rows(n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| Row {
            id: i as i64 + 1,
            tenant: 1 + (i % 16) as i64,
            name: format!("name-{}", i + 1),
            score: i as f64 * 0.25,
        })
        .collect()
}

/// quilt's clock BLOB for the non-key columns `name`, `score` (sorted,
/// each a length byte, the name, a 20-byte stamp) and the stamp offsets.
fn clock_template() -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for name in ["name", "score"] {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        slots.push(out.len());
        out.extend_from_slice(&[0u8; STAMP_LEN]);
    }
    (out, slots)
}

/// Fixed-width slots, one per non-key column ordinal.
fn slots_template() -> (Vec<u8>, Vec<usize>) {
    (vec![0u8; 2 * STAMP_LEN], vec![0, STAMP_LEN])
}

fn fill(buf: &mut [u8], slots: &[usize], at: u64, peer: u32, seq: u64) {
    for &o in slots {
        let s = &mut buf[o..o + STAMP_LEN];
        s[0..8].copy_from_slice(&at.to_be_bytes());
        s[8..12].copy_from_slice(&peer.to_be_bytes());
        s[12..20].copy_from_slice(&seq.to_be_bytes());
    }
}

fn open(path: &Path, case: &Case, autocheckpoint: i64) -> Res<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", autocheckpoint)?;
    // Stands in for quilt's merge: on fresh keys it is never called.
    conn.create_scalar_function(
        "quilt_clock_merge",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| ctx.get::<Vec<u8>>(1),
    )?;
    let mut ddl = String::from(if case.stamps == Stamps::Hidden {
        BASE_HIDDEN
    } else {
        BASE
    });
    if case.patch {
        ddl.push_str(PATCHES);
    }
    if case.index {
        ddl.push_str(INDEX);
    }
    if matches!(case.stamps, Stamps::ClockReplace | Stamps::ClockMerge) {
        ddl.push_str(CLOCK);
    }
    if case.stamps == Stamps::ClockSet {
        ddl.push_str(CLOCK_WITH_DELETED);
    }
    if case.runs {
        ddl.push_str(RUNS);
    }
    conn.execute_batch(&ddl)?;
    // Start every case with an empty WAL.
    wal_frames_truncate(&conn)?;
    Ok(conn)
}

/// Frames in the WAL (the `log` column of a passive checkpoint), then the
/// WAL checkpointed and truncated (a TRUNCATE checkpoint reports 0).
fn wal_frames_truncate(conn: &Connection) -> Res<u64> {
    let log: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(log.max(0) as u64)
}

struct Stmts<'c> {
    patch: Option<Statement<'c>>,
    upsert: Statement<'c>,
    clock: Option<Statement<'c>>,
    template: Vec<u8>,
    slots: Vec<usize>,
    buf: Vec<u8>,
}

impl<'c> Stmts<'c> {
    fn new(conn: &'c Connection, case: &Case) -> Res<Stmts<'c>> {
        let (template, slots) = match case.stamps {
            Stamps::Hidden => slots_template(),
            Stamps::ClockSet => {
                let (mut t, slots) = slots_template();
                t.insert(0, 2); // format-2 header (src/core/clock.rs)
                (t, slots.iter().map(|o| o + 1).collect())
            }
            _ => clock_template(),
        };
        Ok(Stmts {
            patch: if case.patch {
                Some(conn.prepare(PATCH_INSERT)?)
            } else {
                None
            },
            upsert: conn.prepare(if case.stamps == Stamps::Hidden {
                UPSERT_HIDDEN
            } else {
                UPSERT
            })?,
            clock: match case.stamps {
                Stamps::ClockReplace => Some(conn.prepare(CLOCK_REPLACE)?),
                Stamps::ClockMerge => Some(conn.prepare(CLOCK_MERGE)?),
                Stamps::ClockSet => Some(conn.prepare(CLOCK_SET)?),
                _ => None,
            },
            buf: template.clone(),
            template,
            slots,
        })
    }

    /// One local write: the statements quilt's `Run::write` executes.
    fn write(&mut self, case: &Case, r: &Row, seq: u64) -> Res<()> {
        const PEER: u32 = 1;
        let at = 1_790_000_000_000u64 + seq;
        if let Some(p) = self.patch.as_mut() {
            p.raw_bind_parameter(1, at as i64)?;
            p.raw_bind_parameter(2, seq as i64)?;
            p.raw_bind_parameter(3, PEER as i64)?;
            p.raw_bind_parameter(4, None::<&str>)?;
            p.raw_bind_parameter(5, r.id)?;
            p.raw_bind_parameter(6, r.tenant)?;
            p.raw_bind_parameter(7, r.name.as_str())?;
            p.raw_bind_parameter(8, r.score)?;
            p.raw_execute()?;
        }
        if case.stamps != Stamps::None {
            self.buf.clear();
            self.buf.extend_from_slice(&self.template);
            fill(&mut self.buf, &self.slots, at, PEER, seq);
        }
        let u = &mut self.upsert;
        u.raw_bind_parameter(1, r.id)?;
        u.raw_bind_parameter(2, r.tenant)?;
        u.raw_bind_parameter(3, r.name.as_str())?;
        u.raw_bind_parameter(4, r.score)?;
        if case.stamps == Stamps::Hidden {
            u.raw_bind_parameter(5, &self.buf[..])?;
        }
        u.raw_execute()?;
        if let Some(c) = self.clock.as_mut() {
            c.raw_bind_parameter(1, r.id)?;
            c.raw_bind_parameter(2, r.tenant)?;
            c.raw_bind_parameter(3, &self.buf[..])?;
            c.raw_execute()?;
        }
        Ok(())
    }

    /// How many statements one write executes.
    fn statements(&self) -> usize {
        1 + self.patch.is_some() as usize + self.clock.is_some() as usize
    }
}

/// The run map row a commit writes (runs.rs `flush`).
fn write_run(conn: &Connection, n: usize) -> Res<()> {
    conn.prepare_cached(RUNS_UPSERT)?
        .execute(rusqlite::params![n as i64])?;
    Ok(())
}

/// All rows in one transaction. Returns (ms, WAL frames the commit wrote).
fn one_txn(path: &Path, case: &Case, rows: &[Row]) -> Res<(f64, u64)> {
    let conn = open(path, case, 4000)?;
    let t0 = Instant::now();
    {
        conn.execute_batch("BEGIN")?;
        let mut st = Stmts::new(&conn, case)?;
        for (i, r) in rows.iter().enumerate() {
            st.write(case, r, i as u64 + 1)?;
        }
        drop(st);
        if case.runs {
            write_run(&conn, rows.len())?;
        }
        conn.execute_batch("COMMIT")?;
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    // The WAL started empty and a checkpoint does not shrink it: its size
    // is every frame this transaction wrote (spills included).
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let wal = std::fs::metadata(wal_path(path))
        .map(|m| m.len())
        .unwrap_or(0);
    let frames = wal.saturating_sub(32) / (page as u64 + 24);
    drop(conn);
    remove_db(path);
    Ok((ms, frames))
}

/// One transaction per row (a single statement runs in SQLite's own
/// autocommit; several are wrapped in BEGIN/COMMIT, as quilt's `upsert()`
/// does). With `count`, checkpoints are off and the result is WAL frames
/// per commit instead of the time.
fn autocommit(path: &Path, case: &Case, rows: &[Row], count: bool) -> Res<(f64, f64)> {
    let conn = open(path, case, if count { 0 } else { 4000 })?;
    let mut frames = 0u64;
    let t0 = Instant::now();
    {
        let mut st = Stmts::new(&conn, case)?;
        let wrap = st.statements() > 1;
        let mut begin = conn.prepare("BEGIN")?;
        let mut commit = conn.prepare("COMMIT")?;
        for (i, r) in rows.iter().enumerate() {
            if wrap {
                begin.raw_execute()?;
            }
            st.write(case, r, i as u64 + 1)?;
            // quilt keeps a run that only grew in memory for up to 512
            // commits (runs/tail.rs).
            if case.runs && i % 512 == 0 {
                write_run(&conn, i + 1)?;
            }
            if wrap {
                commit.raw_execute()?;
            }
            if count && (i + 1) % 1000 == 0 {
                frames += wal_frames_truncate(&conn)?;
            }
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if count {
        frames += wal_frames_truncate(&conn)?;
    }
    drop(conn);
    remove_db(path);
    Ok((ms, frames as f64 / rows.len().max(1) as f64))
}

fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(s));
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn env_usize(name: &str, dflt: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(dflt)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> Res<()> {
    let n = env_usize("BENCH_N", 100_000);
    let runs = env_usize("BENCH_RUNS", 3);
    let n_auto = (n / 10).max(1);
    let dir = std::env::temp_dir().join(format!("quilt-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("f.db");
    let result = if std::env::var_os("BENCH_FLOOR_ONLY").is_some() {
        only_floor(&db, n, runs)
    } else {
        run(&db, n, runs, n_auto)
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `BENCH_FLOOR_ONLY=1`: only quilt's SQL (v-r) in one transaction, as
/// JSON `{floorMs, runs}`. bench.js runs it right after each run of (a),
/// so (g) compares two timings taken seconds apart, not minutes.
fn only_floor(db: &Path, n: usize, runs: usize) -> Res<()> {
    let Some(c) = CASES.iter().find(|c| c.key == "quilt") else {
        return Err("no quilt case".into());
    };
    one_txn(db, c, &make_rows(2000.min(n)))?;
    let rows = make_rows(n);
    let mut ms = Vec::new();
    for _ in 0..runs {
        ms.push(one_txn(db, c, &rows)?.0);
    }
    let out = serde_json::json!({ "floorMs": median(&mut ms.clone()), "runs": ms });
    println!("{out}");
    Ok(())
}

fn run(db: &Path, n: usize, runs: usize, n_auto: usize) -> Res<()> {
    let rows = make_rows(n);
    let rows_auto = make_rows(n_auto);
    let load_before = loadavg();
    println!(
        "quilt's SQL floor through rusqlite: SQLite {} (bundled), N={n}, median of {runs}, file DB in WAL, synchronous=NORMAL, wal_autocheckpoint=4000, load {load_before}",
        rusqlite::version()
    );

    // Warm-up (page cache, allocator) on a small set.
    let warm = make_rows(2000.min(n));
    for c in CASES {
        one_txn(db, c, &warm)?;
    }

    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut frames = vec![0u64; CASES.len()];
    let auto_cases: Vec<&Case> = AUTO
        .iter()
        .filter_map(|k| CASES.iter().find(|c| c.key == *k))
        .collect();
    let mut auto_ms: Vec<Vec<f64>> = vec![Vec::new(); auto_cases.len()];
    for _ in 0..runs {
        for (i, c) in CASES.iter().enumerate() {
            let (t, f) = one_txn(db, c, &rows)?;
            ms[i].push(t);
            frames[i] = f;
        }
        for (i, c) in auto_cases.iter().enumerate() {
            auto_ms[i].push(autocommit(db, c, &rows_auto, false)?.0);
        }
    }
    let mut auto_pages = Vec::new();
    for c in &auto_cases {
        auto_pages.push(autocommit(db, c, &rows_auto, true)?.1);
    }

    let med: Vec<f64> = ms.iter_mut().map(|v| median(v)).collect();
    let auto_med: Vec<f64> = auto_ms.iter_mut().map(|v| median(v)).collect();
    println!();
    let head = |title: String, last: &str| {
        println!("{title:<47}{:>9}{:>9}{last:>14}", "ms", "vs (i)");
    };
    head(format!("one transaction, {n} rows"), "WAL frames");
    for (i, c) in CASES.iter().enumerate() {
        println!(
            "  {:<45}{:>9.1}{:>8.2}x{:>14}",
            c.label,
            med[i],
            med[i] / med[0],
            frames[i]
        );
    }
    head(
        format!("autocommit, {n_auto} rows, a transaction each"),
        "pages/commit",
    );
    for (i, c) in auto_cases.iter().enumerate() {
        println!(
            "  {:<45}{:>9.1}{:>8.2}x{:>14.2}",
            c.label,
            auto_med[i],
            auto_med[i] / auto_med[0],
            auto_pages[i]
        );
    }
    let load_after = loadavg();
    println!("load average after: {load_after}");

    let mut one = serde_json::Map::new();
    for (i, c) in CASES.iter().enumerate() {
        one.insert(
            c.key.into(),
            serde_json::json!({ "label": c.label.trim(), "ms": med[i], "ratio": med[i] / med[0], "walFrames": frames[i], "runs": ms[i] }),
        );
    }
    let mut auto = serde_json::Map::new();
    for (i, c) in auto_cases.iter().enumerate() {
        auto.insert(
            c.key.into(),
            serde_json::json!({ "label": c.label.trim(), "ms": auto_med[i], "ratio": auto_med[i] / auto_med[0], "pagesPerCommit": auto_pages[i], "runs": auto_ms[i] }),
        );
    }
    let out = serde_json::json!({
        "n": n,
        "runs": runs,
        "sqlite": rusqlite::version(),
        "load": [load_before, load_after],
        "floorMs": med[CASES.iter().position(|c| c.key == "quilt").unwrap_or(0)],
        "oneTxn": one,
        "autocommit": { "n": n_auto, "cases": auto },
    });
    println!("{out}");
    Ok(())
}
