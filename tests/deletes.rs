//! SQL `DELETE` replicates as a row deletion with its own stamp: a newer
//! write re-creates the row (with only what that write and later ones
//! set), an older one does not. Property: any order, duplication and
//! batching of the same patches gives the same rows.

use proptest::prelude::*;
use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER);
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, a TEXT, b INTEGER);";

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
    e.add_peer(99).expect("add");
    e
}

fn rows(e: &Engine) -> Vec<Vec<Value>> {
    e.query("SELECT id, a, b FROM t ORDER BY id", &[], false)
        .expect("rows")
        .1
}

fn frames(e: &mut Engine) -> Vec<Vec<u8>> {
    e.drain_outbox().into_iter().map(|o| o.frame).collect()
}

#[test]
fn delete_then_older_write_stays_deleted_newer_write_recreates() {
    let mut a = engine(1);
    let mut b = engine(2);
    a.exec_sql("INSERT INTO t(id, a, b) VALUES (1, 'x', 10), (2, 'y', 20)")
        .unwrap();
    let f_insert = frames(&mut a);
    for f in &f_insert {
        b.apply_frame(f).unwrap();
    }
    // b updates row 1 (older than a's delete below), a deletes it.
    b.exec_sql("UPDATE t SET a = 'old' WHERE id = 1").unwrap();
    let f_old = frames(&mut b);
    std::thread::sleep(std::time::Duration::from_millis(2));
    a.exec_sql("DELETE FROM t WHERE id = 1").unwrap();
    let f_del = frames(&mut a);
    assert_eq!(rows(&a).len(), 1);
    // The older update reaches a after the delete: the row stays gone.
    for f in &f_old {
        a.apply_frame(f).unwrap();
    }
    assert_eq!(
        rows(&a),
        vec![vec![Value::Int(2), Value::Text("y".into()), Value::Int(20)]]
    );
    // The delete reaches b after its own older update: gone there too.
    for f in &f_del {
        b.apply_frame(f).unwrap();
    }
    assert_eq!(rows(&b), rows(&a));
    // A newer write re-creates the row with only what it sets.
    std::thread::sleep(std::time::Duration::from_millis(2));
    b.exec_sql("INSERT INTO t(id, b) VALUES (1, 7)").unwrap();
    for f in frames(&mut b) {
        a.apply_frame(&f).unwrap();
    }
    let want = vec![
        vec![Value::Int(1), Value::Null, Value::Int(7)],
        vec![Value::Int(2), Value::Text("y".into()), Value::Int(20)],
    ];
    assert_eq!(rows(&a), want);
    assert_eq!(rows(&b), want);
    // Retransmitting the delete changes nothing.
    for f in &f_del {
        a.apply_frame(f).unwrap();
    }
    assert_eq!(rows(&a), want);
}

#[test]
fn a_key_only_write_after_a_deletion_recreates_the_row_everywhere() {
    // Found by the chaos harness: the writer re-created the row, receivers
    // did not.
    let mut a = engine(1);
    let mut b = engine(2);
    b.exec_sql("INSERT INTO t(id, a) VALUES (1, 'x')").unwrap();
    for f in frames(&mut b) {
        a.apply_frame(&f).unwrap();
    }
    b.exec_sql("DELETE FROM t WHERE id = 1").unwrap();
    for f in frames(&mut b) {
        a.apply_frame(&f).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    a.upsert("t", vec![vec![("id".into(), Value::Int(1))]])
        .unwrap();
    for f in frames(&mut a) {
        b.apply_frame(&f).unwrap();
    }
    let want = vec![vec![Value::Int(1), Value::Null, Value::Null]];
    assert_eq!(rows(&a), want);
    assert_eq!(rows(&b), want);
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u8, Option<i64>, Option<String>),
    Del(usize, u8),
    /// `upsert(t, { id })`: a key-only write.
    Key(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0usize..3,
            1u8..4,
            proptest::option::of(0i64..5),
            proptest::option::of("[a-c]")
        )
            .prop_map(|(w, k, b, a)| Op::Set(w, k, b, a)),
        (0usize..3, 1u8..4).prop_map(|(w, k)| Op::Del(w, k)),
        (0usize..3, 1u8..4).prop_map(|(w, k)| Op::Key(w, k)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    #[test]
    fn deletes_converge_in_any_order(ops in proptest::collection::vec(op(), 1..24), seed in any::<u64>()) {
        let mut writers: Vec<Engine> = (1..=3).map(engine).collect();
        let mut all: Vec<Vec<u8>> = Vec::new();
        for o in &ops {
            match o {
                Op::Set(w, k, b, a) => {
                    let sql = match (a, b) {
                        (Some(a), Some(b)) => format!("INSERT INTO t(id, a, b) VALUES ({k}, '{a}', {b}) ON CONFLICT(id) DO UPDATE SET a = excluded.a, b = excluded.b"),
                        (Some(a), None) => format!("INSERT INTO t(id, a) VALUES ({k}, '{a}') ON CONFLICT(id) DO UPDATE SET a = excluded.a"),
                        (None, Some(b)) => format!("INSERT INTO t(id, b) VALUES ({k}, {b}) ON CONFLICT(id) DO UPDATE SET b = excluded.b"),
                        (None, None) => format!("INSERT INTO t(id, a) VALUES ({k}, NULL) ON CONFLICT(id) DO UPDATE SET a = NULL"),
                    };
                    writers[*w].exec_sql(&sql).unwrap();
                }
                Op::Del(w, k) => {
                    writers[*w].exec_sql(&format!("DELETE FROM t WHERE id = {k}")).unwrap();
                }
                Op::Key(w, k) => {
                    writers[*w].upsert("t", vec![vec![("id".into(), Value::Int(*k as i64))]]).unwrap();
                }
            }
            all.extend(frames(&mut writers[*w_of(o)]));
        }
        // Two receivers, two orders (with duplicates); the writers get all.
        let mut rng = seed | 1;
        let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let mut order1: Vec<usize> = (0..all.len()).collect();
        let mut order2: Vec<usize> = (0..all.len()).rev().collect();
        for i in (1..order1.len()).rev() { let j = (next() as usize) % (i + 1); order1.swap(i, j); }
        for _ in 0..all.len() / 3 { let k = (next() as usize) % all.len(); order2.push(k); }
        let mut x = engine(7);
        let mut y = engine(8);
        for &i in &order1 { let _ = x.apply_frame(&all[i]); }
        for &i in &order2 { let _ = y.apply_frame(&all[i]); }
        for w in writers.iter_mut() { for f in &all { let _ = w.apply_frame(f); } }
        let want = rows(&x);
        prop_assert_eq!(&rows(&y), &want);
        for w in &writers { prop_assert_eq!(&rows(w), &want); }
    }
}

fn w_of(o: &Op) -> &usize {
    match o {
        Op::Set(w, ..) | Op::Del(w, _) | Op::Key(w, _) => w,
    }
}
