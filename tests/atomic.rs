//! Atomic groups: the patches of one commit (`upsertMany`, a transaction)
//! are applied all or none on every peer, whatever the frames do on the
//! way. Every step of every delivery order is read, not only the end.

use quilt::core::engine::{Config, Engine, Migration, Outgoing};
use quilt::core::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, v TEXT, PRIMARY KEY (id));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);";

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quilt-atomic-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(path: &std::path::Path, peer: u32, max_frame: usize) -> Engine {
    let mut e = Engine::open(Config {
        path: path.to_string_lossy().into_owned(),
        peer_id: Some(peer),
        heartbeat_ms: 0,
        max_frame_bytes: max_frame,
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

fn batch(e: &mut Engine, ids: std::ops::Range<i64>, v: &str) {
    let rows = ids
        .map(|id| {
            vec![
                ("id".into(), Value::Int(id)),
                (
                    "v".into(),
                    Value::Text(format!("{v}-{id}-{}", "x".repeat(40))),
                ),
            ]
        })
        .collect();
    e.upsert("t", rows).unwrap();
}

fn count(e: &Engine, lo: i64, hi: i64) -> i64 {
    match e
        .query(
            "SELECT count(*) FROM t WHERE id BETWEEN ?1 AND ?2",
            &[Value::Int(lo), Value::Int(hi)],
            true,
        )
        .unwrap()
        .1[0][0]
    {
        Value::Int(n) => n,
        _ => -1,
    }
}

/// Frames A sends to B for one write.
fn frames_of(a: &mut Engine, f: impl FnOnce(&mut Engine)) -> Vec<Vec<u8>> {
    f(a);
    a.drain_outbox().into_iter().map(|o| o.frame).collect()
}

#[test]
fn a_batch_split_over_frames_appears_whole_in_any_order() {
    let d = dir("order");
    let mut a = open(&d.join("a.db"), 1, 400);
    a.add_peer(2).unwrap();
    let frames = frames_of(&mut a, |a| batch(a, 1..13, "g"));
    assert!(frames.len() >= 3, "the group spans {} frames", frames.len());
    for order in [vec![2usize, 0, 1], vec![1, 2, 0], vec![0, 2, 1]] {
        let mut b = open(&d.join(format!("b{}.db", order[0])), 2, 400);
        b.add_peer(1).unwrap();
        let mut idx: Vec<usize> = order.clone();
        idx.extend(3..frames.len());
        for (k, &i) in idx.iter().enumerate() {
            b.apply_frame(&frames[i]).unwrap();
            let n = count(&b, 1, 12);
            // Every frame holds part of the group: nothing shows until
            // the last one is in, then all of it.
            let want = if k + 1 == idx.len() { 12 } else { 0 };
            assert_eq!(n, want, "after frames {:?}", &idx[..=k]);
        }
        assert_eq!(count(&b, 1, 12), 12);
        assert_eq!(b.status().pending, 0);
    }
}

#[test]
fn a_lost_part_is_repaired_and_the_group_applied_at_once_even_after_a_restart() {
    let d = dir("lost");
    let mut a = open(&d.join("a.db"), 1, 600);
    let pb = d.join("b.db");
    let mut b = open(&pb, 2, 600);
    a.add_peer(2).unwrap();
    b.add_peer(1).unwrap();
    let frames = frames_of(&mut a, |a| batch(a, 1..13, "g"));
    assert!(frames.len() >= 2);
    // The first frame is lost; the others arrive.
    for f in &frames[1..] {
        b.apply_frame(f).unwrap();
        assert_eq!(count(&b, 1, 12), 0);
    }
    // B restarts while waiting.
    drop(b);
    let mut b = open(&pb, 2, 600);
    b.add_peer(1).unwrap();
    assert_eq!(count(&b, 1, 12), 0);
    // Heartbeats: B learns of the gap and asks; A serves; each answer is
    // applied and read.
    let mut queue: Vec<Outgoing> = Vec::new();
    for _ in 0..6 {
        queue.extend(a.tick().unwrap());
        queue.extend(b.tick().unwrap());
        while let Some(o) = queue.pop() {
            let e = if o.peer == 1 { &mut a } else { &mut b };
            if let Ok((_, out)) = e.apply_frame(&o.frame) {
                queue.extend(out);
            }
            let n = count(&b, 1, 12);
            assert!(n == 0 || n == 12, "half a group visible: {n}");
        }
    }
    assert_eq!(count(&b, 1, 12), 12);
    assert_eq!(b.status().pending, 0);
}

#[test]
fn a_third_peer_learns_the_group_from_a_relay() {
    // A -> B (whole) ; B serves C, whose first answer frame is lost.
    let d = dir("relay");
    let mut a = open(&d.join("a.db"), 1, 600);
    let mut b = open(&d.join("b.db"), 2, 600);
    let mut c = open(&d.join("c.db"), 3, 600);
    a.add_peer(2).unwrap();
    b.add_peer(1).unwrap();
    b.add_peer(3).unwrap();
    c.add_peer(2).unwrap();
    for f in frames_of(&mut a, |a| batch(a, 1..13, "g")) {
        b.apply_frame(&f).unwrap();
    }
    assert_eq!(count(&b, 1, 12), 12);
    drop(a);
    let mut dropped = false;
    let mut queue: Vec<Outgoing> = Vec::new();
    for _ in 0..8 {
        queue.extend(b.tick().unwrap().into_iter().filter(|o| o.peer == 3));
        queue.extend(c.tick().unwrap().into_iter().filter(|o| o.peer == 2));
        while let Some(o) = queue.pop() {
            if o.peer == 3 {
                let carries_rows = o.frame.len() > 300;
                if carries_rows && !dropped {
                    dropped = true;
                    continue;
                }
                if let Ok((_, out)) = c.apply_frame(&o.frame) {
                    queue.extend(out.into_iter().filter(|x| x.peer == 2));
                }
                let n = count(&c, 1, 12);
                assert!(n == 0 || n == 12, "half a group visible on c: {n}");
            } else if let Ok((_, out)) = b.apply_frame(&o.frame) {
                queue.extend(out.into_iter().filter(|x| x.peer == 3));
            }
        }
    }
    assert!(dropped);
    assert_eq!(count(&c, 1, 12), 12);
}

#[test]
fn the_frame_that_completes_a_group_reports_all_of_it_as_one_change_batch() {
    let d = dir("changes");
    let mut a = open(&d.join("a.db"), 1, 400);
    let mut b = open(&d.join("b.db"), 2, 400);
    a.add_peer(2).unwrap();
    b.add_peer(1).unwrap();
    b.collect_changes(true);
    let frames = frames_of(&mut a, |a| batch(a, 1..13, "g"));
    assert!(frames.len() >= 2);
    for f in frames.iter().rev() {
        b.apply_frame(f).unwrap();
    }
    let batches = b.take_changes();
    assert_eq!(batches.len(), 1, "one batch, from the completing frame");
    let mut ids: Vec<i64> = batches[0]
        .iter()
        .filter_map(|c| match c.key.first() {
            Some((_, Value::Int(i))) => Some(*i),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..13).collect::<Vec<_>>());
}
