//! The sequence vector on disk, so opening a file costs O(origins + gaps +
//! writes since the last heartbeat), not a read of every patch row.
//!
//! At each heartbeat (and at close and after a migration) the vector is
//! saved in `_quilt_meta` with, per patches table, a *mark*: the highest
//! rowid then and the `(_peerId, _sequenceId)` of that row. At open the
//! saved vector is loaded and only rows above each mark are read. Kept
//! patches (bounded by `maxKeptBytes`) are always read whole.
//!
//! Anything that moves or deletes patch rows below a mark (identity
//! clashes, retention, kept patches re-merged after a migration) sets
//! `vector_dirty` in the same transaction; a file opened with that flag,
//! with a mark whose row changed (a `VACUUM` renumbered rowids, a file
//! edited by hand), or without a saved vector (an older file) is read in
//! full once, as before.

use super::*;
use crate::core::sync::OriginState;
use serde::{Deserialize, Serialize};

use crate::core::patches::DIRTY_KEY;

const VECTOR_KEY: &str = "vector_v1";

/// Per origin: held seq ranges and digest.
pub type HeldSummary = Vec<(u32, Vec<(u64, u64)>, u64)>;
/// Per patches table: (table, rowid, peer, seq) of its highest row.
pub type Marks = Vec<(String, i64, i64, i64)>;

#[derive(Serialize, Deserialize, Default)]
struct Saved {
    /// (origin, held ranges, digest).
    origins: HeldSummary,
    oldest_at: Vec<(u32, u64)>,
    max_at: u64,
    /// (table, rowid, peer, seq) of the highest row when saved.
    marks: Marks,
}

impl Engine {
    /// The highest row of each patches table: (table, rowid, peer, seq).
    fn marks(&self) -> Result<Marks> {
        let mut out = Vec::new();
        for t in self.tables.values().filter(|t| t.rowid) {
            let (rowid, peer, seq) = patches::last_row(&self.conn, t)?.unwrap_or((0, 0, 0));
            out.push((t.name.clone(), rowid, peer, seq));
        }
        Ok(out)
    }

    /// Save the vector and the marks (skipped when nothing moved since).
    pub(super) fn save_vector(&self) -> Result<()> {
        let marks = self.marks()?;
        let dirty = meta::exists(&self.conn, DIRTY_KEY).unwrap_or(false);
        let mut saved_marks = self.saved_marks.borrow_mut();
        if !dirty && saved_marks.as_ref() == Some(&marks) {
            return Ok(());
        }
        let s = Saved {
            origins: self
                .vector
                .origins
                .iter()
                .map(|(&o, st)| (o, st.held.iter().collect(), st.digest))
                .collect(),
            oldest_at: self.oldest_at.iter().map(|(&o, &a)| (o, a)).collect(),
            max_at: self.hlc.last(),
            marks: marks.clone(),
        };
        let blob = rmp_serde::to_vec(&s).map_err(|e| frame_err(format!("vector: {e}")))?;
        meta::set(&self.conn, VECTOR_KEY, blob)?;
        meta::delete(&self.conn, DIRTY_KEY)?;
        *saved_marks = Some(marks);
        Ok(())
    }

    /// Load the saved vector and read the rows written since. False when
    /// there is none usable (the caller then reads everything).
    fn load_vector(&mut self) -> Result<bool> {
        let dirty = meta::exists(&self.conn, DIRTY_KEY).unwrap_or(false);
        if dirty || self.tables.values().any(|t| !t.rowid) {
            return Ok(false);
        }
        let blob = meta::get::<Vec<u8>>(&self.conn, VECTOR_KEY)?;
        let Some(s) = blob.and_then(|b| rmp_serde::from_slice::<Saved>(&b).ok()) else {
            return Ok(false);
        };
        let marks: HashMap<&str, (i64, i64, i64)> = s
            .marks
            .iter()
            .map(|(t, r, p, q)| (t.as_str(), (*r, *p, *q)))
            .collect();
        // Every table must have a mark that still points at the same row.
        for t in self.tables.values() {
            let Some(&(rowid, peer, seq)) = marks.get(t.name.as_str()) else {
                return Ok(false);
            };
            if rowid == 0 {
                continue;
            }
            if patches::row_is(&self.conn, t, rowid, peer, seq)? != Some(true) {
                return Ok(false);
            }
        }
        let mut v = SeqVector::default();
        for (o, ranges, digest) in s.origins {
            let mut st = OriginState::default();
            for (a, b) in ranges {
                if a > b || b > crate::core::sync::MAX_SEQ {
                    return Ok(false);
                }
                st.held.insert_range(a, b);
            }
            st.digest = digest;
            st.max_seen = st.regular_max();
            v.origins.insert(o, st);
        }
        self.vector = v;
        self.oldest_at = s.oldest_at.into_iter().collect();
        let max_at = s.max_at.max(self.hold_rows(Some(&marks))?);
        self.hlc.observe(max_at.min(hlc::MAX_HLC));
        self.load_purged(false)?;
        *self.saved_marks.borrow_mut() = Some(s.marks);
        Ok(true)
    }

    /// Hold the `(origin, seq, at)` of every stored patch row (with
    /// `marks`, only the rows above each table's mark) and of every kept
    /// patch; the highest stamp.
    fn hold_rows(&mut self, marks: Option<&HashMap<&str, (i64, i64, i64)>>) -> Result<u64> {
        let mut max_at = 0u64;
        let (vector, oldest_at) = (&mut self.vector, &mut self.oldest_at);
        let mut hold = |o: i64, s: i64, at: i64| {
            // A patch partly applied and kept whole is listed twice.
            if o > 0 && s > 0 && !vector.holds(o as u32, s as u64) {
                vector.hold(o as u32, s as u64, at as u64);
                let e = oldest_at.entry(o as u32).or_insert(at as u64);
                *e = (*e).min(at as u64);
            }
            max_at = max_at.max(at.max(0) as u64);
        };
        for t in self.tables.values() {
            let after = marks.map(|m| m.get(t.name.as_str()).map_or(0, |m| m.0));
            patches::each_stamp(&self.conn, t, after, &mut hold)?;
        }
        crate::core::kept::each_stamp(&self.conn, &mut hold)?;
        Ok(max_at)
    }

    /// Purged prefixes and their digests; `hold`: also mark them held (when
    /// the vector was rebuilt from rows, which no longer show them).
    fn load_purged(&mut self, hold: bool) -> Result<()> {
        let digests = meta::purged_digests(&self.conn)?;
        for (o, upto) in meta::purged(&self.conn)? {
            if o > 0 && upto > 0 {
                let d = digests.get(&(o as u32)).copied().unwrap_or(0);
                if hold {
                    // Rows at or below `upto` that survived the purge are
                    // already folded in; only the purged ones' hashes come
                    // from disk.
                    self.vector.hold_purged(o as u32, upto as u64, d);
                }
                self.purged.insert(o as u32, upto as u64);
                self.purged_digest.insert(o as u32, d);
            }
        }
        Ok(())
    }

    /// The sequence vector: saved plus what came since, or (older files,
    /// a stale save) read from every patch row once.
    pub(super) fn rebuild_vector(&mut self) -> Result<()> {
        if self.load_vector()? {
            return Ok(());
        }
        self.vector = SeqVector::default();
        self.oldest_at.clear();
        let max_at = self.hlc.last().max(self.hold_rows(None)?);
        self.load_purged(true)?;
        self.hlc.observe(max_at.min(hlc::MAX_HLC));
        Ok(())
    }
}

impl Engine {
    /// Per origin, the held seq ranges and digest, sorted (for tests that
    /// compare a loaded vector with one read from every row).
    #[doc(hidden)]
    pub fn held_summary(&self) -> HeldSummary {
        let mut v: Vec<_> = self
            .vector
            .origins
            .iter()
            .map(|(&o, st)| (o, st.held.iter().collect(), st.digest))
            .collect();
        v.sort();
        v
    }
}
