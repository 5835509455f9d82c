//! Opening a file reads the saved sequence vector and the rows written
//! since, not every patch row; what it loads equals a full read, also after
//! clashes, purges, a `VACUUM` that renumbers rowids, and a crash before the
//! vector was saved. Patch rows are found without an index (runs.rs).

use quilt::core::engine::persist::HeldSummary;
use quilt::core::engine::{Config, Engine, Migration, Outgoing};
use quilt::core::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, v TEXT, PRIMARY KEY (id));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);
CREATE TABLE u (k TEXT PRIMARY KEY, n INTEGER);
CREATE TABLE u_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, k TEXT, n INTEGER);";

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quilt-open-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(path: &std::path::Path, peer: u32) -> Engine {
    let mut e = Engine::open(Config {
        path: path.to_string_lossy().into_owned(),
        peer_id: Some(peer),
        heartbeat_ms: 0,
        ..Default::default()
    })
    .unwrap();
    e.migrate(&[Migration {
        up: SCHEMA.into(),
        ..Default::default()
    }])
    .unwrap();
    e
}

fn write(e: &mut Engine, ids: std::ops::Range<i64>, v: &str) {
    let rows = ids
        .map(|id| {
            vec![
                ("id".into(), Value::Int(id)),
                ("v".into(), Value::Text(v.into())),
            ]
        })
        .collect();
    e.upsert("t", rows).unwrap();
}

fn write_u(e: &mut Engine, k: &str, n: i64) {
    e.upsert(
        "u",
        vec![vec![
            ("k".into(), Value::Text(k.into())),
            ("n".into(), Value::Int(n)),
        ]],
    )
    .unwrap();
}

fn rows(e: &Engine, sql: &str) -> Vec<Vec<Value>> {
    e.query(sql, &[], false).unwrap().1
}

/// Deliver frames both ways until quiet, a few heartbeats.
fn settle(a: &mut Engine, b: &mut Engine, rounds: usize) {
    let (ia, ib) = (a.peer_id(), b.peer_id());
    let mut queue: Vec<Outgoing> = Vec::new();
    queue.extend(a.add_peer(ib).unwrap());
    queue.extend(b.add_peer(ia).unwrap());
    for _ in 0..rounds {
        queue.extend(a.tick().unwrap());
        queue.extend(b.tick().unwrap());
        let mut steps = 0;
        while let Some(o) = queue.pop() {
            steps += 1;
            assert!(steps < 100_000, "no quiet");
            let e: &mut Engine = if o.peer == ia { a } else { b };
            if let Ok((_, out)) = e.apply_frame(&o.frame) {
                queue.extend(out);
            }
        }
    }
}

/// Open the file twice: once as it is, once forced to read every row.
fn loaded_and_full(path: &std::path::Path, peer: u32) -> (HeldSummary, HeldSummary, u64) {
    let e = open(path, peer);
    let loaded = e.held_summary();
    let seq = e.seq();
    drop(e);
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute(
        "INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES('vector_dirty', 1)",
        [],
    )
    .unwrap();
    drop(c);
    let e = open(path, peer);
    (loaded, e.held_summary(), seq)
}

#[test]
fn saved_vector_plus_tail_equals_a_full_read() {
    let d = dir("tail");
    let (pa, pb) = (d.join("a.db"), d.join("b.db"));
    let mut a = open(&pa, 1);
    let mut b = open(&pb, 2);
    for round in 0..4 {
        write(&mut a, round * 100..round * 100 + 50, "a");
        write_u(&mut a, &format!("a{round}"), round);
        write(&mut b, 10_000 + round * 100..10_000 + round * 100 + 30, "b");
        write_u(&mut b, &format!("b{round}"), round);
        settle(&mut a, &mut b, 2);
    }
    // Written after the last heartbeat: only in the tail.
    write(&mut a, 5000..5010, "tail");
    write_u(&mut a, "tail", 9);
    let before = a.held_summary();
    let seq = a.seq();
    drop(a);
    let (loaded, full, seq2) = loaded_and_full(&pa, 1);
    assert_eq!(loaded, before);
    assert_eq!(full, before);
    assert_eq!(seq2, seq);
    // No index on the patch rows: they are found through runs.
    let a = open(&pa, 1);
    let idx = rows(
        &a,
        "SELECT name FROM sqlite_schema WHERE type='index' AND tbl_name='t_patches'",
    );
    assert!(idx.is_empty(), "{idx:?}");
    let runs = rows(&a, "SELECT count(*) FROM _quilt_runs");
    assert!(
        matches!(runs[0][0], Value::Int(n) if (2..40).contains(&n)),
        "{runs:?}"
    );
}

#[test]
fn a_new_peer_catches_up_through_runs_after_vacuum_renumbers_rowids() {
    let d = dir("vacuum");
    let pa = d.join("a.db");
    let mut a = open(&pa, 1);
    // One row per write: a hand-deleted member of a batch would leave its
    // atomic group waiting forever on the new peer (tests/atomic.rs).
    for i in 0..200 {
        write(&mut a, i..i + 1, "x");
    }
    a.tick().unwrap();
    drop(a);
    // Holes in the rowids, then VACUUM: rows may get new rowids.
    let c = rusqlite::Connection::open(&pa).unwrap();
    c.execute("CREATE TABLE scratch(x)", []).unwrap();
    c.execute("DELETE FROM t_patches WHERE _sequenceId % 7 = 0", [])
        .unwrap();
    let max = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT max(rowid) FROM t_patches", [], |r| r.get(0))
            .unwrap()
    };
    let before = max(&c);
    c.execute_batch("VACUUM").unwrap();
    assert!(max(&c) < before, "VACUUM renumbered the rows");
    drop(c);
    let mut a = open(&pa, 1);
    let mut b = open(&d.join("b.db"), 2);
    settle(&mut a, &mut b, 12);
    let want = rows(&a, "SELECT id, v FROM t ORDER BY id");
    assert_eq!(want.len(), 200);
    // What b got is exactly the patch rows a still has, values included.
    let a_patches = rows(
        &a,
        "SELECT _peerId, _sequenceId, id, v FROM t_patches ORDER BY 1, 2",
    );
    let b_patches = rows(
        &b,
        "SELECT _peerId, _sequenceId, id, v FROM t_patches ORDER BY 1, 2",
    );
    assert_eq!(a_patches.len(), 200 - 200 / 7);
    assert_eq!(a_patches, b_patches);
}

#[test]
fn clashes_and_purges_survive_a_crash_before_the_vector_is_saved() {
    let d = dir("dirty");
    let pa = d.join("a.db");
    let mut a = open(&pa, 5);
    write(&mut a, 0..10, "first");
    a.tick().unwrap();
    drop(a);
    std::fs::copy(&pa, d.join("backup.db")).unwrap();
    let mut a = open(&pa, 5);
    write(&mut a, 10..20, "lost future");
    let mut b = open(&d.join("b.db"), 6);
    settle(&mut a, &mut b, 3);
    drop(a);
    std::fs::copy(d.join("backup.db"), &pa).unwrap();
    let _ = std::fs::remove_file(d.join("a.db-wal"));
    let mut a = open(&pa, 5);
    write(&mut a, 100..110, "after restore");
    // Frames only, no heartbeat of a afterwards: the clash moves rows
    // below the saved mark and the process "crashes" (dropped without
    // close) before the vector is saved again.
    let mut queue: Vec<Outgoing> = b.add_peer(5).unwrap();
    queue.extend(a.add_peer(6).unwrap());
    queue.extend(b.tick().unwrap());
    let mut steps = 0;
    while let Some(o) = queue.pop() {
        steps += 1;
        assert!(steps < 10_000);
        if o.peer == 5 {
            if let Ok((_, out)) = a.apply_frame(&o.frame) {
                queue.extend(out.into_iter().filter(|x| x.peer == 6));
            }
        } else if let Ok((_, out)) = b.apply_frame(&o.frame) {
            queue.extend(out);
        }
    }
    let before = a.held_summary();
    assert!(a.status().reissued > 0, "the clash happened");
    std::mem::forget(a);
    let (loaded, full, _) = loaded_and_full(&pa, 5);
    assert_eq!(loaded, before);
    assert_eq!(full, before);
}
