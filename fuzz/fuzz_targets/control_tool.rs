//! Helper of the `control` fuzz target (not a fuzz target itself):
//!
//! - `cargo run --release --bin control_tool -- seeds corpus/control` writes
//!   the seed frames `corpus/control/seed-*`;
//! - `cargo run --release --bin control_tool -- measure` feeds hostile
//!   control frames to one engine (no sanitizer) and prints the RSS growth
//!   per frame byte and the largest answers, per scenario;
//! - `... -- repro artifacts-report` writes the inputs of a found bug.
use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::protocol::{encode_frame, Body, Ping, Ranges};
use quilt::core::value::Value;

const ME: u32 = 1;
const PEERS: [u32; 3] = [2, 3, 4];
const KEY: &[u8] = b"fuzz-cluster-key";
const STEP: u64 = 1 << 50;
const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, k INTEGER NOT NULL, a TEXT, b REAL, deletedAt INTEGER, PRIMARY KEY (id, k));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, k INTEGER, a TEXT, b REAL, deletedAt INTEGER);";

fn ping(own: u64, vector: Vec<(u32, u64, u64)>) -> Ping {
    Ping { own_last_seq: own, vector, ..Default::default() }
}

fn body_ping(p: Ping) -> Body {
    Body { schema_version: 1, ping: Some(p), ..Default::default() }
}

fn ranges(origin: u32, r: Vec<(u64, u64)>) -> Ranges {
    Ranges { origin, ranges: r }
}

fn seeds(dir: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut bodies: Vec<(u32, Body)> = Vec::new();
    // An honest ping: claims, digests, a re-issued range, a cover.
    bodies.push((
        2,
        body_ping(Ping {
            own_last_seq: 10,
            vector: vec![(ME, 40, 40), (2, 0, 10), (3, 5, 7)],
            digests: vec![0x1234_5678_9abc_def0, 7, 0],
            shadows: vec![ranges(2, vec![(STEP + 1, STEP + 3)])],
            cover: vec![(ME, 20), (2, 3)],
        }),
    ));
    // Split ping part: shadows and cover only.
    bodies.push((
        3,
        body_ping(Ping {
            own_last_seq: 7,
            shadows: vec![ranges(ME, vec![(STEP + 1, STEP + 40)]), ranges(3, vec![(2 * STEP + 1, 2 * STEP + 2)])],
            cover: vec![(ME, 40)],
            ..Default::default()
        }),
    ));
    // Edge values, valid and not.
    for (own, o, c, m) in [
        (0, ME, 0, 0),
        (1 << 53, ME, 1 << 53, 1 << 53),
        ((1 << 53) + 1, 2, 0, 1),
        (0, ME, 0, i64::MAX as u64),
        (0, ME, 0, u64::MAX),
        (0, 2, u64::MAX, 1),
        (0, 0, 1, 1),
        (0, ME, STEP - 1, STEP + 1),
        (0, 3, STEP, STEP),
    ] {
        bodies.push((2, body_ping(ping(own, vec![(o, c, m)]))));
    }
    // Many origins, at and over the cap.
    for n in [4096u32, 8192, 8193] {
        bodies.push((4, body_ping(ping(5, (100..100 + n).map(|o| (o, 0, 50)).collect()))));
    }
    // Digests of the wrong length; shadows below 2^50.
    bodies.push((2, body_ping(Ping { vector: vec![(ME, 40, 40)], digests: vec![1, 2], ..Default::default() })));
    bodies.push((2, body_ping(Ping { shadows: vec![ranges(ME, vec![(1, 2)])], ..Default::default() })));
    // Requests: own writes, purged and unknown ranges, many ranges.
    let req = |r: Vec<Ranges>| Body { schema_version: 1, requests: r, ..Default::default() };
    bodies.push((3, req(vec![ranges(ME, vec![(1, 40)])])));
    bodies.push((3, req(vec![ranges(ME, vec![(1, 1), (5, 9), (STEP + 1, STEP + 3)]), ranges(2, vec![(1, 10)])])));
    bodies.push((3, req(vec![ranges(ME, vec![(1, 1 << 53)])])));
    bodies.push((3, req(vec![ranges(ME, vec![(0, 3)])])));
    bodies.push((3, req(vec![ranges(ME, vec![(5, 3)])])));
    bodies.push((3, req(vec![ranges(ME, (1..=4096).map(|i| (i, i)).collect())])));
    bodies.push((3, req(vec![ranges(ME, (1..=4097).map(|i| (i, i)).collect())])));
    // Gone answers, in flight or not, edges and many.
    let gone = |r: Vec<Ranges>| Body { schema_version: 1, gone: r, ..Default::default() };
    bodies.push((2, gone(vec![ranges(2, vec![(1, 10)])])));
    bodies.push((4, gone(vec![ranges(150, vec![(1, 50)])])));
    bodies.push((2, gone(vec![ranges(2, vec![(1, u64::MAX)])])));
    bodies.push((2, gone(vec![ranges(2, (1..=4096).map(|i| (2 * i, 2 * i)).collect())])));
    // All at once.
    bodies.push((
        2,
        Body {
            schema_version: 1,
            ping: Some(ping(3, vec![(2, 3, 9), (7, 0, 4)])),
            requests: vec![ranges(ME, vec![(30, 40)])],
            gone: vec![ranges(7, vec![(1, 4)])],
            ..Default::default()
        },
    ));
    let mut n = 0;
    for (sender, body) in &bodies {
        for key in [None, Some(KEY)] {
            let f = encode_frame(*sender, body, key);
            if key.is_some() && f.len() > 4096 {
                continue; // large seeds once, unkeyed
            }
            std::fs::write(format!("{dir}/seed-{n}"), f).expect("write");
            n += 1;
        }
    }
    // Inputs for the structured mode (any bytes not starting with "QLT").
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in [16usize, 64, 256, 1024, 4096] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut b = bytes;
        if b.starts_with(b"Q") {
            b[0] = 0;
        }
        std::fs::write(format!("{dir}/seed-structured-{len}"), b).expect("write");
    }
    println!("{n} frame seeds and 5 structured seeds written to {dir}");
}

/// Three inputs that, run in order in one process
/// (`control 1-ping 2-gone 3-tick`), make `tick()` send a request the
/// peers refuse: peer 2 claims seqs 1..=10000 of itself, is asked for them,
/// answers every other seq as gone (4096 ranges), and the next request
/// lists the 4097 pieces left, over `MAX_RANGES`.
fn repro(dir: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let p = encode_frame(2, &body_ping(ping(10_000, vec![(2, 0, 10_000)])), None);
    std::fs::write(format!("{dir}/1-ping"), p).expect("write");
    let g = Body { schema_version: 1, gone: vec![ranges(2, (1..=4096).map(|i| (2 * i, 2 * i)).collect())], ..Default::default() };
    std::fs::write(format!("{dir}/2-gone"), encode_frame(2, &g, None)).expect("write");
    // Structured input: one `Op::Tick { keyed: false }` (variant 3 of 6).
    std::fs::write(format!("{dir}/3-tick"), [0x00, 0x00, 0x00, 0x90, 0x00]).expect("write");
    println!("written to {dir}");
}

/// The same steps on a fresh engine, printing what each answers.
fn repro_check(dir: &str) {
    let mut e = engine();
    for name in ["1-ping", "2-gone"] {
        let f = std::fs::read(format!("{dir}/{name}")).expect("read");
        let r = e.apply_frame(&f).map(|(_, out)| out.iter().map(|o| (o.peer, o.frame.len())).collect::<Vec<_>>());
        println!("{name}: {r:?} events {:?}", e.take_events());
    }
    for _ in 0..3 {
        let out = e.tick().expect("tick");
        for o in &out {
            if let Err(err) = quilt::core::protocol::decode_frame(&o.frame, None, 1 << 20) {
                println!("tick: frame of {} bytes to peer {} is refused by the decoder: {err}", o.frame.len(), o.peer);
            }
        }
        println!("tick: {:?}", out.iter().map(|o| (o.peer, o.frame.len())).collect::<Vec<_>>());
    }
}

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn engine() -> Engine {
    let mut e = Engine::open(Config { path: ":memory:".into(), peer_id: Some(ME), heartbeat_ms: 0, ..Config::default() }).expect("open");
    e.migrate(&[Migration { up: SCHEMA.into(), ..Default::default() }]).expect("migrate");
    for p in PEERS {
        e.add_peer(p).expect("add_peer");
    }
    for i in 0..40 {
        e.upsert("t", vec![vec![("id".into(), Value::Int(i)), ("k".into(), Value::Int(1)), ("a".into(), Value::Text("x".into()))]]).expect("upsert");
    }
    e.tick().expect("tick");
    e
}

/// Feed `frames` (after `warm` ones not counted), ticking every `tick_every`.
fn scenario(name: &str, frames: impl Iterator<Item = Vec<u8>>, tick_every: usize) {
    let mut e = engine();
    let base = rss();
    let (mut bytes, mut n, mut max_out, mut max_out_bytes, mut max_tick, mut max_tick_bytes) = (0u64, 0usize, 0usize, 0usize, 0usize, 0usize);
    let t0 = std::time::Instant::now();
    let mut peak = base;
    let mut slowest = 0f64;
    for f in frames {
        bytes += f.len() as u64;
        n += 1;
        let t = std::time::Instant::now();
        let res = e.apply_frame(&f);
        slowest = slowest.max(t.elapsed().as_secs_f64());
        if let Ok((_, out)) = res {
            max_out = max_out.max(out.len());
            max_out_bytes = max_out_bytes.max(out.iter().map(|o| o.frame.len()).sum());
        }
        if tick_every > 0 && n % tick_every == 0 {
            let out = e.tick().expect("tick");
            max_tick = max_tick.max(out.len());
            max_tick_bytes = max_tick_bytes.max(out.iter().map(|o| o.frame.len()).sum());
        }
        let _ = e.take_events();
        peak = peak.max(rss());
        assert_eq!(e.seq(), 40, "seq moved");
    }
    let total = t0.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let last_tick = e.tick().expect("tick").len();
    let tick_s = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    let _ = e.status();
    let status_s = t.elapsed().as_secs_f64();
    let growth = peak.saturating_sub(base);
    println!(
        "{name}: {n} frames, {bytes} bytes in {total:.1}s (slowest frame {:.0} ms; then one tick {:.0} ms / {last_tick} frames, status() {:.0} ms); RSS {} -> peak {} MiB; growth {:.2} bytes per frame byte; largest answer {max_out} frames / {max_out_bytes} bytes; largest tick {max_tick} frames / {max_tick_bytes} bytes",
        slowest * 1e3,
        tick_s * 1e3,
        status_s * 1e3,
        base >> 20,
        peak >> 20,
        growth as f64 / bytes.max(1) as f64
    );
}

fn measure() {
    // Claims from senders that were never added, 4096 new origins each.
    scenario(
        "pings from 300 unknown senders, 4096 origins each",
        (0..300u32).map(|i| encode_frame(1000 + i, &body_ping(ping(5, (1..=4096).map(|o| (10_000 + o, 0, 1000)).collect())), None)),
        0,
    );
    // Distinct origins from the added peers: learned origins hit their cap.
    scenario(
        "pings from added peers, 8192 new origins each (40 frames)",
        (0..40u32).map(|i| encode_frame(PEERS[i as usize % 3], &body_ping(ping(5, (1..=8192).map(|o| (i * 8192 + o, o as u64 % 7, 1000 + o as u64)).collect())), None)),
        4,
    );
    // Re-issued ranges per origin (split parts), then claims for those origins.
    scenario(
        "split pings: 64 re-issued ranges for 64 origins each, then claims",
        (0..200u32).flat_map(|i| {
            let origins: Vec<u32> = (0..64).map(|k| 50 + (i * 64 + k) % 4096).collect();
            let shadows = origins.iter().map(|&o| ranges(o, (0..64).map(|j| (STEP + 2 * j + 1, STEP + 2 * j + 1)).collect())).collect();
            let p = Ping { own_last_seq: 1, shadows, ..Default::default() };
            let claims = ping(1, origins.iter().map(|&o| (o, 0, 10)).collect());
            let s = PEERS[i as usize % 3];
            vec![encode_frame(s, &body_ping(claims.clone()), None), encode_frame(s, &body_ping(p), None), encode_frame(s, &body_ping(claims), None)]
        }),
        3,
    );
    scenario(
        "requests for all own writes, 4096 ranges each (1000 frames)",
        (0..1000u32).map(|i| encode_frame(PEERS[i as usize % 3], &Body { schema_version: 1, requests: vec![ranges(ME, (0..4096).map(|j| (j % 40 + 1, 40)).collect())], ..Default::default() }, None)),
        10,
    );
    scenario(
        "gone answers of 4096 ranges (1000 frames)",
        (0..1000u32).map(|i| encode_frame(PEERS[i as usize % 3], &Body { schema_version: 1, gone: vec![ranges(2 + i % 3, (1..=4096).map(|j| (2 * j, 2 * j + 1)).collect())], ..Default::default() }, None)),
        10,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("seeds") => seeds(args.get(2).map(String::as_str).unwrap_or("corpus/control")),
        Some("measure") => measure(),
        Some("repro-check") => repro_check(args.get(2).map(String::as_str).unwrap_or("artifacts-report")),
        Some("repro") => repro(args.get(2).map(String::as_str).unwrap_or("artifacts-report")),
        _ => eprintln!("usage: control_tool seeds <dir> | measure | repro <dir>"),
    }
}
