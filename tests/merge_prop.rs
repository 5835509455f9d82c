//! Merge order independence: random patch sets (NULLs included), delivered
//! in random orders, with duplicates and random batching, to fresh databases
//! must give identical tables, equal to a reference LWW fold.

use proptest::prelude::*;
use quilt::core::engine::{Config, Engine, Migration};
use quilt::core::protocol::{FrameBuilder, Patch};
use quilt::core::value::Value;
use std::collections::BTreeMap;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER NOT NULL, k INTEGER NOT NULL, a, b, c, PRIMARY KEY (id, k));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, k INTEGER, a, b, c);";

fn engine(id: u32) -> Engine {
    let mut e = Engine::open(Config {
        peer_id: Some(id),
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

fn dump(e: &Engine) -> Vec<Vec<Value>> {
    e.query("SELECT id, k, a, b, c FROM t ORDER BY id, k", &[], false)
        .unwrap()
        .1
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0i64..5).prop_map(Value::Int),
        "[a-c]{0,2}".prop_map(Value::Text),
        (0u8..3).prop_map(|x| Value::Real(x as f64 / 2.0)),
        proptest::collection::vec(0u8..3, 0..2).prop_map(Value::Blob),
    ]
}

/// (origin, row id, at offset, which columns, values)
fn patch_spec() -> impl Strategy<Value = Spec> {
    (
        1u32..4,
        0i64..4,
        0u64..6,
        any::<[bool; 3]>(),
        [value(), value(), value()],
    )
}

type Spec = (u32, i64, u64, [bool; 3], [Value; 3]);
type Expected = BTreeMap<i64, BTreeMap<String, ((u64, u32, u64), Value)>>;

fn build(specs: &[Spec]) -> Vec<Patch> {
    let mut seqs: BTreeMap<u32, u64> = BTreeMap::new();
    let mut at_by_origin: BTreeMap<u32, u64> = BTreeMap::new();
    specs
        .iter()
        .map(|(o, id, at_off, set, vals)| {
            let seq = seqs.entry(*o).and_modify(|s| *s += 1).or_insert(1);
            // HLC values grow with seq per origin; equal stamps across origins are allowed.
            let at = at_by_origin
                .entry(*o)
                .and_modify(|a| *a += at_off)
                .or_insert(1000 + at_off);
            let mut columns = vec!["id".to_string(), "k".to_string()];
            let mut values = vec![Value::Int(*id), Value::Int(1)];
            for (i, name) in ["a", "b", "c"].iter().enumerate() {
                if set[i] {
                    columns.push(name.to_string());
                    // Keep column types plausible for the declared affinity.
                    values.push(match (i, &vals[i]) {
                        (1, Value::Text(_)) | (1, Value::Blob(_)) => Value::Real(0.5),
                        (1, Value::Int(n)) => Value::Real(*n as f64),
                        (_, v) => v.clone(),
                    });
                }
            }
            Patch {
                table: "t".into(),
                origin: *o,
                seq: *seq,
                at: *at,
                columns: std::sync::Arc::new(columns),
                values,
            }
        })
        .collect()
}

fn frames(patches: &[Patch], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (patches.len() + 1)).collect();
    bounds.push(patches.len());
    bounds.sort_unstable();
    for end in bounds {
        if end <= start {
            continue;
        }
        let mut b = FrameBuilder::new(99, 1, None, 1 << 20);
        for p in &patches[start..end] {
            b.push(p);
        }
        out.extend(b.finish());
        start = end;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn merge_is_order_independent(
        specs in proptest::collection::vec(patch_spec(), 1..30),
        perm_seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
        dups in proptest::collection::vec(any::<usize>(), 0..5),
    ) {
        let patches = build(&specs);
        // Reference: deliver one patch per frame in order.
        let mut reference = engine(50);
        for f in frames(&patches, &(0..patches.len()).collect::<Vec<_>>()) {
            reference.apply_frame(&f).unwrap();
        }
        // Shuffled order, random batching, duplicated frames.
        let mut shuffled = patches.clone();
        let mut s = perm_seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut fs = frames(&shuffled, &cuts);
        for d in &dups {
            let f = fs[d % fs.len()].clone();
            fs.insert(d % (fs.len() + 1), f);
        }
        let mut other = engine(51);
        for f in &fs {
            other.apply_frame(f).unwrap();
        }
        prop_assert_eq!(dump(&reference), dump(&other));
        // Reverse order too.
        let mut rev = engine(52);
        for f in frames(&patches, &(0..patches.len()).collect::<Vec<_>>()).iter().rev() {
            rev.apply_frame(f).unwrap();
        }
        prop_assert_eq!(dump(&reference), dump(&rev));
        // Compare with a plain LWW fold.
        let mut expect: Expected = BTreeMap::new();
        for p in &patches {
            let id = match p.values[0] { Value::Int(i) => i, _ => unreachable!() };
            let row = expect.entry(id).or_default();
            for (c, v) in p.columns.iter().zip(&p.values).skip(2) {
                let stamp = (p.at, p.origin, p.seq);
                let e = row.entry(c.clone()).or_insert((stamp, v.clone()));
                if stamp >= e.0 { *e = (stamp, v.clone()); }
            }
        }
        let got = dump(&reference);
        prop_assert_eq!(got.len(), expect.len());
        for r in got {
            let id = match r[0] { Value::Int(i) => i, _ => unreachable!() };
            let want = &expect[&id];
            for (i, c) in ["a", "b", "c"].iter().enumerate() {
                let w = want.get(*c).map(|x| x.1.clone()).unwrap_or(Value::Null);
                prop_assert_eq!(&r[2 + i], &w, "row {} column {}", id, c);
            }
        }
    }
}

#[test]
fn old_patch_touches_only_its_row() {
    let mut e = engine(60);
    let mut b = FrameBuilder::new(7, 1, None, 1 << 20);
    for i in 1..=2000u64 {
        b.push(&Patch {
            table: "t".into(),
            origin: 7,
            seq: i,
            at: 10_000 + i,
            columns: std::sync::Arc::new(vec!["id".into(), "k".into(), "a".into()]),
            values: vec![
                Value::Int(i as i64),
                Value::Int(1),
                Value::Text("new".into()),
            ],
        });
    }
    for f in b.finish() {
        e.apply_frame(&f).unwrap();
    }
    // A late, older patch for row 5 from another origin loses and changes nothing else.
    let mut b = FrameBuilder::new(8, 1, None, 1 << 20);
    b.push(&Patch {
        table: "t".into(),
        origin: 8,
        seq: 1,
        at: 5,
        columns: std::sync::Arc::new(vec!["id".into(), "k".into(), "a".into(), "b".into()]),
        values: vec![
            Value::Int(5),
            Value::Int(1),
            Value::Text("old".into()),
            Value::Real(1.5),
        ],
    });
    let changes_before = e.connection().total_changes();
    let r = e.apply_frame(&b.finish()[0]).unwrap().0;
    assert_eq!(r.applied, 1);
    // patch row + base row + clock row, no matter how big the table is
    assert!(e.connection().total_changes() - changes_before <= 4);
    let row = e
        .query("SELECT a, b FROM t WHERE id = 5", &[], true)
        .unwrap()
        .1;
    assert_eq!(row[0], vec![Value::Text("new".into()), Value::Real(1.5)]);
}

// ----- ordinals: renames, added columns and a downgrade in between ----------

/// v1: t(id, a, b, c); v2 renames b to bb (declared); v3 adds d.
fn evolving() -> Vec<Migration> {
    vec![
        Migration {
            up: "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b, c);
                 CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, a, b, c);"
                .into(),
            down: Some("DROP TABLE t; DROP TABLE t_patches;".into()),
            renames: vec![],
        },
        Migration {
            up: "ALTER TABLE t RENAME COLUMN b TO bb; ALTER TABLE t_patches RENAME COLUMN b TO bb;".into(),
            down: Some("ALTER TABLE t RENAME COLUMN bb TO b; ALTER TABLE t_patches RENAME COLUMN bb TO b;".into()),
            renames: vec![("t".into(), "b".into(), "bb".into())],
        },
        Migration {
            up: "ALTER TABLE t ADD COLUMN d; ALTER TABLE t_patches ADD COLUMN d;".into(),
            down: Some("ALTER TABLE t DROP COLUMN d; ALTER TABLE t_patches DROP COLUMN d;".into()),
            renames: vec![],
        },
    ]
}

/// Column names of the logical columns a, b, c, d at a schema version.
fn names_at(v: u32) -> Vec<&'static str> {
    match v {
        1 => vec!["a", "b", "c"],
        2 => vec!["a", "bb", "c"],
        _ => vec!["a", "bb", "c", "d"],
    }
}

/// A column's winning (stamp, value) in the reference fold.
type Won = ((u64, u32, u64), Value);

/// (origin, row id, at offset, schema version of the writer, columns set, values)
type VSpec = (u32, i64, u64, u32, [bool; 4], [Value; 4]);

fn vspec() -> impl Strategy<Value = VSpec> {
    (
        1u32..4,
        0i64..3,
        0u64..4,
        1u32..4,
        any::<[bool; 4]>(),
        [value(), value(), value(), value()],
    )
}

/// Patches with the version their writer had.
fn vbuild(specs: &[VSpec]) -> Vec<(u32, Patch)> {
    let mut seqs: BTreeMap<u32, u64> = BTreeMap::new();
    let mut ats: BTreeMap<u32, u64> = BTreeMap::new();
    specs
        .iter()
        .map(|(o, id, off, v, set, vals)| {
            let seq = *seqs.entry(*o).and_modify(|s| *s += 1).or_insert(1);
            let at = *ats
                .entry(*o)
                .and_modify(|a| *a += off)
                .or_insert(1000 + off);
            let mut columns = vec!["id".to_string()];
            let mut values = vec![Value::Int(*id)];
            for (i, n) in names_at(*v).iter().enumerate() {
                if set[i] {
                    columns.push(n.to_string());
                    values.push(vals[i].clone());
                }
            }
            let p = Patch {
                table: "t".into(),
                origin: *o,
                seq,
                at,
                columns: std::sync::Arc::new(columns),
                values,
            };
            (*v, p)
        })
        .collect()
}

/// Frames of consecutive patches of one version, cut at `cuts` too.
fn vframes(patches: &[(u32, Patch)], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < patches.len() {
        let v = patches[i].0;
        let mut b = FrameBuilder::new(99, v, None, 1 << 20);
        b.push(&patches[i].1);
        i += 1;
        while i < patches.len() && patches[i].0 == v && !cuts.contains(&i) {
            b.push(&patches[i].1);
            i += 1;
        }
        out.extend(b.finish());
    }
    out
}

fn vdump(e: &Engine) -> Vec<Vec<Value>> {
    e.query("SELECT id, a, bb, c, d FROM t ORDER BY id", &[], false)
        .unwrap()
        .1
}

/// Deliver `frames` to a fresh engine at v1, migrating to v2 and v3 at
/// `at2`/`at3` (fractions of the stream), bouncing down to v1 and back at
/// `bounce` when given, and ending at v3.
fn deliver(id: u32, frames: &[Vec<u8>], at2: usize, at3: usize, bounce: Option<usize>) -> Engine {
    let m = evolving();
    let mut e = Engine::open(Config {
        peer_id: Some(id),
        ..Config::default()
    })
    .unwrap();
    e.migrate(&m[..1]).unwrap();
    let n = frames.len();
    let (at2, at3) = (at2 % (n + 1), at3 % (n + 1));
    let (at2, at3) = (at2.min(at3), at2.max(at3));
    for (i, f) in frames.iter().enumerate() {
        if i == at2 {
            e.migrate(&m[..2]).unwrap();
        }
        if i == at3 {
            e.migrate(&m).unwrap();
        }
        if bounce.is_some_and(|b| b % (n + 1) == i) {
            e.migrate(&m[..1]).unwrap();
            e.migrate(&m).unwrap();
        }
        e.apply_frame(f).unwrap();
    }
    e.migrate(&m).unwrap();
    if bounce.is_some() {
        e.migrate(&m[..1]).unwrap();
        e.migrate(&m).unwrap();
    }
    assert_eq!(e.status().pending, 0);
    e
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    /// Patches written at three schema versions (a declared rename, an added
    /// column), explicit NULLs and partial patches, delivered in any order,
    /// duplicated and batched, to replicas that migrate (and go down and up
    /// again) in between: every replica ends equal to the LWW fold.
    #[test]
    fn merge_across_renames_and_added_columns(
        specs in proptest::collection::vec(vspec(), 1..25),
        seeds in any::<[u64; 2]>(),
        cuts in proptest::collection::vec(0usize..25, 0..5),
        dups in proptest::collection::vec(any::<usize>(), 0..4),
        moments in any::<[usize; 6]>(),
        bounce in any::<bool>(),
    ) {
        let patches = vbuild(&specs);
        // The fold: per row, per logical column (b and bb are one), the
        // value of the greatest stamp.
        let mut expect: BTreeMap<i64, [Option<Won>; 4]> = BTreeMap::new();
        for (_, p) in &patches {
            let Value::Int(id) = p.values[0] else { unreachable!() };
            let row = expect.entry(id).or_default();
            for (c, v) in p.columns.iter().zip(&p.values).skip(1) {
                let k = match c.as_str() { "a" => 0, "b" | "bb" => 1, "c" => 2, _ => 3 };
                let s = (p.at, p.origin, p.seq);
                if row[k].as_ref().is_none_or(|x| s >= x.0) {
                    row[k] = Some((s, v.clone()));
                }
            }
        }
        let want: Vec<Vec<Value>> = expect
            .iter()
            .map(|(id, cols)| {
                let mut r = vec![Value::Int(*id)];
                r.extend(cols.iter().map(|c| c.as_ref().map(|x| x.1.clone()).unwrap_or(Value::Null)));
                r
            })
            .collect();
        let mut dumps = Vec::new();
        for (n, seed) in seeds.iter().enumerate() {
            let mut shuffled = patches.clone();
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut fs = vframes(&shuffled, &cuts);
            for d in &dups {
                let f = fs[d % fs.len()].clone();
                fs.insert(d % (fs.len() + 1), f);
            }
            let m = &moments[n * 3..n * 3 + 3];
            let e = deliver(60 + n as u32, &fs, m[0], m[1], bounce.then_some(m[2]));
            let got = vdump(&e);
            prop_assert_eq!(&got, &want, "replica {}", n);
            // Every patch is stored as written (names as of v3), explicit
            // NULLs included, so it is served right to other peers.
            let t = &e.tables()["t"];
            for (_, p) in &patches {
                let stored = quilt::core::patches::read_patches(e.connection(), &mut quilt::core::runs::Runs::default(), t, p.origin, p.seq, p.seq, 1).unwrap();
                prop_assert_eq!(stored.len(), 1);
                let renamed: Vec<String> = p.columns.iter().map(|c| if c == "b" { "bb".into() } else { c.clone() }).collect();
                let mut want_cols: Vec<(String, Value)> = renamed.into_iter().zip(p.values.iter().cloned()).collect();
                want_cols.sort_by(|x, y| x.0.cmp(&y.0));
                let mut got_cols: Vec<(String, Value)> = stored[0].columns.iter().cloned().zip(stored[0].values.iter().cloned()).collect();
                got_cols.sort_by(|x, y| x.0.cmp(&y.0));
                prop_assert_eq!(got_cols, want_cols, "patch {}.{} on replica {}", p.origin, p.seq, n);
            }
            dumps.push(got);
        }
        prop_assert_eq!(&dumps[0], &dumps[1]);
    }
}
