//! Files written by the real replic-sqlite (`__test__/fixtures/replic-real`,
//! see its README) open, keep their replic migrations as applied, and apply
//! the patches replic-sqlite left in `pending_patches` once the schema can
//! hold them.

use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::value::Value;
use std::path::Path;

/// The `up`/`down` texts of `__test__/fixtures/replic-real/migrations.js`
/// are not needed here: a taken-over file already is at its version, and
/// going up from v1 to v2 reads the step from the list.
fn migrations() -> Vec<Migration> {
    let v2 = "ALTER TABLE todo ADD COLUMN prio INTEGER;
         ALTER TABLE todo_patches ADD COLUMN prio INTEGER;
         CREATE TABLE tag (id INTEGER PRIMARY KEY, name TEXT) STRICT;
         CREATE TABLE tag_patches (
           _patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
           id INTEGER NOT NULL, name TEXT) STRICT;";
    vec![
        Migration {
            up: "SELECT 'v1 already ran'".into(),
            ..Default::default()
        },
        Migration {
            up: v2.into(),
            ..Default::default()
        },
    ]
}

fn open_copy(name: &str, peer: u32) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("__test__/fixtures/replic-real")
        .join(name);
    let to = dir.path().join(name);
    std::fs::copy(from, &to).unwrap();
    let e = Engine::open(Config {
        path: to.to_string_lossy().into_owned(),
        peer_id: Some(peer),
        retention_ms: u64::MAX >> 12,
        ..Config::default()
    })
    .unwrap();
    (dir, e)
}

fn titles(e: &Engine) -> Vec<Vec<Value>> {
    e.query("SELECT id, title, done FROM todo ORDER BY id", &[], false)
        .unwrap()
        .1
}

#[test]
fn v1_file_takes_replic_migrations_and_pending_patches() {
    let (_dir, mut e) = open_copy("peer22-v1.db", 22);
    assert_eq!(e.schema_version(), 1);
    // replic's ping took seq 1; its writes 2..4; quilt continues above.
    assert_eq!(e.seq(), 4);
    // peer 11's v2 patches (prio, the tag table) wait; its ping does not.
    assert_eq!(e.pending(), 3);
    assert_eq!(e.migrate(&migrations()[..1]).unwrap(), (1, 1));
    assert_eq!(e.migrate(&migrations()).unwrap(), (1, 2));
    assert_eq!(e.pending(), 0);
    let prio = e
        .query(
            "SELECT id, prio FROM todo WHERE prio IS NOT NULL ORDER BY id",
            &[],
            false,
        )
        .unwrap()
        .1;
    assert_eq!(
        prio,
        vec![
            vec![Value::Int(1), Value::Int(9)],
            vec![Value::Int(4), Value::Int(5)]
        ]
    );
    assert_eq!(titles(&e).len(), 4);
}

#[test]
fn v2_file_applies_older_peers_pending_patches() {
    let (_dir, mut e) = open_copy("peer11-v2.db", 11);
    assert_eq!(e.schema_version(), 2);
    assert_eq!(titles(&e).len(), 2);
    assert_eq!(e.migrate(&migrations()).unwrap(), (2, 2));
    assert_eq!(e.pending(), 0);
    assert_eq!(
        titles(&e),
        vec![
            vec![Value::Int(1), Value::Text("buy milk".into()), Value::Int(1)],
            vec![
                Value::Int(2),
                Value::Text("walk the dog".into()),
                Value::Int(0)
            ],
            vec![Value::Int(3), Value::Text("from 33".into()), Value::Int(0)],
            vec![Value::Int(4), Value::Text("from 11".into()), Value::Int(0)],
        ]
    );
}
