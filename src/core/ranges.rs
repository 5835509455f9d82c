//! Sets of sequence numbers as disjoint inclusive intervals: O(gaps), not
//! O(patches). Held seqs, ranges in flight, gone ranges and re-issued
//! ranges are all `RangeSet`s.

use std::collections::BTreeMap;

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

    /// Remove one member.
    pub fn remove(&mut self, x: u64) {
        let Some((&s, &e)) = self.ranges.range(..=x).next_back() else {
            return;
        };
        if e < x {
            return;
        }
        self.ranges.remove(&s);
        if s < x {
            self.ranges.insert(s, x - 1);
        }
        if x < e {
            self.ranges.insert(x + 1, e);
        }
    }

    /// True when every member of `[a, b]` is held. O(log n).
    pub fn covers(&self, a: u64, b: u64) -> bool {
        matches!(self.ranges.range(..=a).next_back(), Some((_, &e)) if e >= b)
    }

    /// Highest member below `bound`, 0 when none.
    pub fn max_below(&self, bound: u64) -> u64 {
        match self.ranges.range(..bound).next_back() {
            Some((_, &e)) => e.min(bound - 1),
            None => 0,
        }
    }

    /// Ranges (clipped) at or above `from`, at most `limit`.
    pub fn ranges_from(&self, from: u64, limit: usize) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if let Some((_, &e)) = self.ranges.range(..from).next_back() {
            if e >= from {
                out.push((from, e));
            }
        }
        for (&s, &e) in self.ranges.range(from..) {
            if out.len() >= limit {
                break;
            }
            out.push((s, e));
        }
        out.truncate(limit);
        out
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
