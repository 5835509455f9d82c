//! Identity clashes: two different patches with one `(origin, seq)`.
//!
//! They happen when a peer's file goes back to an older copy (a restore, a
//! VM snapshot, a lost WAL tail) and it writes again, or when two files run
//! with one peer id. Patches are told apart by their HLC stamp (each open
//! salts its clock, so two files writing in the same millisecond still
//! differ). Every version is kept: for one base seq `s`, the versions are
//! ordered by stamp and the `k`-th lives at `s + k * 2^50` (level `k`).
//! That order depends only on the set of versions, so every peer that sees
//! them all places them alike, whatever the order they arrived in; digests
//! in pings find peers that hold the same seqs with different contents.

use super::replication::Stored;
use super::*;
use crate::core::sync::{level, MAX_LEVEL};

impl Engine {
    /// True when a patch at `seq` may meet other versions of its base seq.
    pub(super) fn has_versions(&self, origin: u32, seq: u64) -> bool {
        if level(seq) > 0 {
            return true;
        }
        let Some(o) = self.vector.origins.get(&origin) else {
            return false;
        };
        // Nearly always: no re-issued version of this origin at all.
        if o.held.max() < SHADOW_STEP {
            return false;
        }
        (1..=MAX_LEVEL).any(|k| o.held.contains(seq + k * SHADOW_STEP))
    }

    /// The stamp of the version stored at `(origin, seq)` in a patch table.
    pub(super) fn table_version_at(&self, origin: u32, seq: i64) -> Result<Option<u64>> {
        for t in self.tables.values() {
            if let Some(at) = patches::stored_at(
                &self.conn,
                &mut self.runs.borrow_mut(),
                t,
                origin,
                seq as u64,
            )? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    /// The stamp of the version stored at `(origin, seq)`, if any.
    fn version_at(&self, origin: u32, seq: u64) -> Result<Option<u64>> {
        match self.table_version_at(origin, seq as i64)? {
            Some(at) => Ok(Some(at)),
            None => store::kept_at(&self.conn, origin, seq as i64),
        }
    }

    /// Decide the seq an incoming version `(origin, seq, at)` is stored at,
    /// moving stored versions when the order requires it. `None`: the same
    /// version is already stored (a duplicate), or there is no level left.
    pub(super) fn place_version(
        &self,
        origin: u32,
        seq: u64,
        at: u64,
        st: &mut Stored,
    ) -> Result<Option<u64>> {
        let base = seq % SHADOW_STEP;
        let given = level(seq);
        let mut occupied: Vec<(u64, u64)> = Vec::new();
        for k in 0..=MAX_LEVEL {
            if let Some(a) = self.version_at(origin, base + k * SHADOW_STEP)? {
                occupied.push((k, a));
            }
        }
        // Would a version stamped `at` at level `given` keep the order of
        // the others (all but level `skip`)?
        let in_order = |skip: Option<u64>| {
            occupied
                .iter()
                .filter(|&&(l, _)| Some(l) != skip)
                .all(|&(l, a)| (l < given && a < at) || (l > given && a > at))
        };
        if let Some(&(k, _)) = occupied.iter().find(|&&(_, a)| a == at) {
            // The same version. A sender that places it higher knows of
            // versions below it that we lack: follow it, and the level
            // left free is fetched like any gap.
            if given > k && in_order(Some(k)) {
                let from = base + k * SHADOW_STEP;
                self.move_version(origin, at, from as i64, seq as i64, Some(from))?;
                st.moves.push((origin, from, seq, at));
            }
            return Ok(None);
        }
        let free = !occupied.iter().any(|(k, _)| *k == given);
        if free && in_order(None) {
            return Ok(Some(seq));
        }
        // Versions in stamp order: the k-th goes to level k.
        let mut all: Vec<(u64, Option<u64>)> =
            occupied.iter().map(|&(k, a)| (a, Some(k))).collect();
        all.push((at, None));
        all.sort_unstable();
        if all.len() as u64 > MAX_LEVEL + 1 {
            st.events.push(Event::Error {
                code: "E_SEQ",
                message: format!(
                    "more than {} versions of patch {origin}.{base} exist; this one (stamp {at}) is refused. Several files use peerId {origin}: stop all but one",
                    MAX_LEVEL + 1
                ),
            });
            return Ok(None);
        }
        let moves: Vec<(u64, u64, u64)> = all
            .iter()
            .enumerate()
            .filter_map(|(i, &(a, l))| {
                l.filter(|&k| k != i as u64)
                    .map(|k| (base + k * SHADOW_STEP, base + i as u64 * SHADOW_STEP, a))
            })
            .collect();
        // Two steps through negative seqs, so no move lands on a version
        // that has not moved away yet.
        for &(from, to, a) in &moves {
            self.move_version(origin, a, from as i64, -(to as i64), None)?;
        }
        for &(from, to, a) in &moves {
            self.move_version(origin, a, -(to as i64), to as i64, Some(from))?;
            st.moves.push((origin, from, to, a));
        }
        st.clashes.push((origin, base));
        let mine = all.iter().position(|&(_, l)| l.is_none()).unwrap_or(0) as u64;
        Ok(Some(base + mine * SHADOW_STEP))
    }

    /// Move the stored version stamped `at` to another seq in every table
    /// and the kept table; with `stamped_as`, the seq its stamp had when it
    /// won clock rows, rename that stamp there to `to`.
    fn move_version(
        &self,
        origin: u32,
        at: u64,
        from: i64,
        to: i64,
        stamped_as: Option<u64>,
    ) -> Result<()> {
        let stamp = |seq: u64| Stamp {
            at,
            peer: origin,
            seq,
        };
        for t in self.tables.values() {
            let moved =
                patches::move_patch(&self.conn, &mut self.runs.borrow_mut(), t, origin, from, to)?;
            if let Some(pk) = moved {
                if let Some(old) = stamped_as {
                    store::rename_stamp(&self.conn, t, &pk, stamp(old), stamp(to as u64))?;
                }
            }
        }
        store::move_kept(&self.conn, origin, from, to)
    }

    /// A peer holds the same seqs of `origin` as we do but its digest
    /// differs: some seq holds another version there. Ask it for the
    /// unpurged part once in a while; its answers meet ours as duplicates
    /// and settle where each version belongs.
    pub(super) fn maybe_verify(&mut self, peer: u32, origin: u32) {
        let Some(claim) = self.gaps.claims.get(&peer).and_then(|m| m.get(&origin)) else {
            return;
        };
        let Some(digest) = claim.digest else {
            return;
        };
        let Some(st) = self.vector.origins.get(&origin) else {
            return;
        };
        let same_set = claim.contiguous == claim.max
            && st.held.contiguous().min(SHADOW_STEP - 1) == claim.contiguous
            && st.regular_max() == claim.max
            && claim.shadows.iter().collect::<Vec<_>>()
                == st.shadows(crate::core::sync::MAX_SHADOW_RANGES);
        if !same_set || claim.max == 0 {
            return;
        }
        if digest == st.digest {
            self.verify_after.remove(&(peer, origin));
            return;
        }
        let (due, every) = self
            .verify_after
            .get(&(peer, origin))
            .copied()
            .unwrap_or((0, 1));
        if self.tick_no < due || !self.peers.get(&peer).is_some_and(|p| p.connected) {
            return;
        }
        // Backoff while the mismatch lasts: 1, 2, 4 ... VERIFY_EVERY ticks.
        self.verify_after.insert(
            (peer, origin),
            (self.tick_no + every, (every * 2).min(VERIFY_EVERY)),
        );
        let from = self.purged.get(&origin).copied().unwrap_or(0) + 1;
        if from > claim.max {
            return;
        }
        let mut ranges = vec![(from, claim.max)];
        ranges.extend(st.shadows(crate::core::sync::MAX_SHADOW_RANGES));
        self.verify_queue.push((peer, Ranges { origin, ranges }));
    }
}
