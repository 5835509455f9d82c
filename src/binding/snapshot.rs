//! Snapshot and restore: the JS thread captures what a snapshot covers, the
//! work runs on tokio and resolves a Promise, and progress is polled from a
//! registry of running jobs (no thread-safe callback needed).

use super::{js_error, NativeReplicator, OrJs, RestoreArgs};
use crate::core::error::Error as CoreError;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::collections::HashMap;

use crate::core::snapshot::{self, Progress};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

fn jobs() -> &'static Mutex<HashMap<u32, Arc<Progress>>> {
    static JOBS: OnceLock<Mutex<HashMap<u32, Arc<Progress>>>> = OnceLock::new();
    JOBS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn job(id: u32) -> Arc<Progress> {
    let p = Arc::new(Progress::default());
    if let Ok(mut j) = jobs().lock() {
        j.insert(id, p.clone());
    }
    p
}

fn end_job(id: u32) {
    if let Ok(mut j) = jobs().lock() {
        j.remove(&id);
    }
}

/// `[bytesDone, bytesTotal]` of a running snapshot or restore job.
#[napi]
pub fn snapshot_progress(job_id: u32) -> Vec<f64> {
    jobs()
        .lock()
        .ok()
        .and_then(|j| j.get(&job_id).cloned())
        .map(|p| {
            vec![
                p.done.load(Ordering::Relaxed) as f64,
                p.total.load(Ordering::Relaxed) as f64,
            ]
        })
        .unwrap_or_default()
}

fn opts(o: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    o.unwrap_or_default().into_iter().collect()
}

/// What the JS thread captures before a snapshot runs.
#[napi(object)]
pub struct SnapshotPrep {
    pub source: String,
    pub temp_source: bool,
    pub peer_id: u32,
    pub schema_version: u32,
    pub seq_vector: HashMap<String, f64>,
    pub created_at: f64,
}

#[napi]
impl NativeReplicator {
    /// Capture the seq vector and the source file for a snapshot. An
    /// in-memory database is copied to `temp_path` first (online backup).
    #[napi(catch_unwind)]
    pub fn prepare_snapshot(&mut self, env: Env, temp_path: String) -> Result<SnapshotPrep> {
        let e = self.e(&env)?;
        let vector = e.contiguous_vector();
        let path = e.config().path.clone();
        let (source, temp_source) = if path == ":memory:" || path.is_empty() {
            // Created empty and 0600 first: the backup keeps the mode.
            snapshot::create_private(std::path::Path::new(&temp_path)).map_err(|err| {
                js_error(
                    env.raw(),
                    &CoreError::Snapshot(format!("cannot create {temp_path}: {err}")),
                )
            })?;
            e.connection()
                .backup(rusqlite::MAIN_DB, &temp_path, None)
                .map_err(|err| {
                    let _ = std::fs::remove_file(&temp_path);
                    js_error(
                        env.raw(),
                        &CoreError::Snapshot(format!(
                            "backup of the in-memory database failed: {err}"
                        )),
                    )
                })?;
            (temp_path, true)
        } else {
            (path, false)
        };
        Ok(SnapshotPrep {
            source,
            temp_source,
            peer_id: e.peer_id(),
            schema_version: e.schema_version(),
            seq_vector: vector
                .into_iter()
                .map(|(k, v)| (k.to_string(), v as f64))
                .collect(),
            created_at: crate::core::hlc::wall_ms() as f64,
        })
    }

    /// Record what a finished snapshot covers (retention keeps the rest).
    #[napi(catch_unwind)]
    pub fn record_snapshot(
        &mut self,
        env: Env,
        seq_vector: HashMap<String, f64>,
        created_at: f64,
    ) -> Result<()> {
        let v: HashMap<u32, u64> = seq_vector
            .into_iter()
            .filter_map(|(k, s)| k.parse::<u32>().ok().map(|k| (k, s as u64)))
            .collect();
        self.e(&env)?
            .set_snapshot_cover(&v, created_at as u64)
            .js(&env)
    }
}

/// The outcome of async work: settles the Promise on the JS thread, where a
/// core error becomes its coded JS error ([`js_error`]) and rejects it.
pub struct Settled<T>(std::result::Result<T, CoreError>);

impl<T> TypeName for Settled<T> {
    fn type_name() -> &'static str {
        "Settled"
    }
    fn value_type() -> ValueType {
        ValueType::Unknown
    }
}

impl<T: ToNapiValue> ToNapiValue for Settled<T> {
    unsafe fn to_napi_value(env: napi::sys::napi_env, val: Self) -> Result<napi::sys::napi_value> {
        match val.0 {
            Ok(v) => T::to_napi_value(env, v),
            Err(e) => Err(js_error(env, &e)),
        }
    }
}

/// Copy, compress and upload a snapshot; resolves the manifest as JSON.
#[napi(ts_return_type = "Promise<string>")]
#[allow(clippy::too_many_arguments)]
pub async fn snapshot_upload(
    job_id: u32,
    prep: SnapshotPrep,
    url: String,
    options: Option<HashMap<String, String>>,
    work_path: String,
    keep: u32,
    keep_ms: f64,
) -> Result<Settled<String>> {
    let progress = job(job_id);
    let res = async {
        let store = snapshot::open_store(&url, &opts(options))?;
        let work = std::path::PathBuf::from(&work_path);
        let src = std::path::PathBuf::from(&prep.source);
        let w2 = work.clone();
        tokio::task::spawn_blocking(move || snapshot::copy_database(&src, &w2))
            .await
            .map_err(|e| CoreError::Snapshot(e.to_string()))??;
        let meta = snapshot::SnapshotMeta {
            peer_id: prep.peer_id,
            schema_version: prep.schema_version,
            seq_vector: prep
                .seq_vector
                .iter()
                .map(|(k, v)| (k.clone(), *v as u64))
                .collect(),
            created_at: prep.created_at as u64,
        };
        let r = snapshot::upload(
            &store,
            work.clone(),
            meta,
            progress,
            keep as usize,
            keep_ms as u64,
        )
        .await;
        let _ = std::fs::remove_file(&work);
        if prep.temp_source {
            let _ = std::fs::remove_file(&prep.source);
        }
        let m = r?;
        Ok::<_, CoreError>(
            serde_json::json!({ "manifest": m, "url": store.url_of(&m.object) }).to_string(),
        )
    };
    let out = res.await;
    end_job(job_id);
    Ok(Settled(out))
}

/// Fetch a snapshot into `args.path` (temp file, sha256 check, rename);
/// resolves the manifest plus the new peer id as JSON. `args` is the user's
/// `Replicator.restore` options object, checked here.
#[napi(
    ts_args_type = "jobId: number, args: { from: string, path: string, overwrite?: boolean, snapshot?: string, id?: string }, options?: Record<string, string> | undefined | null",
    ts_return_type = "Promise<string>"
)]
pub async fn restore_snapshot(
    job_id: u32,
    args: RestoreArgs,
    options: Option<HashMap<String, String>>,
) -> Result<Settled<String>> {
    let RestoreArgs {
        from,
        path,
        overwrite,
        name,
    } = args;
    let progress = job(job_id);
    let res = async {
        let dest = std::path::PathBuf::from(&path);
        if dest.exists() && !overwrite {
            return Err(CoreError::Snapshot(format!(
                "{path} already exists; pass overwrite: true to replace it"
            )));
        }
        let store = snapshot::open_store(&from, &opts(options))?;
        let m = snapshot::manifest(&store, name.as_deref()).await?;
        let mut rnd = [0u8; 6];
        let _ = getrandom::fill(&mut rnd);
        let tmp = std::path::PathBuf::from(format!("{path}.quilt-restore-{}", hex::encode(rnd)));
        let r = async {
            snapshot::download(&store, &m, tmp.clone(), progress).await?;
            let new_peer = loop {
                let mut b = [0u8; 4];
                getrandom::fill(&mut b).map_err(|e| CoreError::Snapshot(e.to_string()))?;
                let v = u32::from_le_bytes(b) & 0x7fff_ffff;
                if v != 0 && v != m.peer_id {
                    break v;
                }
            };
            snapshot::prepare_restored(&tmp, new_peer)?;
            for ext in ["-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{path}{ext}"));
            }
            std::fs::rename(&tmp, &dest).map_err(|e| {
                CoreError::Snapshot(format!("cannot move the restored file into place: {e}"))
            })?;
            Ok::<_, CoreError>(new_peer)
        }
        .await;
        match r {
            Ok(new_peer) => Ok(serde_json::json!({ "manifest": m, "url": store.url_of(&m.object), "peerId": new_peer }).to_string()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    };
    let out = res.await;
    end_job(job_id);
    Ok(Settled(out))
}

/// Manifests under a snapshot URL, oldest first, as JSON.
#[napi(ts_return_type = "Promise<string>")]
pub async fn list_snapshots(
    url: String,
    options: Option<HashMap<String, String>>,
) -> Result<Settled<String>> {
    let res = async {
        let store = snapshot::open_store(&url, &opts(options))?;
        let all = snapshot::list(&store).await?;
        Ok::<_, CoreError>(serde_json::to_string(&all).unwrap_or_else(|_| "[]".into()))
    };
    Ok(Settled(res.await))
}
