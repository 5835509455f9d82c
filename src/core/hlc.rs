//! Hybrid logical clock with the 53-bit encoding of API.md:
//! `(unix_ms - 1735689600000) * 8192 + counter`. One clock per replicator
//! (not per module, the replic-sqlite trap), never going backwards, persisted
//! by the caller so a restart continues above the last value.

/// Milliseconds of 2025-01-01T00:00:00Z, the zero of the encoding.
pub const EPOCH_MS: u64 = 1_735_689_600_000;
/// Bits of the logical counter.
pub const COUNTER_BITS: u32 = 13;
/// Largest value that still fits a JS number exactly.
pub const MAX_HLC: u64 = (1u64 << 53) - 1;

/// Current wall clock in unix milliseconds.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The physical part of an HLC value, in unix milliseconds.
pub fn to_unix_ms(hlc: u64) -> u64 {
    (hlc >> COUNTER_BITS) + EPOCH_MS
}

/// The smallest HLC value for a unix millisecond.
pub fn from_unix_ms(ms: u64) -> u64 {
    (ms.saturating_sub(EPOCH_MS) << COUNTER_BITS).min(MAX_HLC)
}

/// A monotonic hybrid logical clock.
#[derive(Debug, Clone, Default)]
pub struct Hlc {
    last: u64,
    /// Where this clock's counter starts in each new millisecond (random per
    /// open, < 4096): two files that share a peer id and write in the same
    /// millisecond still get different stamps, which is how their clash is
    /// found.
    salt: u64,
}

impl Hlc {
    /// A clock that continues above `last` (the persisted high-water mark).
    pub fn new(last: u64) -> Self {
        Hlc { last, salt: 0 }
    }

    /// A clock whose counter starts at `salt % 4096` in each millisecond.
    pub fn with_salt(last: u64, salt: u64) -> Self {
        Hlc {
            last,
            salt: salt % (1 << (COUNTER_BITS - 1)),
        }
    }

    /// The highest value handed out or observed.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next stamp for a local event at wall time `wall_ms`. Strictly
    /// greater than every earlier stamp and every observed remote stamp, even
    /// when the wall clock goes backwards.
    pub fn tick(&mut self, wall_ms: u64) -> u64 {
        let phys = from_unix_ms(wall_ms).saturating_add(self.salt);
        let next = if phys > self.last {
            phys
        } else {
            self.last + 1
        };
        self.last = next.min(MAX_HLC);
        self.last
    }

    /// Take in a remote stamp (already checked against the drift bound), so
    /// local stamps stay above it.
    pub fn observe(&mut self, remote: u64) {
        if remote > self.last {
            self.last = remote.min(MAX_HLC);
        }
    }

    /// True when `remote` is at most `max_drift_ms` ahead of `wall_ms`.
    pub fn within_drift(remote: u64, wall_ms: u64, max_drift_ms: u64) -> bool {
        remote <= from_unix_ms(wall_ms.saturating_add(max_drift_ms)) | ((1 << COUNTER_BITS) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_matches_contract() {
        let ms = EPOCH_MS + 1000;
        assert_eq!(from_unix_ms(ms), 1000 * 8192);
        assert_eq!(to_unix_ms(1000 * 8192 + 5), ms);
    }

    #[test]
    fn monotonic_when_wall_clock_goes_back() {
        let mut c = Hlc::new(0);
        let a = c.tick(EPOCH_MS + 10_000);
        let b = c.tick(EPOCH_MS + 5_000);
        let d = c.tick(EPOCH_MS + 5_000);
        assert!(b > a && d > b);
        assert_eq!(to_unix_ms(d), EPOCH_MS + 10_000);
    }

    #[test]
    fn observe_keeps_local_above_remote() {
        let mut c = Hlc::new(0);
        let remote = from_unix_ms(EPOCH_MS + 50_000) + 7;
        c.observe(remote);
        assert!(c.tick(EPOCH_MS + 1) > remote);
    }

    #[test]
    fn restart_continues_above_persisted() {
        let mut c = Hlc::new(0);
        let a = c.tick(EPOCH_MS + 99_999);
        let mut c2 = Hlc::new(a);
        assert!(c2.tick(EPOCH_MS) > a);
    }

    #[test]
    fn drift_bound() {
        let now = EPOCH_MS + 100_000;
        assert!(Hlc::within_drift(from_unix_ms(now + 59_000), now, 60_000));
        assert!(!Hlc::within_drift(from_unix_ms(now + 61_000), now, 60_000));
    }
}
