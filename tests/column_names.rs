//! Column names with a comma, and longer than 255 bytes, work end to end:
//! local writes (partial ones too), explicit NULLs, stored patches and
//! replication to another peer through frames.

use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::protocol::FrameBuilder;
use quilt::core::schema::TableInfo;
use quilt::core::value::Value;

fn long() -> String {
    "x".repeat(300)
}

fn engine(id: u32) -> Engine {
    let l = long();
    let m = Migration {
        up: format!(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, \"a,b\", \"{l}\", \"{l}y\", a, b);
             CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, \"a,b\", \"{l}\", \"{l}y\", a, b);"
        ),
        ..Default::default()
    };
    let mut e = Engine::open(Config {
        peer_id: Some(id),
        ..Config::default()
    })
    .unwrap();
    e.migrate(&[m]).unwrap();
    e
}

fn dump(e: &Engine) -> Vec<Vec<Value>> {
    let l = long();
    e.query(
        &format!("SELECT id, \"a,b\", \"{l}\", \"{l}y\", a, b FROM t ORDER BY id"),
        &[],
        false,
    )
    .unwrap()
    .1
}

/// Every stored patch of `origin`, as (column names set, values).
fn stored(e: &Engine, origin: u32) -> Vec<Vec<(String, Value)>> {
    let t: &TableInfo = &e.tables()["t"];
    quilt::core::patches::read_patches(
        e.connection(),
        &mut quilt::core::runs::Runs::default(),
        t,
        origin,
        1,
        1 << 40,
        1000,
    )
    .unwrap()
    .into_iter()
    .map(|p| p.columns.iter().cloned().zip(p.values).collect())
    .collect()
}

#[test]
fn odd_names_replicate() {
    let l = long();
    let ly = format!("{l}y");
    let mut one = engine(1);
    let row = |pairs: &[(&str, Value)]| -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(c, v)| (c.to_string(), v.clone()))
            .collect()
    };
    one.upsert(
        "t",
        vec![row(&[
            ("id", Value::Int(1)),
            ("a,b", Value::Text("comma".into())),
            (&l, Value::Text("long".into())),
            (&ly, Value::Text("longer".into())),
            ("a", Value::Int(1)),
            ("b", Value::Int(2)),
        ])],
    )
    .unwrap();
    // Explicit NULLs of the odd names only: `a` and `b` (whose names are
    // the two halves of "a,b") keep their values.
    one.upsert(
        "t",
        vec![row(&[
            ("id", Value::Int(1)),
            ("a,b", Value::Null),
            (&l, Value::Null),
        ])],
    )
    .unwrap();
    // A partial write of the other long name (merges the clock row).
    one.upsert(
        "t",
        vec![row(&[
            ("id", Value::Int(1)),
            (&ly, Value::Text("z".into())),
        ])],
    )
    .unwrap();
    let want = vec![vec![
        Value::Int(1),
        Value::Null,
        Value::Null,
        Value::Text("z".into()),
        Value::Int(1),
        Value::Int(2),
    ]];
    assert_eq!(dump(&one), want);
    let patches = stored(&one, 1);
    assert_eq!(
        patches[1],
        vec![
            ("id".to_string(), Value::Int(1)),
            ("a,b".to_string(), Value::Null),
            (l.clone(), Value::Null)
        ]
    );

    // To a second peer, patch by patch as stored, in reverse order: the
    // later NULLs must win over the earlier values by stamp, per column.
    let mut two = engine(2);
    let t = &one.tables()["t"];
    let mut all = quilt::core::patches::read_patches(
        one.connection(),
        &mut quilt::core::runs::Runs::default(),
        t,
        1,
        1,
        1 << 40,
        1000,
    )
    .unwrap();
    all.reverse();
    for p in &all {
        let mut b = FrameBuilder::new(1, 1, None, 1 << 20);
        b.push(p);
        for f in b.finish() {
            two.apply_frame(&f).unwrap();
        }
    }
    assert_eq!(dump(&two), want);
    assert_eq!(stored(&two, 1), patches);
    // An older write from elsewhere loses on every column.
    let mut b = FrameBuilder::new(3, 1, None, 1 << 20);
    b.push(&quilt::core::protocol::Patch {
        table: "t".into(),
        origin: 3,
        seq: 1,
        at: 5,
        columns: std::sync::Arc::new(vec!["id".into(), "a,b".into(), l.clone(), ly.clone()]),
        values: vec![Value::Int(1), Value::Int(9), Value::Int(9), Value::Int(9)],
    });
    for f in b.finish() {
        two.apply_frame(&f).unwrap();
    }
    assert_eq!(dump(&two), want);
}
