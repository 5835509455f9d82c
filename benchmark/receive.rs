//! Benches (a) and (c) without JS, for profiling the write and receive paths:
//!   cargo build --release --example receive && perf record -g target/release/examples/receive
//! Writes BENCH_N rows on one engine, then times applying its frames on a
//! second one (BENCH_RUNS times, median printed).

use quilt::core::batch::Batch;
use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::value::Value;
use std::time::Instant;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER, tenantId INTEGER, name TEXT, score REAL, PRIMARY KEY (id, tenantId));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, tenantId INTEGER, name TEXT, score REAL);";

fn engine(dir: &std::path::Path, name: &str, peer: u32) -> Engine {
    let mut e = Engine::open(Config {
        path: dir.join(name).to_string_lossy().into_owned(),
        peer_id: Some(peer),
        heartbeat_ms: 0,
        ..Default::default()
    })
    .expect("open");
    e.migrate(&[Migration {
        up: SCHEMA.into(),
        ..Default::default()
    }])
    .expect("migrate");
    e
}

fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("quilt-receive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mut w = engine(&dir, "w.db", 1);
    w.add_peer(2).expect("peer");
    let cols: Vec<String> = ["id", "tenantId", "name", "score"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows = Batch::from_rows((0..n).map(|i| {
        [
            Value::Int(i as i64 + 1),
            Value::Int(1 + (i % 16) as i64),
            Value::Text(format!("name-{}", i + 1)),
            Value::Real(i as f64 * 0.25),
        ]
        .into_iter()
        .enumerate()
    }));
    // Bench (a) without JS: the same batch on a fresh engine with no peer.
    let mut wm = Vec::new();
    for r in 0..runs {
        let mut e = engine(&dir, &format!("w{r}.db"), 1);
        let t0 = Instant::now();
        e.upsert_columns("t", &cols, &rows).expect("write");
        wm.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    wm.sort_by(|a, b| a.total_cmp(b));
    println!(
        "write {n} rows, one call, no JS: median {:.1} ms",
        wm[wm.len() / 2]
    );
    w.upsert_columns("t", &cols, &rows).expect("write");
    let frames: Vec<Vec<u8>> = w
        .drain_outbox()
        .into_iter()
        .map(|o| o.frame.to_vec())
        .collect();
    let mut ms = Vec::new();
    for r in 0..runs {
        let mut e = engine(&dir, &format!("r{r}.db"), 2);
        e.add_peer(1).expect("peer");
        let t0 = Instant::now();
        for f in &frames {
            e.apply_frame(f).expect("apply");
        }
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    println!(
        "receive {n} patches in {} frames: median {:.1} ms",
        frames.len(),
        ms[ms.len() / 2]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
