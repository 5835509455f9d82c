//! Sequence vectors and gap tracking. Per origin peer we keep the set of
//! sequence numbers held as disjoint inclusive intervals (O(gaps), not
//! O(patches)), the highest seq seen anywhere (from patches and pings), the
//! ranges answered "gone", and request backoff counted in heartbeats.

use std::collections::{BTreeMap, HashMap};

/// Disjoint, non-adjacent inclusive intervals of u64.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `[a, b]`, merging with neighbours.
    pub fn insert_range(&mut self, mut a: u64, mut b: u64) {
        if b < a {
            return;
        }
        // Merge with a range that starts before a and reaches a-1 or beyond.
        if let Some((&s, &e)) = self.ranges.range(..=a).next_back() {
            if e.saturating_add(1) >= a {
                if e >= b {
                    return;
                }
                a = s;
                self.ranges.remove(&s);
            }
        }
        // Swallow ranges that start inside [a, b+1].
        loop {
            let next = self
                .ranges
                .range(a..=b.saturating_add(1))
                .next()
                .map(|(&s, &e)| (s, e));
            match next {
                Some((s, e)) => {
                    self.ranges.remove(&s);
                    b = b.max(e);
                }
                None => break,
            }
        }
        self.ranges.insert(a, b);
    }

    pub fn insert(&mut self, x: u64) {
        self.insert_range(x, x)
    }

    pub fn contains(&self, x: u64) -> bool {
        matches!(self.ranges.range(..=x).next_back(), Some((_, &e)) if e >= x)
    }

    /// Highest `n` such that `1..=n` are all held (0 when 1 is missing).
    pub fn contiguous(&self) -> u64 {
        match self.ranges.iter().next() {
            Some((&1, &e)) => e,
            _ => 0,
        }
    }

    /// Highest member, 0 when empty.
    pub fn max(&self) -> u64 {
        self.ranges.iter().next_back().map(|(_, &e)| e).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&a, &b)| (a, b))
    }

    /// Missing intervals within `1..=upto`, at most `limit` of them.
    pub fn gaps(&self, upto: u64, limit: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut next = 1u64;
        for (&s, &e) in &self.ranges {
            if s > upto || out.len() >= limit {
                break;
            }
            if s > next {
                out.push((next, s - 1));
            }
            next = e.saturating_add(1);
        }
        if next <= upto && out.len() < limit {
            out.push((next, upto));
        }
        out
    }

    /// Count of members of `1..=upto` not held.
    pub fn missing_count(&self, upto: u64) -> u64 {
        self.gaps(upto, usize::MAX)
            .iter()
            .map(|(a, b)| b - a + 1)
            .sum()
    }

    /// Remove the members of `other` from the gaps listed.
    pub fn subtract_from(&self, ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for (a, b) in ranges {
            let mut cur = a;
            for (s, e) in self.iter() {
                if e < cur {
                    continue;
                }
                if s > b {
                    break;
                }
                if s > cur {
                    out.push((cur, s - 1));
                }
                cur = e.saturating_add(1);
                if cur > b {
                    break;
                }
            }
            if cur <= b {
                out.push((cur, b));
            }
        }
        out
    }
}

/// What this peer knows of one origin's stream.
#[derive(Debug, Clone, Default)]
pub struct OriginState {
    /// Seqs held (stored and applied, or purged after being held).
    pub held: RangeSet,
    /// Highest seq known to exist.
    pub max_seen: u64,
    /// Ranges peers answered as purged: not asked for again.
    pub gone: RangeSet,
    /// Heartbeat at which the current gaps were first seen (None: no gap).
    pub gap_since: Option<u64>,
    /// Wall-clock ms when the current gaps were first seen (for lag).
    pub gap_since_ms: Option<u64>,
    /// Heartbeat before which no request is repeated.
    pub next_request: u64,
    /// Requests sent since the last progress (drives backoff and rotation).
    pub attempts: u32,
    /// Contiguous seq at the last request, to detect progress.
    pub last_contiguous: u64,
    /// Ranges asked for and not yet timed out (not asked again eagerly).
    pub inflight: RangeSet,
}

impl OriginState {
    /// Gaps that still need asking for (holes plus a lost tail, minus gone).
    pub fn wanted(&self, limit: usize) -> Vec<(u64, u64)> {
        let g = self.held.gaps(self.max_seen, limit);
        if self.gone.is_empty() {
            g
        } else {
            self.gone.subtract_from(g)
        }
    }
}

/// All origins' sequence state.
#[derive(Debug, Clone, Default)]
pub struct SeqVector {
    pub origins: HashMap<u32, OriginState>,
}

impl SeqVector {
    pub fn origin(&mut self, id: u32) -> &mut OriginState {
        self.origins.entry(id).or_default()
    }

    pub fn holds(&self, origin: u32, seq: u64) -> bool {
        self.origins
            .get(&origin)
            .is_some_and(|o| o.held.contains(seq))
    }

    pub fn contiguous(&self, origin: u32) -> u64 {
        self.origins.get(&origin).map_or(0, |o| o.held.contiguous())
    }

    /// Record a held seq.
    pub fn hold(&mut self, origin: u32, seq: u64) {
        let o = self.origin(origin);
        o.held.insert(seq);
        o.max_seen = o.max_seen.max(seq);
    }

    /// `(origin, contiguous, max_seen)` for every origin, for a ping.
    pub fn ping_vector(&self) -> Vec<(u32, u64, u64)> {
        let mut v: Vec<_> = self
            .origins
            .iter()
            .map(|(&id, o)| (id, o.held.contiguous(), o.max_seen.max(o.held.max())))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Backoff in heartbeats after `attempts` unanswered requests: 1, 2, 4, 4...
pub fn backoff_ticks(attempts: u32) -> u64 {
    1u64 << attempts.min(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_merge_and_gaps() {
        let mut r = RangeSet::new();
        for x in [1, 2, 3, 5, 7, 8, 4] {
            r.insert(x);
        }
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(1, 5), (7, 8)]);
        assert_eq!(r.contiguous(), 5);
        assert_eq!(r.gaps(10, 10), vec![(6, 6), (9, 10)]);
        assert_eq!(r.missing_count(10), 3);
        r.insert_range(6, 6);
        assert_eq!(r.contiguous(), 8);
        let mut g = RangeSet::new();
        g.insert_range(2, 3);
        assert_eq!(g.subtract_from(vec![(1, 5)]), vec![(1, 1), (4, 5)]);
    }

    proptest! {
        #[test]
        fn rangeset_matches_a_plain_set(xs in proptest::collection::vec((1u64..200, 0u64..5), 0..80)) {
            let mut r = RangeSet::new();
            let mut s = std::collections::BTreeSet::new();
            for (a, len) in xs {
                r.insert_range(a, a + len);
                for x in a..=a + len { s.insert(x); }
            }
            for x in 0..210 { prop_assert_eq!(r.contains(x), s.contains(&x)); }
            let missing = (1..=210).filter(|x| !s.contains(x)).count() as u64;
            prop_assert_eq!(r.missing_count(210), missing);
            let mut c = 0; while s.contains(&(c + 1)) { c += 1; }
            prop_assert_eq!(r.contiguous(), c);
            // intervals stay disjoint and non-adjacent
            let v: Vec<_> = r.iter().collect();
            for w in v.windows(2) { prop_assert!(w[0].1 + 1 < w[1].0); }
        }
    }
}
