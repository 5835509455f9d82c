//! Atomic groups: the patches of one local transaction (or `upsertMany`)
//! are applied on every peer all or none.
//!
//! A commit of more than one patch records the group `(origin, first,
//! last)` (`core/groups.rs`), and every frame carrying one of its patches
//! carries the group. A receiver that would hold only part of a group after a
//! frame (the rest lost, reordered or still in flight) stores that part in
//! `_quilt_kept` unapplied and lists the group as waiting; the part counts
//! as held, so it is not asked for again and can be served. The frame that
//! completes a group applies the waiting part in its own transaction, so no
//! reader ever sees half of it. Retention never purges into a waiting
//! group. Atomics are served with retransmissions, so a third peer learns them
//! from whoever repairs its gap.

use super::replication::Stored;
use super::txn::Change;
use super::*;
use crate::core::atomic::{self, Atomic};

/// Most patches one commit may hold and still travel as an atomic group.
pub const MAX_ATOMIC: u64 = 16_384;

impl Engine {
    /// The groups of `body` this peer would hold only in part after storing
    /// it: their patches in this frame wait instead of being applied.
    pub(super) fn atomic_to_hold(&self, body: &Body) -> Vec<Atomic> {
        if body.atomic.is_empty() {
            return Vec::new();
        }
        let mut in_frame: HashMap<u32, RangeSet> = HashMap::new();
        for g in &body.groups {
            if !body.atomic.iter().any(|u| u.0 == g.origin) {
                continue;
            }
            let set = in_frame.entry(g.origin).or_default();
            let mut seq = 0i64;
            for r in &g.rows {
                seq = seq.wrapping_add(r.1);
                set.insert(seq as u64);
            }
        }
        let empty = RangeSet::new();
        body.atomic
            .iter()
            .copied()
            .filter(|&(o, a, b)| {
                // Over the cap (an older or forged sender): applied as it comes.
                if b - a >= MAX_ATOMIC {
                    return false;
                }
                let missing = match self.vector.origins.get(&o) {
                    Some(st) => st.held.subtract_from(vec![(a, b)]),
                    None => vec![(a, b)],
                };
                !in_frame
                    .get(&o)
                    .unwrap_or(&empty)
                    .subtract_from(missing)
                    .is_empty()
            })
            .collect()
    }

    /// Inside the frame's transaction, after its patches are stored:
    /// remember its groups, list the ones held in part, and apply every
    /// waiting group this frame completed. Returns the waiting list to keep
    /// once the transaction commits, and whether a group was applied.
    pub(super) fn settle_atomic(
        &mut self,
        body: &Body,
        st: &Stored,
    ) -> Result<(Vec<Atomic>, bool, Vec<Change>)> {
        for &u in &body.atomic {
            atomic::record(&self.conn, u)?;
        }
        let mut waiting = self.waiting.clone();
        for &u in &st.hold {
            if !waiting.contains(&u) {
                atomic::add_waiting(&self.conn, u)?;
                waiting.push(u);
            }
        }
        let mut now: HashMap<u32, RangeSet> = HashMap::new();
        for &(o, s, _) in &st.held {
            now.entry(o).or_default().insert(s);
        }
        let empty = RangeSet::new();
        let mut applied = false;
        let mut changes = Vec::new();
        let mut still = Vec::with_capacity(waiting.len());
        for u in waiting {
            let (o, a, b) = u;
            let missing = match self.vector.origins.get(&o) {
                Some(v) => v.held.subtract_from(vec![(a, b)]),
                None => vec![(a, b)],
            };
            if !now
                .get(&o)
                .unwrap_or(&empty)
                .subtract_from(missing)
                .is_empty()
            {
                still.push(u);
                continue;
            }
            self.replay_group(u, &mut changes)?;
            atomic::remove_waiting(&self.conn, u)?;
            applied = true;
        }
        Ok((still, applied, changes))
    }

    /// Patches `[a, b]` of `origin` are gone everywhere: a group waiting
    /// for them can never be whole, so what is held of it is applied (the
    /// loss is reported as `E_GONE`).
    pub(super) fn release_waiting(&mut self, origin: u32, a: u64, b: u64) -> Result<()> {
        let hit: Vec<Atomic> = self
            .waiting
            .iter()
            .copied()
            .filter(|&(o, f, l)| o == origin && f <= b && a <= l)
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        self.begin_tx()?;
        let mut changes = Vec::new();
        let done = hit.iter().try_for_each(|&u| {
            self.replay_group(u, &mut changes)?;
            atomic::remove_waiting(&self.conn, u)
        });
        let done = done.and_then(|_| {
            self.runs.borrow_mut().flush(&self.conn)?;
            tx::commit(&self.conn)?;
            Ok(())
        });
        if let Err(e) = done {
            tx::rollback(&self.conn);
            self.runs.borrow_mut().discard();
            return Err(e);
        }
        self.waiting.retain(|u| !hit.contains(u));
        self.note_remote_changes(changes);
        self.recount_pending()?;
        self.load_kept_bytes()
    }

    /// Apply the kept patches of group `u` (inside a transaction).
    fn replay_group(&mut self, u: Atomic, changes: &mut Vec<Change>) -> Result<()> {
        let (o, a, b) = u;
        // Versions re-issued by an identity clash (seq + k * 2^50) are
        // applied with their group too, so nothing is left behind in kept.
        let mut kept = Vec::new();
        for k in 0..=crate::core::sync::MAX_LEVEL {
            let off = k * crate::core::sync::SHADOW_STEP;
            kept.extend(store::read_kept(&self.conn, Some((o, a + off, b + off)))?);
        }
        for k in kept {
            // A patch the local tables refuse stays kept (pending), as in
            // the frame path; the rest of the group applies.
            tx::savepoint(&self.conn, &tx::GROUP)?;
            let mark = self.runs.borrow_mut().pending_len();
            match self.replay_one(k) {
                Ok(c) => {
                    changes.extend(c);
                    tx::release(&self.conn, &tx::GROUP)?
                }
                Err(e) if super::replication::is_constraint(&e) => {
                    tx::rollback_to(&self.conn, &tx::GROUP)?;
                    self.runs.borrow_mut().rollback_to(mark);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// True when `(origin, seq)` belongs to a group that is waiting.
    pub(super) fn in_waiting_group(&self, origin: u32, seq: u64) -> bool {
        self.waiting
            .iter()
            .any(|&(o, a, b)| o == origin && a <= seq && seq <= b)
    }

    /// Retention must stop below the first waiting group of `origin`.
    pub(super) fn atomic_purge_limit(&self, origin: u32, limit: u64) -> u64 {
        self.waiting
            .iter()
            .filter(|u| u.0 == origin)
            .fold(limit, |l, u| l.min(u.1.saturating_sub(1)))
    }

    /// A local commit of patches `first..=last`: one group when more than one.
    pub(super) fn record_local_atomic(&mut self, first: u64, last: u64) -> Result<()> {
        // A bigger commit is applied as it arrives: held-back parts wait
        // in the kept table, which is no place for hundreds of thousands.
        if last > first && last - first < MAX_ATOMIC {
            let u = (self.peer_id, first, last);
            atomic::record(&self.conn, u)?;
            self.out_atomic.push(u);
        }
        Ok(())
    }

    /// Atomics overlapping requested ranges (served with the patches).
    pub(super) fn atomic_for(&self, requests: &[Ranges]) -> Result<Vec<Atomic>> {
        let mut out = Vec::new();
        for r in requests {
            for &(a, b) in r.ranges.iter().take(256) {
                out.extend(atomic::overlapping(&self.conn, r.origin, a, b)?);
            }
        }
        Ok(out)
    }
}
