//! Kept patches (whole patches the local schema cannot hold yet) are capped
//! in bytes in total (`maxKeptBytes`, 256 MiB) and per origin (a quarter), so a peer on another schema, or a
//! hostile key holder, cannot grow `_quilt_kept` without bound. Past the cap
//! a patch is not stored and not held: the sender still has it, an
//! `E_LIMIT` event says so, and the gap protocol fetches it again later.

use super::*;

impl Engine {
    pub(super) fn load_kept_bytes(&mut self) -> Result<()> {
        self.kept_bytes = store::kept_bytes(&self.conn)?;
        Ok(())
    }

    /// True when `bytes` more of `origin` fit under both caps.
    pub(super) fn kept_room(&self, origin: u32, bytes: usize) -> bool {
        let mine = self.kept_bytes.get(&origin).copied().unwrap_or(0);
        let total: u64 = self.kept_bytes.values().sum();
        let b = bytes as u64;
        let cap = self.cfg.max_kept_bytes;
        mine.saturating_add(b) <= cap / 4 && total.saturating_add(b) <= cap
    }
}
