//! Restore trusts nothing beyond the manifest: the stored object is capped
//! at the manifest's `bytes`, the decompressed output at its `size`, and
//! temporary copies of the database are private (0600).

use quilt::core::error::Error;
use quilt::core::snapshot::{self, Manifest, Progress, SnapshotMeta, Store};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A small quilt-like database of about `rows` * 100 bytes.
fn database(dir: &Path, rows: i64) -> PathBuf {
    let db = dir.join("src.db");
    let c = rusqlite::Connection::open(&db).expect("open");
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);")
        .expect("schema");
    let tx = c.unchecked_transaction().expect("begin");
    {
        let mut st = tx
            .prepare("INSERT INTO t VALUES (?1, printf('%.*c', 90, 'x') || ?1)")
            .expect("prepare");
        for i in 0..rows {
            st.execute([i]).expect("insert");
        }
    }
    tx.commit().expect("commit");
    db
}

/// A store in `dir/store` holding one real snapshot of a database.
fn snapshot_of(rt: &tokio::runtime::Runtime, dir: &Path, rows: i64) -> (Store, Manifest) {
    let db = database(dir, rows);
    let copy = dir.join("copy.db");
    snapshot::copy_database(&db, &copy).expect("copy");
    let url = format!("file://{}", dir.join("store").display());
    let store = snapshot::open_store(&url, &[]).expect("store");
    let meta = SnapshotMeta {
        peer_id: 7,
        schema_version: 1,
        seq_vector: BTreeMap::new(),
        created_at: 1_700_000_000_000,
    };
    let m = rt
        .block_on(snapshot::upload(
            &store,
            copy,
            meta,
            Arc::new(Progress::default()),
            5,
            0,
        ))
        .expect("upload");
    (store, m)
}

/// Put `bytes` as the object of `m` (as an attacker with store access
/// would), and make the manifest agree on its length and sha256.
fn replace_object(dir: &Path, m: &Manifest, bytes: &[u8]) -> Manifest {
    let file = dir.join("store").join(&m.object);
    std::fs::write(&file, bytes).expect("write object");
    let mut t = m.clone();
    t.bytes = bytes.len() as u64;
    t.sha256 = hex::encode(Sha256::digest(bytes));
    t
}

fn restore(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    m: &Manifest,
    tmp: &Path,
) -> (Result<(), Error>, Arc<Progress>) {
    let progress = Arc::new(Progress::default());
    let r = rt.block_on(snapshot::download(
        store,
        m,
        tmp.to_path_buf(),
        progress.clone(),
    ));
    (r, progress)
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn an_honest_snapshot_round_trips() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = snapshot_of(&rt, dir.path(), 2000);
    let tmp = dir.path().join("restored.db");
    let (r, _) = restore(&rt, &store, &m, &tmp);
    r.expect("restore");
    assert_eq!(len(&tmp), m.size);
    let c = rusqlite::Connection::open(&tmp).expect("open");
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 2000);
}

#[test]
fn a_manifest_size_smaller_than_the_data_stops_the_restore_at_that_size() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = snapshot_of(&rt, dir.path(), 2000);
    let mut t = m.clone();
    t.size = 4096;
    let tmp = dir.path().join("restored.db");
    let (r, _) = restore(&rt, &store, &t, &tmp);
    match r {
        Err(Error::Snapshot(msg)) => {
            assert!(msg.contains("more than the manifest's size"), "{msg}")
        }
        other => panic!("expected a snapshot error, got {other:?}"),
    }
    assert!(len(&tmp) <= 4096, "wrote {} bytes past size", len(&tmp));
}

#[test]
fn a_decompression_bomb_never_writes_more_than_size() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = snapshot_of(&rt, dir.path(), 10);
    // 64 MiB of zeros compress to a few KiB.
    let zeros = vec![0u8; 1 << 20];
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("encoder");
    for _ in 0..64 {
        std::io::Write::write_all(&mut enc, &zeros).expect("compress");
    }
    let bomb = enc.finish().expect("finish");
    assert!(bomb.len() < 1 << 20);
    let t = replace_object(dir.path(), &m, &bomb);
    let tmp = dir.path().join("restored.db");
    let (r, _) = restore(&rt, &store, &t, &tmp);
    assert!(matches!(r, Err(Error::Snapshot(_))), "{r:?}");
    assert!(
        len(&tmp) <= m.size,
        "the bomb wrote {} bytes, the manifest allows {}",
        len(&tmp),
        m.size
    );
}

#[test]
fn a_stored_object_longer_than_the_manifest_is_not_read_past_its_bytes() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = snapshot_of(&rt, dir.path(), 200);
    let file = dir.path().join("store").join(&m.object);
    let mut bytes = std::fs::read(&file).expect("read object");
    // 8 MiB of junk after the real object; the manifest is left as it was.
    bytes.extend(std::iter::repeat_n(0x5a, 8 << 20));
    std::fs::write(&file, &bytes).expect("write object");
    let tmp = dir.path().join("restored.db");
    let (r, progress) = restore(&rt, &store, &m, &tmp);
    match r {
        Err(Error::Snapshot(msg)) => assert!(msg.contains("larger than the manifest"), "{msg}"),
        other => panic!("expected a snapshot error, got {other:?}"),
    }
    let read = progress.done.load(Ordering::Relaxed);
    assert!(
        read <= m.bytes,
        "read {read} bytes, manifest says {}",
        m.bytes
    );
}

#[test]
fn a_snapshot_that_decompresses_short_of_size_is_refused() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, m) = snapshot_of(&rt, dir.path(), 200);
    let mut t = m.clone();
    t.size = m.size + 1;
    let (r, _) = restore(&rt, &store, &t, &dir.path().join("restored.db"));
    match r {
        Err(Error::Snapshot(msg)) => assert!(msg.contains("decompresses to"), "{msg}"),
        other => panic!("expected a snapshot error, got {other:?}"),
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn temporary_copies_are_created_0600() {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let one = dir.path().join("one");
    std::fs::create_dir(&one).expect("mkdir");
    let db = database(&one, 100);
    let copy = one.join("copy.db");
    snapshot::copy_database(&db, &copy).expect("copy");
    assert_eq!(mode(&copy), 0o600, "VACUUM INTO target");
    let (store, m) = snapshot_of(&rt, dir.path(), 100);
    let tmp = dir.path().join("restored.db");
    let (r, _) = restore(&rt, &store, &m, &tmp);
    r.expect("restore");
    assert_eq!(mode(&tmp), 0o600, "restore target");
    let private = dir.path().join("private");
    drop(snapshot::create_private(&private).expect("create"));
    assert_eq!(mode(&private), 0o600);
    assert!(
        snapshot::create_private(&private).is_err(),
        "an existing file is never reused"
    );
}
