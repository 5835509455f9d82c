//! `all()`/`get()` (Engine::query) run behind a read-only fence: nothing
//! they are given may change the database or the connection, and the write
//! path keeps working after a refused statement.

use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::error::Error;
use quilt::core::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);";

fn engine(path: &str) -> Engine {
    let mut e = Engine::open(Config {
        path: path.into(),
        peer_id: Some(1),
        ..Config::default()
    })
    .expect("open");
    e.migrate(&[Migration {
        up: SCHEMA.into(),
        ..Migration::default()
    }])
    .expect("migrate");
    e
}

fn row(id: i64, v: &str) -> Vec<(String, Value)> {
    vec![
        ("id".into(), Value::Int(id)),
        ("v".into(), Value::Text(v.into())),
    ]
}

fn count(e: &Engine) -> Value {
    let (_, rows) = e.query("SELECT count(*) FROM t", &[], true).expect("count");
    rows[0][0].clone()
}

const REFUSED: &[&str] = &[
    "BEGIN",
    "BEGIN IMMEDIATE",
    "BEGIN EXCLUSIVE",
    "COMMIT",
    "END",
    "ROLLBACK",
    "SAVEPOINT s1",
    "RELEASE s1",
    "ROLLBACK TO s1",
    "ATTACH DATABASE ':memory:' AS other",
    "DETACH DATABASE other",
    "PRAGMA query_only = 1",
    "PRAGMA foreign_keys = OFF",
    "PRAGMA foreign_keys = ON",
    "PRAGMA synchronous = OFF",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA wal_autocheckpoint = 0",
    "PRAGMA recursive_triggers = 1",
    "PRAGMA writable_schema = 1",
    "PRAGMA optimize",
    "PRAGMA wal_checkpoint(TRUNCATE)",
    "VACUUM",
    "INSERT INTO t(id, v) VALUES (100, 'sql')",
    "UPDATE t SET v = 'x'",
    "DELETE FROM t",
    "CREATE TABLE u (a)",
    "CREATE TEMP TABLE u (a)",
    "CREATE TEMP VIEW w AS SELECT 1",
    "DROP TABLE t_patches",
    "ALTER TABLE t ADD COLUMN z",
    "ANALYZE",
    "REINDEX",
];

fn refuses_everything(path: &str) {
    let mut e = engine(path);
    e.upsert("t", vec![row(1, "a")]).expect("first write");
    let (_, fk0) = e.query("PRAGMA foreign_keys", &[], true).expect("fk");
    for (i, sql) in REFUSED.iter().enumerate() {
        match e.query(sql, &[], false) {
            Err(Error::ReadOnly(msg)) => assert!(msg.contains(sql), "{sql}: {msg}"),
            other => panic!("{sql} must be refused with ReadOnly, got {other:?}"),
        }
        assert!(
            e.connection().is_autocommit(),
            "{sql} left a transaction open"
        );
        // Writes keep working after every refusal, and are durable.
        let id = 2 + i as i64;
        e.upsert("t", vec![row(id, sql)])
            .unwrap_or_else(|err| panic!("upsert after {sql}: {err}"));
        assert_eq!(count(&e), Value::Int(id));
    }
    let (_, dbs) = e
        .query("PRAGMA database_list", &[], false)
        .expect("database_list");
    assert_eq!(dbs.len(), 1, "nothing attached: {dbs:?}");
    let (_, v) = e.query("PRAGMA user_version", &[], true).expect("uv");
    assert_eq!(v[0][0], Value::Int(0));
    let (_, fk) = e.query("PRAGMA foreign_keys", &[], true).expect("fk");
    assert_eq!(fk, fk0, "foreign_keys unchanged");
}

#[test]
fn reads_refuse_every_write_and_connection_change_in_memory() {
    refuses_everything(":memory:");
}

#[test]
fn reads_refuse_every_write_and_connection_change_on_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("r.db");
    let path = db.to_string_lossy().to_string();
    refuses_everything(&path);
    // Reopened: every write made after a refusal is there.
    let e = Engine::open(Config {
        path,
        ..Config::default()
    })
    .expect("reopen");
    assert_eq!(count(&e), Value::Int(1 + REFUSED.len() as i64));
}

#[test]
fn reads_still_allow_selects_and_read_only_pragmas() {
    let mut e = engine(":memory:");
    e.upsert("t", vec![row(1, "a"), row(2, "b")])
        .expect("write");
    for sql in [
        "SELECT * FROM t ORDER BY id",
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x FROM n",
        "PRAGMA table_info(t)",
        "PRAGMA main.table_info('t_patches')",
        "PRAGMA index_list(_quilt_meta)",
        "PRAGMA user_version",
        "PRAGMA foreign_keys",
        "PRAGMA integrity_check",
        "SELECT name FROM pragma_table_info('t') ORDER BY cid",
        "SELECT * FROM sqlite_schema",
        "EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = 1",
    ] {
        let (_, rows) = e
            .query(sql, &[], false)
            .unwrap_or_else(|err| panic!("{sql} must be allowed: {err}"));
        assert!(!rows.is_empty(), "{sql} returned nothing");
    }
    let (names, rows) = e
        .query(
            "SELECT name FROM pragma_table_info('t') ORDER BY cid",
            &[],
            false,
        )
        .expect("pragma function");
    assert_eq!(names, vec!["name".to_string()]);
    assert_eq!(
        rows,
        vec![
            vec![Value::Text("id".into())],
            vec![Value::Text("v".into())]
        ]
    );
}

#[test]
fn the_fence_is_lifted_after_a_refusal_for_migrations_and_writes() {
    let mut e = engine(":memory:");
    assert!(matches!(
        e.query("BEGIN", &[], false),
        Err(Error::ReadOnly(_))
    ));
    // A migration (DDL, outside all()/get()) still runs.
    e.migrate(&[
        Migration {
            up: SCHEMA.into(),
            ..Migration::default()
        },
        Migration {
            up: "ALTER TABLE t ADD COLUMN w INTEGER; ALTER TABLE t_patches ADD COLUMN w INTEGER;"
                .into(),
            ..Migration::default()
        },
    ])
    .expect("migrate after a refused read");
    e.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(9)),
            ("w".into(), Value::Int(3)),
        ]],
    )
    .expect("write after migrate");
    let (_, rows) = e
        .query("SELECT w FROM t WHERE id = 9", &[], true)
        .expect("read");
    assert_eq!(rows[0][0], Value::Int(3));
    // Same text as a refused statement, after writes: still refused.
    assert!(matches!(
        e.query("BEGIN", &[], false),
        Err(Error::ReadOnly(_))
    ));
}

/// The fence costs the write path nothing measurable: writes interleaved
/// with reads, with the authorizer installed and with it removed. Run with
/// `cargo test --release --test readonly -- --ignored --nocapture`.
#[test]
#[ignore]
fn the_fence_does_not_slow_writes() {
    use rusqlite::hooks::{AuthContext, Authorization};
    let run = |fenced: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = engine(&dir.path().join("b.db").to_string_lossy());
        if !fenced {
            e.connection()
                .authorizer(None::<fn(AuthContext<'_>) -> Authorization>);
        }
        let t0 = std::time::Instant::now();
        for i in 0..20_000i64 {
            e.upsert("t", vec![row(i % 5000, "v")]).expect("write");
            if i % 10 == 0 {
                e.query(
                    "SELECT v FROM t WHERE id = ?",
                    &[Value::Int(i % 5000)],
                    true,
                )
                .expect("read");
            }
        }
        t0.elapsed()
    };
    for round in 0..3 {
        let (with, without) = (run(true), run(false));
        println!("round {round}: fenced {with:?}, unfenced {without:?}");
    }
}
