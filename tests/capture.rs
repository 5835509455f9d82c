//! Captured SQL (exec/prepare) and units of work, at the engine level: SQL
//! writes to replicated tables become patches that reach another engine,
//! refused statements change nothing, and a rolled-back transaction leaves
//! nothing to ship.

use quilt::core::engine::{Config, Engine, Migration, Params, SqlMode};
use quilt::core::error::Error;
use quilt::core::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER);
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, a TEXT, b INTEGER);
CREATE TABLE local (k INTEGER PRIMARY KEY, v TEXT);";

fn engine(peer: u32) -> Engine {
    let mut e = Engine::open(Config {
        path: ":memory:".into(),
        peer_id: Some(peer),
        heartbeat_ms: 0,
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

fn patches(e: &Engine) -> Vec<Vec<Value>> {
    e.query(
        "SELECT _sequenceId, id, a, b FROM t_patches ORDER BY _sequenceId",
        &[],
        false,
    )
    .expect("patches")
    .1
}

fn pair() -> (Engine, Engine) {
    let mut a = engine(1);
    let mut b = engine(2);
    a.add_peer(2).expect("add");
    b.add_peer(1).expect("add");
    (a, b)
}

fn ship(from: &mut Engine, to: &mut Engine) -> usize {
    let out = from.drain_outbox();
    let n = out.len();
    for o in out {
        to.apply_frame(&o.frame).expect("apply");
    }
    n
}

#[test]
fn insert_update_upsert_become_patches_of_changed_columns() {
    let (mut a, mut b) = pair();
    a.exec_sql("INSERT INTO t(id, a, b) VALUES (1, 'x', 10), (2, 'y', 20)")
        .expect("insert");
    let out = a
        .run_sql(
            "UPDATE t SET b = b + 1 WHERE id = ?",
            Params::Positional(&[Value::Int(1)]),
            SqlMode::Run,
        )
        .expect("update");
    assert_eq!(out.changes, 1);
    assert_eq!(out.seq, 3);
    a.run_sql(
        "INSERT INTO t(id, a, b) VALUES (2, 'z', 20) ON CONFLICT(id) DO UPDATE SET a = excluded.a, b = excluded.b",
        Params::Positional(&[]),
        SqlMode::Run,
    )
    .expect("upsert");
    let p = patches(&a);
    assert_eq!(p.len(), 4, "{p:?}");
    // The update carries the key and b only; the upsert the key and a only.
    assert_eq!(
        p[2],
        vec![Value::Int(3), Value::Int(1), Value::Null, Value::Int(11)]
    );
    assert_eq!(
        p[3],
        vec![
            Value::Int(4),
            Value::Int(2),
            Value::Text("z".into()),
            Value::Null
        ]
    );
    // Unchanged: no patch.
    a.exec_sql("UPDATE t SET a = a").expect("noop");
    assert_eq!(patches(&a).len(), 4);
    assert!(ship(&mut a, &mut b) > 0);
    let rows = b
        .query("SELECT id, a, b FROM t ORDER BY id", &[], false)
        .unwrap()
        .1;
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Text("x".into()), Value::Int(11)],
            vec![Value::Int(2), Value::Text("z".into()), Value::Int(20)],
        ]
    );
}

#[test]
fn refused_statements_change_nothing() {
    let mut a = engine(1);
    let ro = a.exec_sql(
        "INSERT INTO t_patches(_patchedAt, _sequenceId, _peerId, id) VALUES (1, 1, 1, 1)",
    );
    assert!(matches!(ro, Err(Error::ReadOnly(_))), "{ro:?}");
    let ro = a.exec_sql("DELETE FROM _quilt_state");
    assert!(matches!(ro, Err(Error::ReadOnly(_))), "{ro:?}");
    for ddl in [
        "ALTER TABLE t ADD COLUMN c TEXT",
        "DROP TABLE t",
        "CREATE INDEX ix ON t(a)",
        "CREATE TABLE u_patches(x)",
    ] {
        let r = a.exec_sql(ddl);
        assert!(matches!(r, Err(Error::Schema(_))), "{ddl}: {r:?}");
    }
    a.exec_sql("INSERT INTO t(id, a) VALUES (1, 'x')").unwrap();
    assert_eq!(a.seq(), 1);
    // A failing statement in a batch rolls the whole batch back.
    let r = a.exec_sql("INSERT INTO t(id, a) VALUES (2, 'y'); INSERT INTO nope VALUES (1)");
    assert!(r.is_err());
    assert_eq!(a.seq(), 1);
    assert_eq!(patches(&a).len(), 1);
    // Local tables and their DDL stay local.
    a.exec_sql("CREATE TABLE scratch(x); INSERT INTO local(k, v) VALUES (1, 'l')")
        .unwrap();
    assert_eq!(a.seq(), 1);
    assert!(matches!(a.exec_sql("BEGIN"), Err(Error::Arg(_))));
}

#[test]
fn a_rolled_back_unit_ships_nothing_and_reuses_its_seqs() {
    let (mut a, mut b) = pair();
    a.begin_transaction().unwrap();
    a.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(1)),
            ("a".into(), Value::Text("x".into())),
        ]],
    )
    .unwrap();
    a.exec_sql("INSERT INTO t(id, a) VALUES (2, 'y')").unwrap();
    // Nothing leaves while the transaction is open.
    assert_eq!(ship(&mut a, &mut b), 0);
    a.rollback_transaction().unwrap();
    assert_eq!(a.seq(), 0);
    assert_eq!(ship(&mut a, &mut b), 0);
    assert!(!a.has(1, 1));
    // Nested: the inner rollback keeps the outer writes.
    a.begin_transaction().unwrap();
    a.exec_sql("INSERT INTO t(id, a) VALUES (3, 'z')").unwrap();
    a.begin_transaction().unwrap();
    a.exec_sql("INSERT INTO t(id, a) VALUES (4, 'w')").unwrap();
    a.rollback_transaction().unwrap();
    a.upsert("t", vec![vec![("id".into(), Value::Int(5))]])
        .unwrap();
    a.commit_transaction().unwrap();
    assert_eq!(a.seq(), 2);
    assert!(a.has(1, 2));
    assert_eq!(
        ship(&mut a, &mut b),
        1,
        "one frame for the whole transaction"
    );
    let ids = b
        .query("SELECT id FROM t ORDER BY id", &[], false)
        .unwrap()
        .1;
    assert_eq!(ids, vec![vec![Value::Int(3)], vec![Value::Int(5)]]);
}

#[test]
fn changes_are_collected_only_while_asked() {
    let (mut a, mut b) = pair();
    a.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(1)),
            ("a".into(), Value::Text("x".into())),
        ]],
    )
    .unwrap();
    assert!(a.take_changes().is_empty());
    a.collect_changes(true);
    b.collect_changes(true);
    a.begin_transaction().unwrap();
    a.exec_sql("UPDATE t SET b = 5 WHERE id = 1").unwrap();
    a.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(2)),
            ("deletedAt".into(), Value::Null),
        ]],
    )
    .unwrap_err();
    a.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(2)),
            ("b".into(), Value::Int(1)),
        ]],
    )
    .unwrap();
    a.commit_transaction().unwrap();
    let batches = a.take_changes();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].len(), 2);
    assert_eq!(batches[0][0].columns, vec!["b".to_string()]);
    assert_eq!(batches[0][0].key, vec![("id".to_string(), Value::Int(1))]);
    ship(&mut a, &mut b);
    let remote = b.take_changes();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(remote[0].len(), 3);
    assert!(remote[0].iter().all(|c| c.origin == 1));
}

#[test]
fn patches_of_rolled_back_and_committed_units_are_served_to_a_late_peer() {
    let mut a = engine(1);
    // Committed, rolled back, nested: the run map must match the rows kept.
    a.exec_sql("INSERT INTO t(id, a) VALUES (1, 'x')").unwrap();
    a.begin_transaction().unwrap();
    a.exec_sql("INSERT INTO t(id, a) VALUES (2, 'gone')")
        .unwrap();
    a.rollback_transaction().unwrap();
    a.begin_transaction().unwrap();
    a.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(3)),
            ("a".into(), Value::Text("y".into())),
        ]],
    )
    .unwrap();
    a.begin_transaction().unwrap();
    a.exec_sql("UPDATE t SET b = 1 WHERE id = 1").unwrap();
    a.rollback_transaction().unwrap();
    a.exec_sql("UPDATE t SET b = 2 WHERE id = 1").unwrap();
    a.commit_transaction().unwrap();
    assert_eq!(a.seq(), 3);
    // A peer that joins now fetches every patch through the gap protocol.
    let mut c = engine(3);
    let mut frames: Vec<(u32, Vec<u8>)> = Vec::new();
    frames.extend(
        a.add_peer(3)
            .unwrap()
            .into_iter()
            .map(|o| (o.peer, o.frame)),
    );
    frames.extend(
        c.add_peer(1)
            .unwrap()
            .into_iter()
            .map(|o| (o.peer, o.frame)),
    );
    for _ in 0..50 {
        if frames.is_empty() {
            frames.extend(a.tick().unwrap().into_iter().map(|o| (o.peer, o.frame)));
            frames.extend(c.tick().unwrap().into_iter().map(|o| (o.peer, o.frame)));
        }
        let batch = std::mem::take(&mut frames);
        for (to, f) in batch {
            let target = if to == 3 { &mut c } else { &mut a };
            let (_, out) = target.apply_frame(&f).unwrap();
            frames.extend(out.into_iter().map(|o| (o.peer, o.frame)));
        }
        if c.has(1, 3) && frames.is_empty() {
            break;
        }
    }
    assert!(c.has(1, 3));
    let rows = c
        .query("SELECT id, a, b FROM t ORDER BY id", &[], false)
        .unwrap()
        .1;
    assert_eq!(
        rows,
        vec![
            vec![Value::Int(1), Value::Text("x".into()), Value::Int(2)],
            vec![Value::Int(3), Value::Text("y".into()), Value::Null],
        ]
    );
}

#[test]
fn sql_cannot_change_which_tables_are_replicated() {
    let mut a = engine(1);
    // A local table renamed to a _patches twin of another local table.
    a.exec_sql("CREATE TABLE x (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE y (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT)")
        .unwrap();
    let r = a.exec_sql("ALTER TABLE y RENAME TO x_patches");
    assert!(matches!(r, Err(Error::Schema(_))), "{r:?}");
    let names = a
        .query(
            "SELECT name FROM sqlite_master WHERE name IN ('y', 'x_patches')",
            &[],
            false,
        )
        .unwrap()
        .1;
    assert_eq!(names, vec![vec![Value::Text("y".into())]]);
    // Plain local DDL still works, also through a prepared statement.
    a.run_sql(
        "ALTER TABLE x ADD COLUMN w INTEGER",
        Params::Positional(&[]),
        SqlMode::Run,
    )
    .unwrap();
}
