//! Snapshots to object storage and restore.
//!
//! Layout under the configured prefix:
//! `snapshots/<id>.db.zst` (the database, zstd), `snapshots/<id>.json` (the
//! manifest) and `latest.json` (a copy of the newest manifest), written in
//! that order, so a reader that follows `latest.json` never sees a
//! half-written snapshot. `<id>` is `<created ms, 13 digits>-<peer id hex>`,
//! so names sort by time.
//!
//! Memory stays flat: the copy is made with `VACUUM INTO` (one read
//! transaction; in WAL mode writers keep going), then read in 1 MiB chunks,
//! compressed by a streaming encoder on a blocking thread and handed through
//! a bounded channel to a multipart upload with bounded concurrency.

use crate::core::error::{Error, Result};
use futures::StreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Manifest format version.
pub const FORMAT: u32 = 1;
const CHUNK: usize = 1 << 20;

fn snap_err(msg: impl std::fmt::Display) -> Error {
    Error::Snapshot(msg.to_string())
}

/// Bytes done and total of a long snapshot or restore.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// What a snapshot holds (`snapshots/<id>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub peer_id: u32,
    pub schema_version: u32,
    /// Highest contiguous seq per origin peer id (as strings: JSON keys).
    pub seq_vector: BTreeMap<String, u64>,
    /// Size of the database file.
    pub size: u64,
    /// Size of the stored (compressed) object.
    pub bytes: u64,
    /// sha256 of the stored object, hex.
    pub sha256: String,
    /// Creation time, unix ms.
    pub created_at: u64,
    /// Object key of the data, relative to the prefix.
    pub object: String,
}

/// An object store and the prefix inside it.
pub struct Store {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjPath,
    pub url: String,
}

impl Store {
    fn key(&self, rel: &str) -> ObjPath {
        let mut p = self.prefix.clone();
        for part in rel.split('/') {
            p = p.child(part);
        }
        p
    }
    /// URL of an object under the prefix.
    pub fn url_of(&self, rel: &str) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), rel)
    }
}

/// Open `file:///dir`, `s3://bucket/prefix`, `gs://…` or `az://…`.
/// `options` keys: endpoint, region, accessKeyId, secretAccessKey,
/// sessionToken, allowHttp, or any key the object_store builder knows.
pub fn open_store(url: &str, options: &[(String, String)]) -> Result<Store> {
    let parsed =
        url::Url::parse(url).map_err(|e| Error::Arg(format!("snapshot url {url:?}: {e}")))?;
    let key_name = |k: &str| -> String {
        match k {
            "accessKeyId" => "access_key_id".into(),
            "secretAccessKey" => "secret_access_key".into(),
            "sessionToken" => "session_token".into(),
            "allowHttp" => "allow_http".into(),
            other => other.to_string(),
        }
    };
    let prefix_of = |p: &str| {
        ObjPath::parse(p.trim_matches('/'))
            .map_err(|e| Error::Arg(format!("snapshot url path: {e}")))
    };
    let (store, prefix): (Arc<dyn ObjectStore>, ObjPath) = match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|_| Error::Arg(format!("snapshot url {url:?} is not a local path")))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| snap_err(format!("cannot create {}: {e}", dir.display())))?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(snap_err)?;
            (Arc::new(fs), ObjPath::default())
        }
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url);
            for (k, v) in options {
                let key = AmazonS3ConfigKey::from_str(&key_name(k))
                    .map_err(|e| Error::Arg(format!("snapshot option {k}: {e}")))?;
                b = b.with_config(key, v.clone());
            }
            (
                Arc::new(b.build().map_err(snap_err)?),
                prefix_of(parsed.path())?,
            )
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url);
            for (k, v) in options {
                let key = GoogleConfigKey::from_str(&key_name(k))
                    .map_err(|e| Error::Arg(format!("snapshot option {k}: {e}")))?;
                b = b.with_config(key, v.clone());
            }
            (
                Arc::new(b.build().map_err(snap_err)?),
                prefix_of(parsed.path())?,
            )
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url);
            for (k, v) in options {
                let key = AzureConfigKey::from_str(&key_name(k))
                    .map_err(|e| Error::Arg(format!("snapshot option {k}: {e}")))?;
                b = b.with_config(key, v.clone());
            }
            (
                Arc::new(b.build().map_err(snap_err)?),
                prefix_of(parsed.path())?,
            )
        }
        s => {
            return Err(Error::Arg(format!(
                "snapshot url scheme {s}:// is not supported (file, s3, gs, az)"
            )))
        }
    };
    Ok(Store {
        store,
        prefix,
        url: url.to_string(),
    })
}

/// Create `path` as a new, empty file readable by its owner only (0600 on
/// unix), so a temporary copy of the database is never readable by others,
/// not even for the moment between its creation and a `chmod`. Fails when
/// the file already exists.
pub fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Make a consistent copy of the database at `db` into `tmp` with
/// `VACUUM INTO` on a separate connection. `tmp` is created empty and 0600
/// first (`VACUUM INTO` accepts an empty target and keeps its mode).
pub fn copy_database(db: &std::path::Path, tmp: &std::path::Path) -> Result<()> {
    let _ = std::fs::remove_file(tmp);
    create_private(tmp).map_err(|e| snap_err(format!("cannot create {}: {e}", tmp.display())))?;
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])?;
    Ok(())
}

/// What a snapshot records besides the data.
pub struct SnapshotMeta {
    pub peer_id: u32,
    pub schema_version: u32,
    pub seq_vector: BTreeMap<String, u64>,
    pub created_at: u64,
}

/// Compress `file` and upload it with its manifest, then move `latest.json`,
/// then prune. `file` is a private copy (deleted afterwards by the caller).
pub async fn upload(
    store: &Store,
    file: std::path::PathBuf,
    meta: SnapshotMeta,
    progress: Arc<Progress>,
    keep: usize,
    keep_ms: u64,
) -> Result<Manifest> {
    let size = std::fs::metadata(&file).map_err(snap_err)?.len();
    progress.total.store(size, Ordering::Relaxed);
    let id = format!("{:013}-{:08x}", meta.created_at, meta.peer_id);
    let object = format!("snapshots/{id}.db.zst");
    let upload = store
        .store
        .put_multipart(&store.key(&object))
        .await
        .map_err(snap_err)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let prog = progress.clone();
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        struct ChanWriter(tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>, Vec<u8>);
        impl Write for ChanWriter {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.1.extend_from_slice(b);
                if self.1.len() >= CHUNK {
                    let out = std::mem::take(&mut self.1);
                    self.0
                        .blocking_send(Ok(out))
                        .map_err(|_| std::io::Error::other("upload stopped"))?;
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                if !self.1.is_empty() {
                    let out = std::mem::take(&mut self.1);
                    self.0
                        .blocking_send(Ok(out))
                        .map_err(|_| std::io::Error::other("upload stopped"))?;
                }
                Ok(())
            }
        }
        let mut f = std::fs::File::open(&file)?;
        let mut enc = zstd::stream::write::Encoder::new(ChanWriter(tx.clone(), Vec::new()), 1)?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            enc.write_all(&buf[..n])?;
            prog.done.fetch_add(n as u64, Ordering::Relaxed);
        }
        let mut w = enc.finish()?;
        w.flush()?;
        Ok(())
    });
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.map_err(snap_err)?;
        hasher.update(&chunk);
        bytes += chunk.len() as u64;
        writer.wait_for_capacity(2).await.map_err(snap_err)?;
        writer.write(&chunk);
    }
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = writer.abort().await;
            return Err(snap_err(format!("reading the database copy: {e}")));
        }
        Err(e) => {
            let _ = writer.abort().await;
            return Err(snap_err(e));
        }
    }
    writer.finish().await.map_err(snap_err)?;
    let manifest = Manifest {
        format: FORMAT,
        id: id.clone(),
        peer_id: meta.peer_id,
        schema_version: meta.schema_version,
        seq_vector: meta.seq_vector,
        size,
        bytes,
        sha256: hex::encode(hasher.finalize()),
        created_at: meta.created_at,
        object,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(snap_err)?;
    store
        .store
        .put(
            &store.key(&format!("snapshots/{id}.json")),
            PutPayload::from(json.clone()),
        )
        .await
        .map_err(snap_err)?;
    store
        .store
        .put(&store.key("latest.json"), PutPayload::from(json))
        .await
        .map_err(snap_err)?;
    prune(store, keep, keep_ms, meta.created_at).await?;
    Ok(manifest)
}

/// Every manifest under the prefix, oldest first.
pub async fn list(store: &Store) -> Result<Vec<Manifest>> {
    let dir = store.key("snapshots");
    let mut metas = store.store.list(Some(&dir));
    let mut keys = Vec::new();
    while let Some(m) = metas.next().await {
        let m = m.map_err(snap_err)?;
        if m.location.as_ref().ends_with(".json") {
            keys.push(m.location);
        }
    }
    keys.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    let mut out = Vec::new();
    for k in keys {
        let b = store
            .store
            .get(&k)
            .await
            .map_err(snap_err)?
            .bytes()
            .await
            .map_err(snap_err)?;
        if let Ok(m) = serde_json::from_slice::<Manifest>(&b) {
            out.push(m);
        }
    }
    Ok(out)
}

/// Delete snapshots that are neither among the newest `keep` nor newer than
/// `keep_ms`. The newest one is never deleted.
pub async fn prune(store: &Store, keep: usize, keep_ms: u64, now: u64) -> Result<usize> {
    let all = list(store).await?;
    let keep = keep.max(1);
    let mut deleted = 0;
    if all.len() <= keep {
        return Ok(0);
    }
    for m in &all[..all.len() - keep] {
        if keep_ms > 0 && now.saturating_sub(m.created_at) < keep_ms {
            continue;
        }
        let _ = store.store.delete(&store.key(&m.object)).await;
        store
            .store
            .delete(&store.key(&format!("snapshots/{}.json", m.id)))
            .await
            .map_err(snap_err)?;
        deleted += 1;
    }
    Ok(deleted)
}

/// Read `latest.json`, or the manifest of snapshot `id`.
pub async fn manifest(store: &Store, id: Option<&str>) -> Result<Manifest> {
    let key = match id {
        Some(id) => store.key(&format!("snapshots/{}.json", id.trim_end_matches(".json"))),
        None => store.key("latest.json"),
    };
    let b = store
        .store
        .get(&key)
        .await
        .map_err(|e| snap_err(format!("no snapshot at {}: {e}", store.url)))?
        .bytes()
        .await
        .map_err(snap_err)?;
    let m: Manifest =
        serde_json::from_slice(&b).map_err(|e| snap_err(format!("bad snapshot manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(snap_err(format!(
            "snapshot format {} is not supported",
            m.format
        )));
    }
    Ok(m)
}

/// Largest zstd window a restore accepts (2^27 = 128 MiB, zstd's default
/// limit, stated here so the decoder's memory bound is explicit).
const WINDOW_LOG_MAX: u32 = 27;

/// The decompressed output went past the manifest's `size`.
#[derive(Debug)]
struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed output is larger than the manifest's size")
    }
}

impl std::error::Error for TooLarge {}

/// A writer that takes at most `left` bytes and fails with [`TooLarge`] at
/// the first byte past them, without writing it.
struct Capped<W> {
    inner: W,
    left: u64,
    written: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if b.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            return Err(std::io::Error::other(TooLarge));
        }
        let n = b
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.write(&b[..n])?;
        self.left -= n as u64;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn is_too_large(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|x| x.is::<TooLarge>())
}

/// Download a snapshot into `tmp`, which must not exist: it is created 0600
/// (see [`create_private`]). Nothing is trusted beyond the manifest:
///
/// - the stored object is hashed while it streams, and the download stops
///   at the first byte past the manifest's `bytes`;
/// - it is decompressed as it arrives, and the output stops at the first
///   byte past the manifest's `size`, so a tampered object (a zstd bomb)
///   never writes more than `size` bytes to disk;
/// - at the end the sha256, the stored length and the decompressed length
///   must all match the manifest.
///
/// On error `tmp` is left for the caller to delete; on success the caller
/// renames it into place.
pub async fn download(
    store: &Store,
    m: &Manifest,
    tmp: std::path::PathBuf,
    progress: Arc<Progress>,
) -> Result<()> {
    progress.total.store(m.bytes, Ordering::Relaxed);
    let file = create_private(&tmp)
        .map_err(|e| snap_err(format!("cannot create {}: {e}", tmp.display())))?;
    let res = store
        .store
        .get(&store.key(&m.object))
        .await
        .map_err(snap_err)?;
    let mut stream = res.into_stream();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let size = m.size;
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        struct ChanReader(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>, usize);
        impl Read for ChanReader {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                while self.2 >= self.1.len() {
                    match self.0.recv() {
                        Ok(b) => {
                            self.1 = b;
                            self.2 = 0;
                        }
                        Err(_) => return Ok(0),
                    }
                }
                let n = out.len().min(self.1.len() - self.2);
                out[..n].copy_from_slice(&self.1[self.2..self.2 + n]);
                self.2 += n;
                Ok(n)
            }
        }
        let mut w = Capped {
            inner: std::io::BufWriter::new(file),
            left: size,
            written: 0,
        };
        let mut dec = zstd::stream::read::Decoder::new(ChanReader(rx, Vec::new(), 0))?;
        dec.window_log_max(WINDOW_LOG_MAX)?;
        std::io::copy(&mut dec, &mut w)?;
        w.flush()?;
        let written = w.written;
        w.inner
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        Ok(written)
    });
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    let mut failed = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                n = n.saturating_add(b.len() as u64);
                if n > m.bytes {
                    failed = Some(snap_err(format!(
                        "snapshot {} is corrupt: the stored object is larger than the manifest's {} bytes",
                        m.id, m.bytes
                    )));
                    break;
                }
                hasher.update(&b);
                progress.done.store(n, Ordering::Relaxed);
                if tx.send(b.to_vec()).is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(snap_err(format!("download failed: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await;
    if let Some(e) = failed {
        return Err(e);
    }
    if let Ok(Err(e)) = &written {
        if is_too_large(e) {
            return Err(snap_err(format!(
                "snapshot {} is corrupt: it decompresses to more than the manifest's size of {size} bytes",
                m.id
            )));
        }
    }
    let digest = hex::encode(hasher.finalize());
    if digest != m.sha256 || n != m.bytes {
        return Err(snap_err(format!(
            "snapshot {} is corrupt: sha256 {digest} ({n} bytes), manifest says {} ({} bytes)",
            m.id, m.sha256, m.bytes
        )));
    }
    match written {
        Ok(Ok(w)) if w == size => Ok(()),
        Ok(Ok(w)) => Err(snap_err(format!(
            "snapshot {} is corrupt: it decompresses to {w} bytes, the manifest says {size}",
            m.id
        ))),
        Ok(Err(e)) => Err(snap_err(format!(
            "snapshot {} does not decompress: {e}",
            m.id
        ))),
        Err(e) => Err(snap_err(e)),
    }
}

/// Give a restored database a new peer id and check it opens.
pub fn prepare_restored(path: &std::path::Path, new_peer: u32) -> Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    let ok: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(snap_err(format!(
            "restored database fails quick_check: {ok}"
        )));
    }
    conn.execute(
        "UPDATE _quilt_state SET peer_id = ?1, seq = 0 WHERE id = 1",
        [new_peer as i64],
    )
    .map_err(|e| snap_err(format!("restored file is not a quilt database: {e}")))?;
    Ok(())
}
