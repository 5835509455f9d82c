//! Unit tests of the wire format (`protocol.rs`).

use super::*;

fn patch(seq: u64, cols: &[&str], vals: Vec<Value>) -> Patch {
    Patch {
        table: "t".into(),
        origin: 7,
        seq,
        at: 1000 + seq,
        columns: Arc::new(cols.iter().map(|s| s.to_string()).collect()),
        values: vals,
    }
}

#[test]
fn round_trip_with_and_without_key() {
    for key in [None, Some(&b"secret"[..])] {
        let mut b = FrameBuilder::new(9, 3, key, 1 << 20);
        b.push(&patch(
            1,
            &["id", "name"],
            vec![Value::Int(1), Value::Text("a".into())],
        ));
        b.push(&patch(2, &["id", "name"], vec![Value::Int(2), Value::Null]));
        b.push(&patch(3, &["id"], vec![Value::Int(3)]));
        b.body_mut().ping = Some(Ping {
            own_last_seq: 3,
            vector: vec![(7, 3, 3)],
            ..Default::default()
        });
        let frames = b.finish();
        assert_eq!(frames.len(), 1);
        let f = decode_frame(&frames[0], key, 1 << 20).unwrap();
        assert_eq!(f.sender, 9);
        assert_eq!(f.body.schema_version, 3);
        let ps: Vec<Patch> = f.body.groups.iter().flat_map(|g| g.patches()).collect();
        assert_eq!(ps.len(), 3);
        assert_eq!(
            ps[1],
            patch(2, &["id", "name"], vec![Value::Int(2), Value::Null])
        );
        assert_eq!(ps[2].seq, 3);
        assert_eq!(f.body.ping.unwrap().own_last_seq, 3);
    }
}

#[test]
fn all_value_types_round_trip() {
    let vals = vec![
        Value::Null,
        Value::Int(-5),
        Value::Int(i64::MAX),
        Value::Real(1.5),
        Value::Text("héllo".into()),
        Value::Blob(vec![0, 1, 255]),
    ];
    let cols = ["a", "b", "c", "d", "e", "f"];
    let mut b = FrameBuilder::new(1, 1, None, 1 << 20);
    b.push(&patch(1, &cols, vals.clone()));
    let f = decode_frame(&b.finish()[0], None, 1 << 20).unwrap();
    assert_eq!(f.body.groups[0].rows[0].2, vals);
}

#[test]
fn splits_under_max_bytes() {
    let mut b = FrameBuilder::new(1, 1, Some(b"k"), 1200);
    for i in 1..=500 {
        b.push(&patch(
            i,
            &["id", "name"],
            vec![Value::Int(i as i64), Value::Text("x".repeat(20))],
        ));
    }
    let frames = b.finish();
    assert!(frames.len() > 5);
    let mut n = 0;
    for f in &frames {
        assert!(f.len() <= 1200, "frame of {} bytes", f.len());
        n += decode_frame(f, Some(b"k"), 1200)
            .unwrap()
            .body
            .groups
            .iter()
            .map(|g| g.rows.len())
            .sum::<usize>();
    }
    assert_eq!(n, 500);
}

#[test]
fn rejects_tampering_truncation_and_wrong_key() {
    let mut b = FrameBuilder::new(1, 1, Some(b"k1"), 1 << 20);
    b.push(&patch(1, &["id"], vec![Value::Int(1)]));
    let f = b.finish().remove(0);
    let mut t = f.clone();
    let n = t.len();
    t[n - 40] ^= 1;
    assert_eq!(
        decode_frame(&t, Some(b"k1"), 1 << 20).unwrap_err().code(),
        "E_AUTH"
    );
    assert_eq!(
        decode_frame(&f, Some(b"k2"), 1 << 20).unwrap_err().code(),
        "E_AUTH"
    );
    assert_eq!(
        decode_frame(&f[..n - 3], Some(b"k1"), 1 << 20)
            .unwrap_err()
            .code(),
        "E_AUTH"
    );
    let plain = encode_frame(1, &Body::default(), None);
    assert_eq!(
        decode_frame(&plain, Some(b"k1"), 1 << 20)
            .unwrap_err()
            .code(),
        "E_AUTH"
    );
    for cut in 0..plain.len() {
        let _ = decode_frame(&plain[..cut], None, 1 << 20);
    }
    let mut v = plain.clone();
    v[3] = 99;
    assert_eq!(
        decode_frame(&v, None, 1 << 20).unwrap_err().code(),
        "E_VERSION"
    );
    assert_eq!(decode_frame(&f, None, 10).unwrap_err().code(), "E_FRAME");
}

#[test]
fn truncated_bodies_fail_cleanly() {
    let mut b = FrameBuilder::new(1, 1, None, 1 << 20);
    for i in 1..50 {
        b.push(&patch(
            i,
            &["id", "v"],
            vec![Value::Int(i as i64), Value::Blob(vec![1; 30])],
        ));
    }
    let f = b.finish().remove(0);
    for cut in HEADER_LEN..f.len() {
        assert!(decode_frame(&f[..cut], None, 1 << 20).is_err());
    }
}
