//! `sync`'s pure parts on their own: digests, claims, the request plan,
//! silent claimers, "gone" handling (who may say it, and its cost).

use quilt::core::ranges::RangeSet;
use quilt::core::sync::*;
fn origin_with(held: &[(u64, u64)]) -> OriginState {
    let mut v = SeqVector::default();
    for &(a, b) in held {
        for s in a..=b {
            v.hold(7, s, 1000 + s);
        }
    }
    v.origins.remove(&7).unwrap_or_default()
}

#[test]
fn digests_are_order_free_and_invertible() {
    let mut a = SeqVector::default();
    let mut b = SeqVector::default();
    for s in 1..=50 {
        a.hold(3, s, 10 * s);
    }
    for s in (1..=50).rev() {
        b.hold(3, s, 10 * s);
    }
    assert_eq!(a.origins[&3].digest, b.origins[&3].digest);
    b.unhold(3, 20, 200);
    b.hold(3, 20, 201);
    assert_ne!(a.origins[&3].digest, b.origins[&3].digest);
    b.unhold(3, 20, 201);
    b.hold(3, 20, 200);
    assert_eq!(a.origins[&3].digest, b.origins[&3].digest);
}

#[test]
fn wanted_follows_claims_not_rumours() {
    let st = origin_with(&[(1, 5)]);
    let mut g = GapTracker::default();
    assert!(g.wanted(7, &st, 64).is_empty());
    g.note_claim(
        9,
        7,
        Claim {
            contiguous: 8,
            max: 8,
            ..Default::default()
        },
    );
    assert_eq!(g.wanted(7, &st, 64), vec![(6, 8)]);
    assert_eq!(g.holders(7, 6, &[9, 10]), vec![9]);
    // Re-issued ranges are wanted only as claimed, with no implied gaps.
    let mut shadows = RangeSet::new();
    shadows.insert(SHADOW_STEP + 3);
    g.note_claim(
        10,
        7,
        Claim {
            contiguous: 5,
            max: 5,
            shadows,
            ..Default::default()
        },
    );
    assert_eq!(
        g.wanted(7, &st, 64),
        vec![(6, 8), (SHADOW_STEP + 3, SHADOW_STEP + 3)]
    );
    g.forget_peer(9);
    assert_eq!(
        g.wanted(7, &st, 64),
        vec![(SHADOW_STEP + 3, SHADOW_STEP + 3)]
    );
}

#[test]
fn a_claimer_that_never_serves_loses_its_claim() {
    let st = origin_with(&[(1, 2)]);
    let mut g = GapTracker::default();
    g.note_claim(
        9,
        7,
        Claim {
            contiguous: 0,
            max: 1 << 40,
            ..Default::default()
        },
    );
    let mut tick = 0;
    let mut asks = 0;
    while !g.wanted(7, &st, 64).is_empty() {
        tick += 1;
        assert!(tick < 200, "claim never dropped");
        if g.plan(7, &st, tick, 0, &[9], None, false, 0, 64).is_some() {
            asks += 1;
        }
    }
    assert!(asks >= CLAIM_PATIENCE as usize);
}

#[test]
fn gone_counts_only_from_the_peer_asked_and_only_when_all_say_so() {
    let st = origin_with(&[(1, 2)]);
    let mut g = GapTracker::default();
    g.note_claim(
        8,
        7,
        Claim {
            contiguous: 10,
            max: 10,
            ..Default::default()
        },
    );
    g.note_claim(
        9,
        7,
        Claim {
            contiguous: 10,
            max: 10,
            ..Default::default()
        },
    );
    let ask = g.plan(7, &st, 1, 0, &[8, 9], Some(8), true, 0, 64).unwrap();
    assert_eq!(
        ask,
        Ask {
            target: 8,
            ranges: vec![(3, 10)]
        }
    );
    // From 9, not asked: ignored. Outside the range in flight: ignored.
    assert_eq!(
        g.on_gone(9, 7, &[(3, 10)], &st.held, &[8, 9]),
        GoneOutcome::Ignored
    );
    assert_eq!(
        g.on_gone(8, 7, &[(11, 20)], &st.held, &[8, 9]),
        GoneOutcome::Ignored
    );
    assert_eq!(
        g.on_gone(8, 7, &[(3, 10)], &st.held, &[8, 9]),
        GoneOutcome::AskOthers
    );
    let ask = g.plan(7, &st, 2, 0, &[8, 9], None, false, 0, 64).unwrap();
    assert_eq!(ask.target, 9, "the next holder is asked");
    assert_eq!(
        g.on_gone(9, 7, &[(3, 10)], &st.held, &[8, 9]),
        GoneOutcome::Gone(vec![(3, 10)])
    );
    assert!(g.wanted(7, &st, 64).is_empty());
}

#[test]
fn gone_is_linear_in_the_message() {
    let mut held = RangeSet::new();
    for i in 0..100_000u64 {
        held.insert(i * 3 + 1);
    }
    let st = OriginState {
        held,
        ..Default::default()
    };
    let mut g = GapTracker::default();
    g.note_claim(
        8,
        7,
        Claim {
            contiguous: 1,
            max: 300_000,
            ..Default::default()
        },
    );
    let _ = g.plan(7, &st, 1, 0, &[8], Some(8), true, 0, 64);
    let ranges: Vec<(u64, u64)> = (0..1000u64).map(|i| (i * 3 + 2, i * 3 + 3)).collect();
    let t = std::time::Instant::now();
    let _ = g.on_gone(8, 7, &ranges, &st.held, &[8]);
    assert!(t.elapsed().as_millis() < 50, "{:?}", t.elapsed());
}

#[test]
fn gone_ranges_never_push_a_request_past_its_cap() {
    // Found by the control fuzzer: gaps capped, then cut by gone ranges into
    // more pieces than one request may carry.
    let st = origin_with(&[(1, 1)]);
    let mut g = GapTracker::default();
    g.note_claim(
        8,
        7,
        Claim {
            contiguous: 100_000,
            max: 100_000,
            ..Default::default()
        },
    );
    let _ = g.plan(7, &st, 1, 0, &[8], Some(8), true, 0, 64);
    let ranges: Vec<(u64, u64)> = (0..5000u64).map(|i| (i * 20 + 3, i * 20 + 12)).collect();
    let _ = g.on_gone(8, 7, &ranges, &st.held, &[8]);
    assert!(g.wanted(7, &st, 64).len() <= 64);
    let ask = g.plan(7, &st, 5, 0, &[8], None, false, 0, 64);
    assert!(ask.is_none_or(|a| a.ranges.len() <= 64));
}

#[test]
fn holding_many_is_holding_each_and_nothing_adds_no_origin() {
    let mut each = SeqVector::default();
    let mut many = SeqVector::default();
    let held = [(1u64, 10u64), (2, 11), (4, 12)];
    for &(seq, at) in &held {
        each.hold(3, seq, at);
    }
    many.hold_all(3, held);
    assert_eq!(each.ping_vector(), many.ping_vector());
    assert_eq!(each.origins[&3].digest, many.origins[&3].digest);
    assert!((1..=5).all(|s| each.holds(3, s) == many.holds(3, s)));
    many.hold_all(9, []);
    assert!(!many.origins.contains_key(&9));
}
