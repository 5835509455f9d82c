//! Migrations forward and backward, recorded in the database, idempotent on
//! reopen, with clear E_SCHEMA errors naming the table.

use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::value::Value;

fn m(up: &str, down: &str) -> Migration {
    Migration {
        up: up.into(),
        down: Some(down.into()),
        renames: vec![],
    }
}

fn v1() -> Migration {
    m(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT); CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, a TEXT);",
        "DROP TABLE t; DROP TABLE t_patches;",
    )
}

fn v2() -> Migration {
    m(
        "ALTER TABLE t ADD COLUMN b INTEGER; ALTER TABLE t_patches ADD COLUMN b INTEGER;",
        "ALTER TABLE t DROP COLUMN b; ALTER TABLE t_patches DROP COLUMN b;",
    )
}

fn open(path: &str, peer: Option<u32>) -> Engine {
    Engine::open(Config {
        path: path.into(),
        peer_id: peer,
        ..Config::default()
    })
    .unwrap()
}

fn row(id: i64, col: &str, v: Value) -> Vec<(String, Value)> {
    vec![("id".into(), Value::Int(id)), (col.into(), v)]
}

#[test]
fn up_down_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut e = open(&path, Some(3));
    assert_eq!(e.migrate(&[v1(), v2()]).unwrap(), (0, 2));
    e.upsert("t", vec![row(1, "b", Value::Int(7))]).unwrap();
    assert_eq!(e.migrate(&[v1(), v2()]).unwrap(), (2, 2));
    // Down to v1: the column goes, its value is kept whole.
    assert_eq!(e.migrate(&[v1()]).unwrap(), (2, 1));
    assert!(e
        .upsert("t", vec![row(2, "b", Value::Int(1))])
        .is_err_and(|err| err.code() == "E_SCHEMA"));
    assert_eq!(e.pending(), 1);
    e.close().unwrap();
    drop(e);
    // Reopen: the version is recorded; going up again brings the value back.
    let mut e = open(&path, None);
    assert_eq!(e.peer_id(), 3);
    assert_eq!(e.schema_version(), 1);
    assert_eq!(e.migrate(&[v1(), v2()]).unwrap(), (1, 2));
    assert_eq!(e.pending(), 0);
    let rows = e
        .query("SELECT b FROM t WHERE id = 1", &[], true)
        .unwrap()
        .1;
    assert_eq!(rows[0][0], Value::Int(7));
    // All the way down, using the stored down steps.
    assert_eq!(e.migrate(&[]).unwrap(), (2, 0));
    assert!(e.tables().is_empty());
}

#[test]
fn schema_errors_name_the_table() {
    let mut e = Engine::open(Config::default()).unwrap();
    let no_pk = Migration { up: "CREATE TABLE nokey (a TEXT); CREATE TABLE nokey_patches (_patchedAt INTEGER, _sequenceId INTEGER, _peerId INTEGER, a TEXT);".into(), ..Default::default() };
    let err = e.migrate(&[no_pk]).unwrap_err();
    assert_eq!(err.code(), "E_SCHEMA");
    assert!(err.to_string().contains("nokey"), "{err}");
    // The failed migration left nothing behind.
    assert_eq!(e.schema_version(), 0);
    assert!(e
        .query(
            "SELECT name FROM sqlite_master WHERE name = 'nokey'",
            &[],
            false
        )
        .unwrap()
        .1
        .is_empty());
    let no_reserved = Migration { up: "CREATE TABLE r (id INTEGER PRIMARY KEY); CREATE TABLE r_patches (_patchedAt INTEGER, id INTEGER);".into(), ..Default::default() };
    let err = e.migrate(&[no_reserved]).unwrap_err();
    assert_eq!(err.code(), "E_SCHEMA");
    assert!(err.to_string().contains("r_patches"), "{err}");
    let bad_sql = Migration {
        up: "CREATE TABLE oops (".into(),
        ..Default::default()
    };
    assert_eq!(e.migrate(&[bad_sql]).unwrap_err().code(), "E_SCHEMA");
}

#[test]
fn down_several_steps_reads_only_columns_still_there() {
    // v3 drops `c` on the way down, then v2 drops `b`: the second step must
    // not read `c` again (a missing "c" would read as the text 'c').
    let v3 = m(
        "ALTER TABLE t ADD COLUMN c INTEGER; ALTER TABLE t_patches ADD COLUMN c INTEGER;",
        "ALTER TABLE t DROP COLUMN c; ALTER TABLE t_patches DROP COLUMN c;",
    );
    let all = [v1(), v2(), v3];
    let mut e = Engine::open(Config {
        peer_id: Some(4),
        ..Config::default()
    })
    .unwrap();
    e.migrate(&all).unwrap();
    let mut r1 = row(1, "b", Value::Int(1));
    r1.push(("c".into(), Value::Int(2)));
    e.upsert("t", vec![r1]).unwrap();
    e.upsert("t", vec![row(2, "a", Value::Text("y".into()))])
        .unwrap();
    assert_eq!(e.migrate(&all[..1]).unwrap(), (3, 1));
    assert_eq!(e.migrate(&all).unwrap(), (1, 3));
    let rows = e
        .query("SELECT id, b, c FROM t ORDER BY id", &[], false)
        .unwrap()
        .1;
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Int(1), Value::Int(2)],
            vec![Value::Int(2), Value::Null, Value::Null],
        ]
    );
    assert_eq!(e.pending(), 0);
}

/// A migration whose COMMIT fails (here a deferred foreign key the steps
/// broke) is undone whole: the version stays, its tables are gone, and the
/// engine writes on as before.
#[test]
fn a_failed_commit_undoes_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut e = open(&path, Some(3));
    e.migrate(&[v1()]).unwrap();
    e.upsert("t", vec![row(1, "a", Value::Text("x".into()))])
        .unwrap();
    e.connection()
        .execute_batch("PRAGMA foreign_keys=ON")
        .unwrap();
    let bad = m(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED); INSERT INTO child VALUES (7);",
        "DROP TABLE child; DROP TABLE parent;",
    );
    assert!(e.migrate(&[v1(), bad]).is_err());
    assert_eq!(e.schema_version(), 1);
    assert!(e.connection().is_autocommit(), "no transaction left open");
    let (_, tables) = e
        .query(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('parent', 'child')",
            &[],
            true,
        )
        .unwrap();
    assert_eq!(tables, vec![vec![Value::Int(0)]]);
    e.upsert("t", vec![row(2, "a", Value::Text("y".into()))])
        .unwrap();
    e.close().unwrap();
    drop(e);
    let mut e = open(&path, None);
    assert_eq!(e.migrate(&[v1(), v2()]).unwrap(), (1, 2));
    let (_, rows) = e
        .query("SELECT id, a FROM t ORDER BY id", &[], false)
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Text("x".into())],
            vec![Value::Int(2), Value::Text("y".into())]
        ]
    );
    let (_, patches) = e
        .query("SELECT _sequenceId FROM t_patches ORDER BY 1", &[], false)
        .unwrap();
    assert_eq!(patches, vec![vec![Value::Int(1)], vec![Value::Int(2)]]);
}
