//! Unit tests of the run map (`mod.rs`) and its deferred tails (`tail.rs`).

use super::*;

/// A run map and the patches table of table `t`.
fn db() -> Connection {
    let c = Connection::open_in_memory().unwrap();
    ensure(&c).unwrap();
    c.execute_batch("CREATE TABLE t_patches(_peerId, _sequenceId)")
        .unwrap();
    c
}

#[test]
fn consecutive_rows_make_one_run_and_gaps_split() {
    let c = db();
    let t: Arc<str> = Arc::from("t");
    let mut r = Runs::default();
    for s in 1..=5 {
        r.note(&t, 7, s, 100 + s as i64);
    }
    r.note(&t, 9, 1, 106);
    r.note(&t, 7, 6, 107);
    r.flush(&c).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM _quilt_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(r.find(&c, "t", 7, 3).unwrap(), Some(103));
    assert_eq!(r.find(&c, "t", 7, 6).unwrap(), Some(107));
    assert_eq!(r.find(&c, "t", 7, 7).unwrap(), None);
    let spans = r.spans(&c, "t", 7, 2, 6).unwrap();
    assert_eq!(
        spans,
        vec![
            Span {
                seq: 2,
                a: 102,
                b: 105
            },
            Span {
                seq: 6,
                a: 107,
                b: 107
            }
        ]
    );
    // The next commit continues the run in place.
    r.note(&t, 7, 7, 108);
    r.flush(&c).unwrap();
    assert_eq!(r.find(&c, "t", 7, 7).unwrap(), Some(108));
    r.remove(&c, "t", 7, 3).unwrap();
    assert_eq!(r.find(&c, "t", 7, 3).unwrap(), None);
    assert_eq!(r.find(&c, "t", 7, 4).unwrap(), Some(104));
    assert_eq!(r.find(&c, "t", 7, 2).unwrap(), Some(102));
    r.remove_upto(&c, "t", 7, 4).unwrap();
    assert_eq!(r.find(&c, "t", 7, 4).unwrap(), None);
    assert_eq!(r.find(&c, "t", 7, 5).unwrap(), Some(105));
    assert_eq!(r.first(&c, "t", 7).unwrap().map(|r| r.seq0), Some(5));
}

#[test]
fn rebuild_matches_incremental() {
    let c = db();
    let t: Arc<str> = Arc::from("t");
    let mut r = Runs::default();
    let mut seqs = HashMap::new();
    for i in 0..200u64 {
        let o = [1u32, 2, 2, 3][(i % 4) as usize] + (i / 50) as u32 % 2;
        let s = seqs.entry(o).or_insert(0u64);
        *s += 1;
        c.execute(
            "INSERT INTO t_patches VALUES(?,?)",
            rusqlite::params![o, *s as i64],
        )
        .unwrap();
        r.note(&t, o, *s, c.last_insert_rowid());
        if i % 7 == 0 {
            r.flush(&c).unwrap();
        }
    }
    r.flush(&c).unwrap();
    let dump = |c: &Connection| -> Vec<(i64, i64, i64, i64)> {
        let mut st = c
            .prepare("SELECT origin, seq0, rowid0, n FROM _quilt_runs ORDER BY 1, 2")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(|x| x.unwrap())
            .collect()
    };
    r.flush_all(&c).unwrap();
    let inc = dump(&c);
    r.rebuild(&c, "t", "t_patches").unwrap();
    assert_eq!(dump(&c), inc);
}

/// Rows of one table, written by a few origins in transactions that
/// commit, roll back whole or in part, with reopens (a fresh `Runs`)
/// and heartbeats (`flush_all`) in between: after every step each row
/// is found where it is, and nothing else is found.
#[test]
fn deferred_tails_survive_rollbacks_and_reopens() {
    for seed in 1..=40u64 {
        let c = db();
        let t: Arc<str> = Arc::from("t");
        let mut r = Runs::default();
        let mut next = [1u64; 3];
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let insert = |c: &Connection, r: &mut Runs, next: &mut [u64; 3], o: usize, gap: bool| {
            if gap {
                next[o] += 2;
            }
            c.execute(
                "INSERT INTO t_patches VALUES(?1, ?2)",
                rusqlite::params![o as i64 + 1, next[o] as i64],
            )
            .unwrap();
            r.note(&t, o as u32 + 1, next[o], c.last_insert_rowid());
            next[o] += 1;
        };
        for step in 0..60 {
            let o = if rnd(4) == 0 { rnd(3) as usize } else { 0 };
            let k = 1 + rnd(3);
            match rnd(10) {
                0 => r = Runs::default(),
                1 => r.flush_all(&c).unwrap(),
                2 => {
                    // A transaction that rolls back after its flush.
                    let saved = next;
                    c.execute_batch("BEGIN").unwrap();
                    for _ in 0..k {
                        insert(&c, &mut r, &mut next, o, false);
                    }
                    r.flush(&c).unwrap();
                    c.execute_batch("ROLLBACK").unwrap();
                    r.discard();
                    next = saved;
                }
                3 => {
                    // Part of a transaction rolled back to a savepoint.
                    c.execute_batch("BEGIN").unwrap();
                    insert(&c, &mut r, &mut next, o, false);
                    let mark = r.pending_len();
                    let saved = next;
                    c.execute_batch("SAVEPOINT s").unwrap();
                    for _ in 0..k {
                        insert(&c, &mut r, &mut next, o, false);
                    }
                    c.execute_batch("ROLLBACK TO s; RELEASE s").unwrap();
                    r.rollback_to(mark);
                    next = saved;
                    r.flush(&c).unwrap();
                    c.execute_batch("COMMIT").unwrap();
                }
                _ => {
                    c.execute_batch("BEGIN").unwrap();
                    for i in 0..k {
                        insert(&c, &mut r, &mut next, o, i == 0 && rnd(8) == 0);
                    }
                    r.flush(&c).unwrap();
                    c.execute_batch("COMMIT").unwrap();
                }
            }
            let rows: Vec<(i64, i64, i64)> = c
                .prepare("SELECT rowid, _peerId, _sequenceId FROM t_patches")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(|x| x.unwrap())
                .collect();
            for (rowid, o, s) in rows {
                assert_eq!(
                    r.find(&c, "t", o as u32, s as u64).unwrap(),
                    Some(rowid),
                    "seed {seed} step {step}: origin {o} seq {s}"
                );
            }
            for (o, n) in next.iter().enumerate() {
                assert_eq!(r.find(&c, "t", o as u32 + 1, *n).unwrap(), None);
            }
        }
    }
}

#[test]
fn a_growing_run_is_written_every_defer_max_rows() {
    let c = db();
    let t: Arc<str> = Arc::from("t");
    let mut r = Runs::default();
    let disk_n = |c: &Connection| -> i64 {
        c.query_row("SELECT max(n) FROM _quilt_runs", [], |r| r.get(0))
            .unwrap_or(0)
    };
    let mut writes = 0;
    let mut last = 0;
    for s in 1..=(3 * DEFER_MAX + 5) {
        c.execute("INSERT INTO t_patches VALUES(7, ?1)", [s as i64])
            .unwrap();
        r.note(&t, 7, s, c.last_insert_rowid());
        r.flush(&c).unwrap();
        let n = disk_n(&c);
        if n != last {
            writes += 1;
            last = n;
        }
        assert!(s - n as u64 <= DEFER_MAX, "{s} rows, {n} written");
    }
    // One write to start the run, then one per DEFER_MAX rows.
    assert_eq!(writes, 4);
    // Another origin's row: the grown run is written first.
    c.execute("INSERT INTO t_patches VALUES(8, 1)", []).unwrap();
    r.note(&t, 8, 1, c.last_insert_rowid());
    r.flush(&c).unwrap();
    assert_eq!(disk_n(&c) as u64, 3 * DEFER_MAX + 5);
}

/// A rebuild inside a savepoint (a read that found a stale run) must not
/// shift the savepoint's mark: rolling back to it still forgets exactly
/// the rows noted after it, in every table.
#[test]
fn a_rebuild_inside_a_savepoint_keeps_its_mark() {
    let c = db();
    c.execute_batch("CREATE TABLE u_patches(_peerId, _sequenceId)")
        .unwrap();
    let (t, u): (Arc<str>, Arc<str>) = (Arc::from("t"), Arc::from("u"));
    let mut r = Runs::default();
    let ins = |c: &Connection, r: &mut Runs, tbl: &Arc<str>, o: u32, s: u64| {
        c.execute(
            &format!("INSERT INTO {tbl}_patches VALUES(?,?)"),
            rusqlite::params![o, s as i64],
        )
        .unwrap();
        r.note(tbl, o, s, c.last_insert_rowid());
    };
    c.execute_batch("BEGIN").unwrap();
    for s in 1..=3 {
        ins(&c, &mut r, &t, 1, s);
    }
    let mark = r.pending_len();
    c.execute_batch("SAVEPOINT sp").unwrap();
    ins(&c, &mut r, &u, 2, 1);
    ins(&c, &mut r, &u, 2, 2);
    r.rebuild(&c, "t", "t_patches").unwrap();
    c.execute_batch("ROLLBACK TO sp; RELEASE sp").unwrap();
    r.rollback_to(mark);
    // Rows of another origin now take the rolled-back rowids.
    ins(&c, &mut r, &u, 5, 1);
    ins(&c, &mut r, &u, 5, 2);
    r.flush(&c).unwrap();
    c.execute_batch("COMMIT").unwrap();
    for s in 1..=3 {
        assert_eq!(r.find(&c, "t", 1, s).unwrap(), Some(s as i64), "t seq {s}");
    }
    assert_eq!(r.find(&c, "u", 2, 1).unwrap(), None, "rolled back");
    assert_eq!(r.find(&c, "u", 2, 2).unwrap(), None, "rolled back");
    assert_eq!(r.find(&c, "u", 5, 1).unwrap(), Some(1));
    assert_eq!(r.find(&c, "u", 5, 2).unwrap(), Some(2));
    // And the same from disk alone.
    let mut fresh = Runs::default();
    for s in 1..=3 {
        assert_eq!(fresh.find(&c, "t", 1, s).unwrap(), Some(s as i64));
    }
    assert_eq!(fresh.find(&c, "u", 2, 1).unwrap(), None);
    assert_eq!(fresh.find(&c, "u", 5, 2).unwrap(), Some(2));
}
