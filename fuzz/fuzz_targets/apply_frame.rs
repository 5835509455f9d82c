#![no_main]
//! applyPatches against a scratch database: any input either applies or is
//! refused with an error; it never panics, and a refused frame changes
//! nothing.
use libfuzzer_sys::fuzz_target;
use quilt::core::engine::{Config, Engine, Migration};

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, k INTEGER NOT NULL, a TEXT, b REAL, deletedAt INTEGER, PRIMARY KEY (id, k));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, k INTEGER, a TEXT, b REAL, deletedAt INTEGER);";

fn dump(e: &Engine) -> String {
    let mut out = String::new();
    for sql in ["SELECT * FROM t ORDER BY id, k", "SELECT * FROM t_patches ORDER BY _peerId, _sequenceId", "SELECT * FROM _quilt_kept"] {
        if let Ok((_, rows)) = e.query(sql, &[], false) {
            out.push_str(&format!("{rows:?}"));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut e) = Engine::open(Config { peer_id: Some(1), max_drift_ms: u64::MAX / 4, ..Config::default() }) else { return };
    if e.migrate(&[Migration { up: SCHEMA.into(), ..Default::default() }]).is_err() {
        return;
    }
    let _ = e.add_peer(2);
    let before = dump(&e);
    if e.apply_frame(data).is_err() {
        assert_eq!(dump(&e), before, "a refused frame changed the database");
    }
    let _ = e.tick();
});
