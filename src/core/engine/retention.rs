//! Retention: purge old patches in small batches, never beyond what every
//! origin's contiguous seq and the last snapshot cover.

use super::*;

impl Engine {
    /// Retention: delete, in small batches, patches older than
    /// `retentionMs` that are below every origin's contiguous seq and covered
    /// by the last snapshot (when one exists).
    pub(super) fn purge(&mut self) -> Result<()> {
        let cutoff = hlc::from_unix_ms(hlc::wall_ms().saturating_sub(self.cfg.retention_ms)) as i64;
        let cover: Option<HashMap<u32, u64>> = self
            .conn
            .query_row(
                "SELECT value FROM _quilt_meta WHERE key='snapshot_vector'",
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()?
            .and_then(|b| rmp_serde::from_slice(&b).ok());
        let origins: Vec<(u32, u64)> = self
            .vector
            .origins
            .keys()
            .map(|&o| (o, self.vector.contiguous(o)))
            .collect();
        for (o, contiguous) in origins {
            let limit = match &cover {
                Some(c) => contiguous.min(c.get(&o).copied().unwrap_or(0)),
                None => contiguous,
            };
            if limit == 0 {
                continue;
            }
            // Stamps grow with seq per origin, so what may go is a prefix of
            // each table's rows of this origin: read at most a batch of the
            // oldest, stop at the first one too young, delete that range.
            let mut max_deleted = 0i64;
            let mut targets: Vec<(String, String)> = self
                .tables
                .values()
                .map(|t| {
                    let p = q(&t.patches());
                    (
                        format!("SELECT _sequenceId, _patchedAt FROM {p} WHERE _peerId=?1 AND _sequenceId<=?2 ORDER BY _sequenceId LIMIT {PURGE_BATCH}"),
                        format!("DELETE FROM {p} WHERE _peerId=?1 AND _sequenceId BETWEEN ?2 AND ?3"),
                    )
                })
                .collect();
            targets.push((
                format!("SELECT seq, at FROM _quilt_kept WHERE origin=?1 AND seq<=?2 ORDER BY seq LIMIT {PURGE_BATCH}"),
                "DELETE FROM _quilt_kept WHERE origin=?1 AND seq BETWEEN ?2 AND ?3".to_string(),
            ));
            for (select, delete) in targets {
                let mut range: Option<(i64, i64)> = None;
                {
                    let mut st = self.conn.prepare_cached(&select)?;
                    let mut rows = st.query(rusqlite::params![o as i64, limit as i64])?;
                    while let Some(r) = rows.next()? {
                        let (seq, at): (i64, i64) = (r.get(0)?, r.get(1)?);
                        if at >= cutoff {
                            break;
                        }
                        range = Some((range.map_or(seq, |x| x.0), seq));
                    }
                }
                if let Some((a, b)) = range {
                    self.conn
                        .prepare_cached(&delete)?
                        .execute(rusqlite::params![o as i64, a, b])?;
                    max_deleted = max_deleted.max(b);
                }
            }
            if max_deleted > 0 {
                let upto = (max_deleted as u64).max(self.purged.get(&o).copied().unwrap_or(0));
                self.purged.insert(o, upto);
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO _quilt_purged(origin, upto) VALUES(?, ?)",
                    )?
                    .execute(rusqlite::params![o as i64, upto as i64])?;
                self.counters.purged += 1;
            }
        }
        Ok(())
    }

    /// Record the seq vector a snapshot covers (retention never purges
    /// beyond it).
    pub fn set_snapshot_cover(&self, vector: &HashMap<u32, u64>, created_ms: u64) -> Result<()> {
        let blob = rmp_serde::to_vec(vector).unwrap_or_default();
        self.conn.execute(
            "INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES('snapshot_vector', ?)",
            [blob],
        )?;
        self.conn.execute(
            "INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES('snapshot_at', ?)",
            [created_ms as i64],
        )?;
        Ok(())
    }

    /// Contiguous seq per origin (what a snapshot taken now covers).
    pub fn contiguous_vector(&self) -> HashMap<u32, u64> {
        let mut v: HashMap<u32, u64> = self
            .vector
            .origins
            .keys()
            .map(|&o| (o, self.vector.contiguous(o)))
            .collect();
        v.insert(self.peer_id, self.seq);
        v
    }
}
