//! Trust: one history per identity, whatever happens to the files.
//! Disk rollbacks, two files with one peer id, long partitions with short
//! retention, and forged control messages, engine by engine over an
//! in-memory network (no loss: the point is the identity logic).

use quilt::core::engine::{Config, Engine, Event, Migration, Outgoing};
use quilt::core::protocol::{self, Body, Ping, Ranges};
use quilt::core::value::Value;
use std::collections::BTreeSet;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, v TEXT, PRIMARY KEY (id));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);";

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("quilt-trust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(path: &std::path::Path, peer: Option<u32>, retention_ms: u64) -> Engine {
    let mut e = Engine::open(Config {
        path: path.to_string_lossy().into_owned(),
        peer_id: peer,
        heartbeat_ms: 0,
        retention_ms,
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

fn write(e: &mut Engine, id: i64, v: &str) -> String {
    e.upsert(
        "t",
        vec![vec![
            ("id".into(), Value::Int(id)),
            ("v".into(), Value::Text(v.into())),
        ]],
    )
    .unwrap()
}

fn rows(e: &Engine) -> Vec<(i64, String)> {
    e.query("SELECT id, v FROM t ORDER BY id", &[], false)
        .unwrap()
        .1
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Int(i), Value::Text(s)) => (*i, s.clone()),
            _ => (0, String::new()),
        })
        .collect()
}

/// Deliver frames between engines (index = position in `es`), with
/// `links` the pairs that can talk, until quiet; then tick all, a few rounds.
fn settle(es: &mut [&mut Engine], links: &[(usize, usize)], rounds: usize) {
    let ids: Vec<u32> = es.iter().map(|e| e.peer_id()).collect();
    let mut queue: Vec<(usize, Outgoing)> = Vec::new();
    for &(a, b) in links {
        for o in es[a].add_peer(ids[b]).unwrap() {
            queue.push((a, o));
        }
    }
    for _ in 0..rounds {
        for (i, e) in es.iter_mut().enumerate() {
            for o in e.tick().unwrap() {
                queue.push((i, o));
            }
        }
        let mut steps = 0;
        while let Some((from, o)) = queue.pop() {
            steps += 1;
            assert!(steps < 200_000, "no quiet");
            // Every engine with this id that `from` links to gets it (two
            // files with one id both receive what is sent to that id).
            for (j, e) in es.iter_mut().enumerate() {
                if ids[j] == o.peer && links.contains(&(from, j)) {
                    if let Ok((_, out)) = e.apply_frame(&o.frame) {
                        for x in out {
                            queue.push((j, x));
                        }
                    }
                }
            }
        }
    }
}

fn patch_count(e: &Engine) -> i64 {
    match e
        .query("SELECT count(*) FROM t_patches", &[], true)
        .unwrap()
        .1[0][0]
    {
        Value::Int(n) => n,
        _ => -1,
    }
}

fn events(e: &mut Engine) -> Vec<String> {
    e.take_events()
        .into_iter()
        .filter_map(|ev| match ev {
            Event::Error { code, .. } => Some(code.to_string()),
            _ => None,
        })
        .collect()
}

fn copy_db(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).unwrap();
}

#[test]
fn disk_rollback_converges_to_the_union() {
    let d = dir("rollback");
    let pa = d.join("a.db");
    let mut a = open(&pa, Some(30), 3_600_000);
    let mut b = open(&d.join("b.db"), Some(2), 3_600_000);
    write(&mut a, 1, "one");
    write(&mut a, 2, "two");
    // Back up a (closed connection: the WAL is checkpointed).
    drop(a);
    copy_db(&pa, &d.join("backup.db"));
    let mut a = open(&pa, Some(30), 3_600_000);
    for i in 3..=5 {
        write(&mut a, i, "lost future");
    }
    settle(&mut [&mut a, &mut b], &[(0, 1), (1, 0)], 3);
    assert_eq!(rows(&b).len(), 5);
    drop(a);
    copy_db(&d.join("backup.db"), &pa);
    let _ = std::fs::remove_file(d.join("a.db-wal"));
    let mut a = open(&pa, None, 3_600_000);
    assert_eq!(a.peer_id(), 30);
    let t9 = write(&mut a, 9, "after restore");
    assert_eq!(t9, "30.3", "the restored file reuses seq 3");
    settle(&mut [&mut a, &mut b], &[(0, 1), (1, 0)], 8);
    let want: Vec<i64> = vec![1, 2, 3, 4, 5, 9];
    assert_eq!(rows(&a).iter().map(|r| r.0).collect::<Vec<_>>(), want);
    assert_eq!(rows(&a), rows(&b));
    assert!(a.status().reissued + b.status().reissued > 0);
    let ev: Vec<String> = events(&mut a).into_iter().chain(events(&mut b)).collect();
    assert!(ev.iter().any(|c| c == "E_SEQ"), "{ev:?}");
    // New writes continue past everything the cluster holds.
    let t = write(&mut a, 10, "next");
    assert_eq!(t, "30.6");
    settle(&mut [&mut a, &mut b], &[(0, 1), (1, 0)], 3);
    assert_eq!(rows(&a), rows(&b));
    assert_eq!(
        b.status()
            .peers
            .iter()
            .find(|p| p.peer_id == 30)
            .unwrap()
            .missing,
        0
    );
}

#[test]
fn two_files_with_one_peer_id_converge_through_a_hub() {
    let d = dir("clone");
    let pa = d.join("a.db");
    let mut a = open(&pa, Some(30), 3_600_000);
    write(&mut a, 1, "base");
    drop(a);
    copy_db(&pa, &d.join("clone.db"));
    let mut a = open(&pa, None, 3_600_000);
    let mut c = open(&d.join("clone.db"), None, 3_600_000);
    assert_eq!(c.peer_id(), 30);
    let mut hub = open(&d.join("hub.db"), Some(7), 3_600_000);
    // Both write the same seqs, in the same millisecond.
    for i in 0..5 {
        write(&mut a, 100 + i, "from a");
        write(&mut c, 200 + i, "from clone");
    }
    settle(
        &mut [&mut a, &mut c, &mut hub],
        &[(0, 2), (2, 0), (1, 2), (2, 1)],
        12,
    );
    let want: BTreeSet<i64> = [1].into_iter().chain(100..105).chain(200..205).collect();
    for e in [&a, &c, &hub] {
        let got: BTreeSet<i64> = rows(e).iter().map(|r| r.0).collect();
        assert_eq!(got, want, "peer holds {got:?}");
    }
    assert_eq!(rows(&a), rows(&hub));
    assert_eq!(rows(&c), rows(&hub));
}

#[test]
fn forged_pings_do_not_move_our_seq() {
    let d = dir("ping");
    let mut a = open(&d.join("a.db"), Some(5), 3_600_000);
    write(&mut a, 1, "x");
    a.add_peer(9).unwrap();
    for claim in [i64::MAX as u64, u64::MAX, 1 << 53, (1 << 53) + 1] {
        let body = Body {
            ping: Some(Ping {
                own_last_seq: 1,
                vector: vec![(5, 0, claim)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = protocol::encode_frame(9, &body, None);
        let r = a.apply_frame(&f);
        if claim > 1 << 53 {
            assert_eq!(r.unwrap_err().code(), "E_FRAME");
        }
        assert_eq!(a.seq(), 1, "claim {claim} moved the seq");
    }
    // A claim within range: asked for, never served, then dropped.
    for _ in 0..40 {
        let _ = a.tick().unwrap();
    }
    assert_eq!(a.seq(), 1);
    assert_eq!(write(&mut a, 2, "y"), "5.2");
    let me = a
        .status()
        .peers
        .iter()
        .find(|p| p.peer_id == 5)
        .map(|p| p.missing);
    assert!(me.is_none_or(|m| m == 0));
}

#[test]
fn gone_from_a_peer_not_asked_is_ignored() {
    let d = dir("gone");
    let mut a = open(&d.join("a.db"), Some(5), 3_600_000);
    a.add_peer(9).unwrap();
    a.add_peer(8).unwrap();
    // Peer 9 claims origin 4 up to 10; we ask 4 or 9 for it.
    let ping = Body {
        ping: Some(Ping {
            own_last_seq: 0,
            vector: vec![(4, 10, 10)],
            ..Default::default()
        }),
        ..Default::default()
    };
    a.apply_frame(&protocol::encode_frame(9, &ping, None))
        .unwrap();
    let gone = Body {
        gone: vec![Ranges {
            origin: 4,
            ranges: vec![(1, 10)],
        }],
        ..Default::default()
    };
    // From 8, which was not asked: ignored, repair goes on.
    a.apply_frame(&protocol::encode_frame(8, &gone, None))
        .unwrap();
    assert!(!events(&mut a).iter().any(|c| c == "E_GONE"));
    let st = a.status();
    assert_eq!(
        st.peers.iter().find(|p| p.peer_id == 4).unwrap().missing,
        10
    );
}

#[test]
fn retention_waits_for_known_peers() {
    let d = dir("retention");
    let mut a = open(&d.join("a.db"), Some(1), 0);
    let mut b = open(&d.join("b.db"), Some(2), 0);
    settle(&mut [&mut a, &mut b], &[(0, 1), (1, 0)], 2);
    // Partition: b is known to a but hears nothing.
    for i in 0..20 {
        write(&mut a, i, "w");
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    for _ in 0..5 {
        let _ = a.tick().unwrap();
    }
    assert_eq!(patch_count(&a), 20, "purged what peer 2 lacks");
    settle(&mut [&mut a, &mut b], &[(0, 1), (1, 0)], 4);
    assert_eq!(rows(&b).len(), 20);
    assert!(!events(&mut b).iter().any(|c| c == "E_GONE"));
    // Once acknowledged, they may go.
    for _ in 0..3 {
        let _ = a.tick().unwrap();
    }
    assert_eq!(patch_count(&a), 0);
    // A removed peer is released for good.
    a.remove_peer(2).unwrap();
    for i in 100..105 {
        write(&mut a, i, "x");
    }
    std::thread::sleep(std::time::Duration::from_millis(5));
    let _ = a.tick().unwrap();
    assert_eq!(patch_count(&a), 0);
}

/// Runs of patch rows kept in memory (runs/tail.rs) are lost with the
/// process: after a crash (the engine dropped without `close`) the file
/// still serves every seq, its own and a relayed origin's, to a new peer.
#[test]
fn a_crash_loses_no_retransmission() {
    let d = dir("crash-tail");
    let pa = d.join("a.db");
    let mut a = open(&pa, Some(1), 3_600_000);
    let mut c = open(&d.join("c.db"), Some(3), 3_600_000);
    for i in 0..700 {
        write(&mut a, i, "a");
    }
    for i in 1000..1010 {
        write(&mut c, i, "c");
    }
    settle(&mut [&mut a, &mut c], &[(0, 1), (1, 0)], 3);
    for i in 700..900 {
        write(&mut a, i, "a2");
    }
    drop(a);
    let mut a = open(&pa, None, 3_600_000);
    for i in 900..950 {
        write(&mut a, i, "a3");
    }
    drop(a);
    let mut a = open(&pa, None, 3_600_000);
    let mut b = open(&d.join("b.db"), Some(2), 3_600_000);
    settle(&mut [&mut a, &mut b], &[(0, 1), (1, 0)], 6);
    assert_eq!(rows(&b).len(), 960);
    assert_eq!(rows(&b), rows(&a));
    assert!(events(&mut a).is_empty() && events(&mut b).is_empty());
}
