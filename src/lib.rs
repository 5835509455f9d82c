//! # quilt: multi-writer replication for embedded SQLite
//!
//! Data flow, end to end:
//!
//! - **Local write** (`upsert`): one SQLite transaction stamps each row with
//!   the next HLC value and sequence number, stores it in `<t>_patches`,
//!   applies it to the base row and the row's clock (`core::store`), and
//!   queues it. The JS wrapper flushes the queue once per event-loop turn as
//!   frames (`core::protocol`) through each peer's `send`.
//! - **Incoming frame** (`applyPatches`): the MAC is checked before decoding,
//!   the body is validated, and every new patch is stored and merged column by
//!   column (last writer wins on `(at, peer, seq)`) in one transaction.
//!   Patches the local schema cannot hold are kept whole in `_quilt_kept`.
//!   Gaps the frame reveals are requested at once (`core::sync`).
//! - **Heartbeat** (`tick`): re-request gaps with backoff, send pings that
//!   carry the sequence vector (they find lost tails and double as acks),
//!   purge old patches in small batches.
//! - **Snapshot**: a consistent copy made with `VACUUM INTO` (one read transaction) on a
//!   separate connection, compressed with zstd and streamed to object
//!   storage by tokio (`core::snapshot`), with a manifest holding the seq
//!   vector; restore checks the sha256 and writes a temp file then renames.
//!
//! `core` is plain Rust; `binding` is the thin napi layer.

pub mod core;

#[cfg(feature = "napi-binding")]
pub mod binding;
