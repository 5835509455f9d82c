//! A file of the first on-disk format (`__test__/fixtures/quilt-v1`) is
//! upgraded in place on open: clock rows go from names to ordinal slots, and
//! the merge still goes by them (an older remote write loses per column).

use quilt::core::clock::{clock_stamps, CLOCK_FORMAT};
use quilt::core::engine::{Config, Engine};
use quilt::core::protocol::{FrameBuilder, Patch};
use quilt::core::value::Value;

fn open_copy() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v1.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/__test__/fixtures/quilt-v1/quilt-v1.db"
        ),
        &file,
    )
    .unwrap();
    let e = Engine::open(Config {
        path: file.to_string_lossy().into_owned(),
        ..Config::default()
    })
    .unwrap();
    (dir, e)
}

fn one(e: &Engine, sql: &str) -> Vec<Value> {
    e.query(sql, &[], true).unwrap().1.remove(0)
}

fn send(e: &mut Engine, origin: u32, seq: u64, at: u64, cols: &[&str], vals: Vec<Value>) {
    let mut b = FrameBuilder::new(origin, 2, None, 1 << 20);
    b.push(&Patch {
        table: "note".into(),
        origin,
        seq,
        at,
        columns: std::sync::Arc::new(cols.iter().map(|c| c.to_string()).collect()),
        values: vals,
    });
    for f in b.finish() {
        e.apply_frame(&f).unwrap();
    }
}

#[test]
fn first_format_upgrades_and_merges() {
    let (_dir, mut e) = open_copy();
    let fmt = one(
        &e,
        "SELECT value FROM _quilt_meta WHERE key = 'clock_format'",
    );
    assert_eq!(fmt, vec![Value::Int(CLOCK_FORMAT as i64)]);
    for t in ["note", "item"] {
        let rows = e
            .query(&format!("SELECT _stamps FROM _quilt_clock_{t}"), &[], false)
            .unwrap()
            .1;
        assert!(rows.len() >= 3);
        for r in rows {
            let Value::Blob(b) = &r[0] else {
                panic!("not a blob")
            };
            assert_eq!(b[0], CLOCK_FORMAT);
            assert!(!clock_stamps(b).is_empty());
        }
    }
    let before = one(&e, "SELECT title, text, deletedAt FROM note WHERE id = 1");
    // Older than every stamp of the file: loses title and text, and wins
    // deletedAt, which note 1 never had.
    send(
        &mut e,
        50,
        1,
        1,
        &["id", "title", "text", "deletedAt"],
        vec![
            Value::Int(1),
            Value::Text("stale".into()),
            Value::Text("stale".into()),
            Value::Int(5),
        ],
    );
    let after = one(&e, "SELECT title, text, deletedAt FROM note WHERE id = 1");
    assert_eq!(after[..2], before[..2]);
    assert_eq!(after[2], Value::Int(5));
    // Newer than everything: wins.
    let Value::Int(max) = one(&e, "SELECT max(_patchedAt) FROM note_patches")[0] else {
        panic!()
    };
    send(
        &mut e,
        50,
        2,
        max as u64 + 1,
        &["id", "text"],
        vec![Value::Int(1), Value::Null],
    );
    let now = one(&e, "SELECT title, text FROM note WHERE id = 1");
    assert_eq!(now, vec![before[0].clone(), Value::Null]);
    // Reopening does not convert again.
    let dir = _dir.path().join("v1.db");
    drop(e);
    let e = Engine::open(Config {
        path: dir.to_string_lossy().into_owned(),
        ..Config::default()
    })
    .unwrap();
    assert_eq!(one(&e, "SELECT title, text FROM note WHERE id = 1"), now);
}
