//! Retention: purge old patches in small batches, never one that a known
//! peer (added and not removed) has not acknowledged, unless a snapshot
//! anywhere in the cluster covers it (peers learn each other's snapshot
//! cover from pings). `maxRetentionMs` is the one exception: past it a patch
//! goes anyway, with an `E_RETENTION` event naming the peers that lacked it.

use super::*;
use crate::core::sync::patch_hash;

/// `_quilt_meta` key of the seq vector this peer's last snapshot covers.
const SNAPSHOT_VECTOR_KEY: &str = "snapshot_vector";
/// `_quilt_meta` key of the time this peer's last snapshot was taken.
pub(super) const SNAPSHOT_AT_KEY: &str = "snapshot_at";

impl Engine {
    /// Lowest seq of `origin` acknowledged by every known peer (None when
    /// there is no known peer), and the peers below `upto`.
    fn acked_by_all(&self, origin: u32, upto: u64) -> (Option<u64>, Vec<u32>) {
        let mut min: Option<u64> = None;
        let mut behind = Vec::new();
        for (&id, p) in &self.peers {
            if !p.added || id == self.peer_id {
                continue;
            }
            let a = self.gaps.acked(id, origin);
            min = Some(min.map_or(a, |m: u64| m.min(a)));
            if a < upto {
                behind.push(id);
            }
        }
        (min, behind)
    }

    /// Retention: delete, in small batches, patches older than
    /// `retentionMs` within what every known peer acknowledged or a
    /// snapshot covers, and past `maxRetentionMs` whatever this peer holds.
    pub(super) fn purge(&mut self) -> Result<()> {
        let now = hlc::wall_ms();
        let cutoff = hlc::from_unix_ms(now.saturating_sub(self.cfg.retention_ms)) as i64;
        let hard_cutoff = self
            .cfg
            .max_retention_ms
            .map(|m| hlc::from_unix_ms(now.saturating_sub(m)) as i64);
        let origins: Vec<(u32, u64)> = self
            .vector
            .origins
            .keys()
            .map(|&o| (o, self.vector.contiguous(o).min(SHADOW_STEP - 1)))
            .collect();
        for (o, contiguous) in origins {
            if contiguous <= self.purged.get(&o).copied().unwrap_or(0) {
                continue;
            }
            // Its oldest patch is too young: nothing to do, and no SQL and
            // no look at every peer's acks for it on this heartbeat.
            let oldest = self.oldest_at.get(&o).map_or(i64::MAX, |&a| a as i64);
            if cutoff <= oldest && hard_cutoff.is_none_or(|h| h <= oldest) {
                continue;
            }
            let cover = self.cluster_cover.get(&o).copied().unwrap_or(0);
            let (acked, _) = self.acked_by_all(o, 0);
            let mut soft = contiguous.min(acked.unwrap_or(contiguous).max(cover));
            // This peer's own snapshot, when it takes them: never purge
            // beyond what the last one covers (API.md, retentionMs).
            if let Some(own) = &self.own_cover {
                soft = soft.min(own.get(&o).copied().unwrap_or(0));
            }
            let mut upto = self.purge_origin(o, soft, cutoff)?;
            if let Some(hard) = hard_cutoff {
                let forced = self.purge_origin(o, contiguous, hard)?;
                if forced > soft {
                    let (_, behind) = self.acked_by_all(o, forced);
                    self.events.push(Event::Error {
                        code: "E_RETENTION",
                        message: format!(
                            "maxRetentionMs: patches of peer {o} up to seq {forced} were purged although peer(s) {behind:?} had not acknowledged them and no snapshot covers them; those peers must restore from a snapshot if they come back"
                        ),
                    });
                }
                upto = upto.max(forced);
            }
            if upto > 0 {
                self.counters.purged += 1;
                if self.kept_bytes.contains_key(&o) {
                    self.load_kept_bytes()?;
                }
            }
        }
        Ok(())
    }

    /// Purge the oldest patches of `origin` with seq <= `limit` stamped
    /// before `cutoff`, one batch per table, in one transaction. Returns the
    /// highest seq purged.
    fn purge_origin(&mut self, o: u32, limit: u64, cutoff: i64) -> Result<u64> {
        // Never into an atomic group still waiting for its other part.
        let limit = self.atomic_purge_limit(o, limit);
        if limit == 0 {
            return Ok(0);
        }
        self.begin_tx()?;
        let done = self.purge_prefix(o, limit, cutoff).and_then(|r| {
            tx::commit(&self.conn)?;
            Ok(r)
        });
        let (max_deleted, upto, d) = match done {
            Ok(r) => r,
            Err(e) => {
                tx::rollback(&self.conn);
                return Err(e);
            }
        };
        if max_deleted > 0 {
            self.purged.insert(o, upto);
            self.purged_digest.insert(o, d);
            self.refresh_oldest(o)?;
        }
        Ok(max_deleted)
    }

    /// The deletes of `purge_origin` (inside its transaction): the highest
    /// seq deleted, and (when it is not 0) the new purged prefix and digest.
    fn purge_prefix(&self, o: u32, limit: u64, cutoff: i64) -> Result<(u64, u64, u64)> {
        // Stamps grow with seq per origin, so what may go is a prefix of
        // each table's rows of this origin: read at most a batch of the
        // oldest, stop at the first one too young, delete that range.
        let mut max_deleted = 0u64;
        let mut digest = 0u64;
        let conn = &self.conn;
        let mut kept_seen: HashSet<u64> = HashSet::new();
        let tables: Vec<TableInfo> = self.tables.values().cloned().collect();
        for t in tables.iter().map(Some).chain(std::iter::once(None)) {
            let oldest = match t {
                Some(t) => {
                    patches::oldest(conn, &mut self.runs.borrow_mut(), t, o, limit, PURGE_BATCH)?
                }
                None => crate::core::kept::oldest_kept(conn, o, limit, PURGE_BATCH)?,
            };
            let mut range: Option<(u64, u64)> = None;
            for (seq, at) in oldest {
                if at as i64 >= cutoff {
                    break;
                }
                // A patch both applied and kept whole counts once.
                if (t.is_some() || self.table_version_at(o, seq as i64)?.is_none())
                    && kept_seen.insert(seq)
                {
                    digest ^= patch_hash(o, seq, at);
                }
                range = Some((range.map_or(seq, |x| x.0), seq));
            }
            if let Some((a, b)) = range {
                match t {
                    Some(t) => {
                        patches::delete_prefix(conn, &mut self.runs.borrow_mut(), t, o, a, b)?
                    }
                    None => crate::core::kept::delete_kept_range(conn, o, a, b)?,
                }
                max_deleted = max_deleted.max(b);
            }
        }
        if max_deleted == 0 {
            return Ok((0, 0, 0));
        }
        let upto = max_deleted.max(self.purged.get(&o).copied().unwrap_or(0));
        let d = self.purged_digest.get(&o).copied().unwrap_or(0) ^ digest;
        crate::core::atomic::purge(conn, o, upto)?;
        meta::record_purge(conn, o, upto, d)?;
        Ok((max_deleted, upto, d))
    }

    /// Re-read the stamp of an origin's oldest stored patch (stamps grow
    /// with seq, so it is the first row of each table).
    fn refresh_oldest(&mut self, o: u32) -> Result<()> {
        let mut oldest: Option<u64> = None;
        for t in self.tables.values() {
            if let Some(at) = patches::first_stamp(&self.conn, &mut self.runs.borrow_mut(), t, o)? {
                oldest = Some(oldest.map_or(at, |x: u64| x.min(at)));
            }
        }
        if let Some(at) = crate::core::kept::first_kept_stamp(&self.conn, o)? {
            oldest = Some(oldest.map_or(at, |x: u64| x.min(at)));
        }
        match oldest {
            Some(at) => self.oldest_at.insert(o, at),
            None => self.oldest_at.remove(&o),
        };
        Ok(())
    }

    /// Record the seq vector a snapshot covers: it joins the cluster cover
    /// that pings spread, below which any peer may purge.
    pub fn set_snapshot_cover(
        &mut self,
        vector: &HashMap<u32, u64>,
        created_ms: u64,
    ) -> Result<()> {
        let blob = rmp_serde::to_vec(vector).unwrap_or_default();
        meta::set(&self.conn, SNAPSHOT_VECTOR_KEY, blob)?;
        meta::set(&self.conn, SNAPSHOT_AT_KEY, created_ms as i64)?;
        for (&o, &c) in vector {
            let e = self.cluster_cover.entry(o).or_default();
            *e = (*e).max(c.min(SHADOW_STEP - 1));
        }
        self.own_cover = Some(vector.clone());
        Ok(())
    }

    /// Load the cover of this peer's last snapshot (at open).
    pub(super) fn load_snapshot_cover(&mut self) -> Result<()> {
        let cover: Option<HashMap<u32, u64>> =
            meta::get::<Vec<u8>>(&self.conn, SNAPSHOT_VECTOR_KEY)?
                .and_then(|b| rmp_serde::from_slice(&b).ok());
        for (&o, &c) in cover.iter().flatten() {
            let e = self.cluster_cover.entry(o).or_default();
            *e = (*e).max(c.min(SHADOW_STEP - 1));
        }
        self.own_cover = cover;
        Ok(())
    }

    /// Contiguous seq per origin (what a snapshot taken now covers).
    pub fn contiguous_vector(&self) -> HashMap<u32, u64> {
        let mut v: HashMap<u32, u64> = self
            .vector
            .origins
            .keys()
            .map(|&o| (o, self.vector.contiguous(o).min(SHADOW_STEP - 1)))
            .collect();
        v.insert(self.peer_id, self.seq);
        v
    }
}
