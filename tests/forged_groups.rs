//! Crafted frames against atomic groups and row deletions: malformed ones
//! are refused whole (E_FRAME) and change nothing; a group whose other
//! part never comes stays invisible, held, and is asked for (a part gone
//! everywhere releases it: engine/atomic.rs `release_waiting`).

use quilt::core::engine::{Config, Engine, Migration, Outgoing};
use quilt::core::hlc;
use quilt::core::protocol::{encode_frame, Body, PatchGroup, WireRow};
use quilt::core::value::Value;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, v TEXT, PRIMARY KEY (id));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);";

fn engine(peer: u32) -> Engine {
    let mut e = Engine::open(Config {
        path: ":memory:".into(),
        peer_id: Some(peer),
        heartbeat_ms: 0,
        ..Config::default()
    })
    .unwrap();
    e.migrate(&[Migration {
        up: SCHEMA.into(),
        ..Default::default()
    }])
    .unwrap();
    e
}

fn group(origin: u32, columns: &[&str], seqs: std::ops::RangeInclusive<u64>) -> PatchGroup {
    let now = hlc::from_unix_ms(hlc::wall_ms()) as i64;
    let mut rows = Vec::new();
    let (mut at0, mut s0) = (0i64, 0i64);
    for s in seqs {
        let at = now + s as i64;
        let mut vals = vec![Value::Int(s as i64)];
        for c in &columns[1..] {
            vals.push(if *c == "_quiltDeleted" {
                Value::Int(1)
            } else {
                Value::Text(format!("v{s}"))
            });
        }
        rows.push(WireRow(at - at0, s as i64 - s0, vals));
        (at0, s0) = (at, s as i64);
    }
    PatchGroup {
        table: "t".into(),
        origin,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

fn count(e: &Engine) -> i64 {
    match e.query("SELECT count(*) FROM t", &[], true).unwrap().1[0][0] {
        Value::Int(n) => n,
        _ => -1,
    }
}

#[test]
fn malformed_groups_and_deletions_are_refused_whole() {
    let mut b = engine(2);
    b.add_peer(1).unwrap();
    let ok = group(1, &["id", "v"], 1..=3);
    let bad: Vec<Body> = vec![
        Body {
            schema_version: 1,
            groups: vec![ok.clone()],
            atomic: vec![(1, 0, 3)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![ok.clone()],
            atomic: vec![(1, 3, 3)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![ok.clone()],
            atomic: vec![(1, 1, 1 << 21)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![ok.clone()],
            atomic: vec![(0, 1, 3)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![ok.clone()],
            atomic: (0..4097).map(|i| (1, 1 + i, 2 + i)).collect(),
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![group(1, &["id", "_quiltDeleted", "v"], 1..=1)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![group(1, &["_quiltDeleted"], 1..=1)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![group(1, &["id", "_quiltOther"], 1..=1)],
            ..Default::default()
        },
        Body {
            schema_version: 1,
            groups: vec![group(1, &["id", "v", "_quiltDeleted"], 1..=1)],
            ..Default::default()
        },
    ];
    for (i, body) in bad.iter().enumerate() {
        let r = b.apply_frame(&encode_frame(1, body, None));
        assert!(r.is_err(), "case {i} was accepted");
        assert_eq!(count(&b), 0, "case {i} changed rows");
        assert_eq!(
            b.status()
                .peers
                .iter()
                .map(|p| p.last_seq)
                .max()
                .unwrap_or(0),
            0,
            "case {i}"
        );
    }
    // The well-formed version applies.
    b.apply_frame(&encode_frame(
        1,
        &Body {
            schema_version: 1,
            groups: vec![ok],
            atomic: vec![(1, 1, 3)],
            ..Default::default()
        },
        None,
    ))
    .unwrap();
    assert_eq!(count(&b), 3);
}

#[test]
fn a_group_whose_other_part_never_comes_stays_invisible_and_is_asked_for() {
    // Peer 1 announces a group 1..=20 but only ever sends 1..=10.
    let mut a = engine(1);
    let mut b = engine(2);
    a.add_peer(2).unwrap();
    b.add_peer(1).unwrap();
    let body = Body {
        schema_version: 1,
        groups: vec![group(1, &["id", "v"], 1..=10)],
        atomic: vec![(1, 1, 20)],
        ..Default::default()
    };
    let (res, out) = b.apply_frame(&encode_frame(1, &body, None)).unwrap();
    assert_eq!((res.stored, res.applied), (10, 0));
    // The group's end says 11..=20 exist: they are asked for at once.
    assert!(res.requested > 0, "{res:?}");
    assert!(out.iter().any(|o| o.peer == 1));
    let mut queue: Vec<Outgoing> = out;
    for _ in 0..12 {
        queue.extend(b.tick().unwrap());
        while let Some(o) = queue.pop() {
            let e = if o.peer == 1 { &mut a } else { &mut b };
            if let Ok((_, out)) = e.apply_frame(&o.frame) {
                queue.extend(out);
            }
            assert_eq!(count(&b), 0, "half a group must never show");
        }
    }
    // Held (not stored twice, not counted as schema-pending).
    let st = b.status();
    assert_eq!(st.pending, 0);
    assert!(b.has(1, 10));
    assert!(!b.has(1, 11));
}
