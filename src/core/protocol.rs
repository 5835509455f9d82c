//! Frames on the wire: `"QLT" | version u8 | flags u8 | sender u32 (BE) |
//! body (MessagePack) | [HMAC-SHA256 tag, 32 bytes]`. The tag covers every
//! byte before it and is checked before any MessagePack decoding. Layout and
//! rationale: `docs/protocol.md`.

use crate::core::error::{frame_err, Error, Result};
use crate::core::value::Value;
use hmac::{Hmac, Mac};
use rusqlite::types::ValueRef;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::sync::Arc;

/// First bytes of every frame.
pub const MAGIC: &[u8; 3] = b"QLT";
/// Protocol version written by this build.
pub const PROTOCOL_VERSION: u8 = 1;
/// Flag bit: a 32-byte HMAC-SHA256 tag ends the frame.
pub const FLAG_MAC: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 9;
/// Bytes of the MAC tag.
pub const TAG_LEN: usize = 32;
/// Caps applied while validating a decoded body.
pub const MAX_COLUMNS: usize = 2000;
/// Longest table or column name a frame may carry. (Versions before clock
/// slots by ordinal stored names truncated to 255 bytes and refused longer
/// ones; such a peer refuses a frame naming a longer column, E_FRAME.)
pub const MAX_NAME_LEN: usize = 1024;

/// A run of patches of one table from one origin that all set the same
/// columns. Stamps and sequence numbers are delta-coded against the previous
/// row of the group (the first against zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchGroup {
    pub table: String,
    pub origin: u32,
    pub columns: Vec<String>,
    pub rows: Vec<WireRow>,
}

/// `(at_delta, seq_delta, values)`; values follow `PatchGroup::columns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRow(pub i64, pub i64, pub Vec<Value>);

/// A heartbeat. It carries the sender's own last seq and, per origin it
/// holds, the highest contiguous seq and the highest regular seq it holds
/// (claims about what it holds, never about what it heard of). It doubles
/// as an acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Ping {
    pub own_last_seq: u64,
    pub vector: Vec<(u32, u64, u64)>,
    /// Digest of the held set per entry of `vector` (same order), or empty.
    #[serde(default)]
    pub digests: Vec<u64>,
    /// Re-issued ranges held (seqs at or above 2^50), per origin.
    #[serde(default)]
    pub shadows: Vec<Ranges>,
    /// The highest snapshot cover this peer knows of in the cluster:
    /// `(origin, contiguous seq covered)`; retention may purge below it.
    #[serde(default)]
    pub cover: Vec<(u32, u64)>,
}

/// Most entries a ping's vector (and cover) may hold.
pub const MAX_PING_ENTRIES: usize = 8192;
/// Most ranges one request or gone message may carry in total.
pub const MAX_RANGES: usize = 4096;

/// Inclusive seq ranges of one origin (asked for, or answered as gone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ranges {
    pub origin: u32,
    pub ranges: Vec<(u64, u64)>,
}

/// Everything one frame can carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Body {
    pub schema_version: u32,
    pub groups: Vec<PatchGroup>,
    pub ping: Option<Ping>,
    pub requests: Vec<Ranges>,
    pub gone: Vec<Ranges>,
    /// Atomic units `(origin, first, last)`: the patches `first..=last` of
    /// `origin` were committed together (a transaction, `upsertMany`) and
    /// are applied all or none. Carried by every frame holding a patch of
    /// the unit. Absent (not even an empty array) when there is none, so
    /// frames without units are byte-for-byte what older versions send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub atomic: Vec<(u32, u64, u64)>,
}

/// Most patches one atomic unit may span.
pub const MAX_UNIT_LEN: u64 = 1 << 20;
/// Most units one frame may carry.
pub const MAX_UNITS: usize = 4096;

/// One patch, decoded: absolute stamp and seq, columns by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub table: Arc<str>,
    pub origin: u32,
    pub seq: u64,
    pub at: u64,
    /// Shared by every patch of a batch that sets the same columns.
    pub columns: Arc<Vec<String>>,
    pub values: Vec<Value>,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub version: u8,
    pub sender: u32,
    pub body: Body,
}

type HmacSha256 = Hmac<Sha256>;

fn tag(key: &[u8], bytes: &[u8]) -> [u8; 32] {
    // new_from_slice accepts any key length for HMAC; the error arm is unreachable.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

/// Seal a body into a frame: header, MessagePack body and, with a key, the tag.
pub fn encode_frame(sender: u32, body: &Body, key: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_header(&mut out, sender, key.is_some());
    // Serializing plain structs into a Vec cannot fail.
    let _ = rmp_serde::encode::write(&mut out, body);
    seal(out, key)
}

/// Write the fixed header.
pub fn write_header(out: &mut Vec<u8>, sender: u32, mac: bool) {
    out.extend_from_slice(MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(if mac { FLAG_MAC } else { 0 });
    out.extend_from_slice(&sender.to_be_bytes());
}

/// Append the tag when a key is set.
pub fn seal(mut out: Vec<u8>, key: Option<&[u8]>) -> Vec<u8> {
    if let Some(k) = key {
        let t = tag(k, &out);
        out.extend_from_slice(&t);
    }
    out
}

/// Check header and MAC, then decode and validate the body. `max_len`
/// bounds the whole frame.
pub fn decode_frame(bytes: &[u8], key: Option<&[u8]>, max_len: usize) -> Result<Frame> {
    if bytes.len() > max_len {
        return Err(frame_err(format!(
            "frame of {} bytes is larger than the {max_len}-byte limit",
            bytes.len()
        )));
    }
    if bytes.len() < HEADER_LEN || &bytes[..3] != MAGIC {
        return Err(frame_err("not a quilt frame (bad magic or too short)"));
    }
    let version = bytes[3];
    if version != PROTOCOL_VERSION {
        return Err(Error::Version(format!(
            "protocol version {version} is not supported (this build speaks {PROTOCOL_VERSION})"
        )));
    }
    let flags = bytes[4];
    if flags & !FLAG_MAC != 0 {
        return Err(frame_err("unknown frame flags"));
    }
    let sender = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
    let has_tag = flags & FLAG_MAC != 0;
    let body_end = if has_tag {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(if key.is_some() {
                Error::Auth("frame too short to hold its MAC".into())
            } else {
                frame_err("frame too short to hold its MAC")
            });
        }
        bytes.len() - TAG_LEN
    } else {
        bytes.len()
    };
    if key.is_none() && has_tag {
        // A keyed cluster talking to a peer without a key: refuse, so the
        // misconfiguration shows instead of half-working.
        return Err(Error::Auth(
            "frame carries a MAC but this peer has no clusterKey".into(),
        ));
    }
    if let Some(k) = key {
        if !has_tag {
            return Err(Error::Auth(
                "frame carries no MAC but a clusterKey is set".into(),
            ));
        }
        let mut mac = HmacSha256::new_from_slice(k).map_err(|_| Error::Auth("bad key".into()))?;
        mac.update(&bytes[..body_end]);
        mac.verify_slice(&bytes[body_end..])
            .map_err(|_| Error::Auth("frame MAC does not match the clusterKey".into()))?;
    }
    if sender == 0 {
        return Err(frame_err("sender peer id 0 is not valid"));
    }
    let mut rd = &bytes[HEADER_LEN..body_end];
    let body: Body = rmp_serde::decode::from_read(&mut rd)
        .map_err(|e| frame_err(format!("malformed frame body: {e}")))?;
    if !rd.is_empty() {
        return Err(frame_err("trailing bytes after the frame body"));
    }
    validate(&body)?;
    Ok(Frame {
        version,
        sender,
        body,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.contains('\0')
}

fn validate(body: &Body) -> Result<()> {
    for g in &body.groups {
        if !valid_name(&g.table) {
            return Err(frame_err("invalid table name"));
        }
        if g.origin == 0 {
            return Err(frame_err("origin peer id 0 is not valid"));
        }
        if g.columns.is_empty() || g.columns.len() > MAX_COLUMNS {
            return Err(frame_err("a patch group needs 1..2000 columns"));
        }
        let mut seen = std::collections::HashSet::new();
        let n = g.columns.len();
        for (i, c) in g.columns.iter().enumerate() {
            // A row deletion ends its columns with the one reserved name.
            let reserved = c.starts_with("_quilt")
                && !(i + 1 == n && i > 0 && c == crate::core::schema::DELETED_COL);
            if !valid_name(c) || reserved || !seen.insert(c.as_str()) {
                return Err(frame_err(format!("invalid or repeated column name {c:?}")));
            }
        }
        let (mut at, mut seq) = (0i64, 0i64);
        for r in &g.rows {
            if r.2.len() != g.columns.len() {
                return Err(frame_err("a row's value count differs from its columns"));
            }
            at = at
                .checked_add(r.0)
                .ok_or_else(|| frame_err("stamp overflow"))?;
            seq = seq
                .checked_add(r.1)
                .ok_or_else(|| frame_err("seq overflow"))?;
            if at <= 0
                || at as u64 > crate::core::hlc::MAX_HLC
                || seq <= 0
                || seq as u64 > crate::core::sync::MAX_SEQ
            {
                return Err(frame_err("patch stamp or seq out of range"));
            }
        }
    }
    let max_seq = crate::core::sync::MAX_SEQ;
    let mut n_ranges = 0usize;
    for r in body.requests.iter().chain(body.gone.iter()) {
        n_ranges += r.ranges.len();
        if r.origin == 0
            || r.ranges
                .iter()
                .any(|&(a, b)| a == 0 || b < a || b > max_seq)
        {
            return Err(frame_err("invalid seq range"));
        }
    }
    if n_ranges > MAX_RANGES {
        return Err(frame_err("too many ranges in one frame"));
    }
    if body.atomic.len() > MAX_UNITS {
        return Err(frame_err("too many atomic units in one frame"));
    }
    for &(o, a, b) in &body.atomic {
        if o == 0 || a == 0 || b <= a || b > max_seq || b - a >= MAX_UNIT_LEN {
            return Err(frame_err("invalid atomic unit"));
        }
    }
    if let Some(p) = &body.ping {
        if p.own_last_seq > max_seq
            || p.vector.len() > MAX_PING_ENTRIES
            || p.cover.len() > MAX_PING_ENTRIES
            || (!p.digests.is_empty() && p.digests.len() != p.vector.len())
            || p.shadows.len() > MAX_PING_ENTRIES
        {
            return Err(frame_err("ping out of bounds"));
        }
        for &(o, c, m) in &p.vector {
            if o == 0 || c > m || m > max_seq {
                return Err(frame_err("invalid ping vector entry"));
            }
        }
        for &(o, c) in &p.cover {
            if o == 0 || c > max_seq {
                return Err(frame_err("invalid ping cover entry"));
            }
        }
        let mut shadow_ranges = 0usize;
        for r in &p.shadows {
            shadow_ranges += r.ranges.len();
            if r.origin == 0
                || r.ranges
                    .iter()
                    .any(|&(a, b)| a < crate::core::sync::SHADOW_STEP || b < a || b > max_seq)
            {
                return Err(frame_err("invalid re-issued range in ping"));
            }
        }
        if shadow_ranges > MAX_RANGES {
            return Err(frame_err("too many re-issued ranges in ping"));
        }
    }
    Ok(())
}

impl PatchGroup {
    /// Expand delta-coded rows into absolute patches.
    pub fn patches(&self) -> impl Iterator<Item = Patch> + '_ {
        let (mut at, mut seq) = (0i64, 0i64);
        let table: Arc<str> = Arc::from(self.table.as_str());
        let columns = Arc::new(self.columns.clone());
        self.rows.iter().map(move |r| {
            at = at.wrapping_add(r.0);
            seq = seq.wrapping_add(r.1);
            Patch {
                table: table.clone(),
                origin: self.origin,
                seq: seq as u64,
                at: at as u64,
                columns: columns.clone(),
                values: r.2.clone(),
            }
        })
    }
}

/// Groups consecutive patches that share table, origin and columns, and
/// splits them into bodies whose frames stay under `max_bytes`.
pub struct FrameBuilder<'k> {
    sender: u32,
    schema_version: u32,
    key: Option<&'k [u8]>,
    max_bytes: usize,
    frames: Vec<Vec<u8>>,
    body: Body,
    size: usize,
    last: (i64, i64),
    /// Units the pushed patches may belong to (sorted by origin, first).
    units: Vec<(u32, u64, u64)>,
}

/// Rough per-frame overhead budget: header, body array, tag, group headers.
const FRAME_OVERHEAD: usize = HEADER_LEN + TAG_LEN + 16;

impl<'k> FrameBuilder<'k> {
    pub fn new(sender: u32, schema_version: u32, key: Option<&'k [u8]>, max_bytes: usize) -> Self {
        FrameBuilder {
            sender,
            schema_version,
            key,
            max_bytes,
            frames: Vec::new(),
            body: Body {
                schema_version,
                ..Default::default()
            },
            size: FRAME_OVERHEAD,
            last: (0, 0),
            units: Vec::new(),
        }
    }

    /// The atomic units of the patches to come: each frame carries those
    /// its patches belong to.
    pub fn set_atomic(&mut self, mut units: Vec<(u32, u64, u64)>) {
        units.sort_unstable();
        units.dedup();
        self.units = units;
    }

    /// Units overlapping the seq span of each group of the current body
    /// (one that only spans a gap is harmless: it holds nothing back).
    fn body_units(&self) -> Vec<(u32, u64, u64)> {
        let mut out = Vec::new();
        if self.units.is_empty() {
            return out;
        }
        for g in &self.body.groups {
            let (mut seq, mut lo, mut hi) = (0i64, u64::MAX, 0u64);
            for r in &g.rows {
                seq = seq.wrapping_add(r.1);
                lo = lo.min(seq as u64);
                hi = hi.max(seq as u64);
            }
            for &u in &self.units {
                if u.0 == g.origin && u.1 <= hi && lo <= u.2 && !out.contains(&u) {
                    out.push(u);
                }
            }
        }
        out
    }

    /// Add one patch; starts a new frame when this one would overflow.
    pub fn push(&mut self, p: &Patch) {
        let row_size = estimate_row(p.values.iter()) + 18;
        let same_group = matches!(self.body.groups.last(), Some(g)
            if g.origin == p.origin && *g.table == *p.table && g.columns == *p.columns);
        let group_size = if same_group {
            0
        } else {
            p.table.len() + 8 + p.columns.iter().map(|c| c.len() + 2).sum::<usize>()
        };
        if self.size + row_size + group_size > self.max_bytes && !self.body.groups.is_empty() {
            self.finish_frame();
            return self.push(p);
        }
        if !same_group || self.body.groups.is_empty() {
            self.body.groups.push(PatchGroup {
                table: p.table.to_string(),
                origin: p.origin,
                columns: p.columns.as_ref().clone(),
                rows: Vec::new(),
            });
            self.last = (0, 0);
            self.size += group_size;
        }
        let (at, seq) = (p.at as i64, p.seq as i64);
        let row = WireRow(at - self.last.0, seq - self.last.1, p.values.clone());
        self.last = (at, seq);
        self.size += row_size;
        if let Some(g) = self.body.groups.last_mut() {
            g.rows.push(row);
        }
    }

    /// Add control messages (they go in the current frame).
    pub fn body_mut(&mut self) -> &mut Body {
        &mut self.body
    }

    fn finish_frame(&mut self) {
        let units = self.body_units();
        self.body.atomic = units;
        let body = std::mem::replace(
            &mut self.body,
            Body {
                schema_version: self.schema_version,
                ..Default::default()
            },
        );
        self.frames.push(encode_frame(self.sender, &body, self.key));
        self.size = FRAME_OVERHEAD;
        self.last = (0, 0);
    }

    /// All frames (empty when nothing was pushed and no control was set).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        let b = &self.body;
        if !b.groups.is_empty() || b.ping.is_some() || !b.requests.is_empty() || !b.gone.is_empty()
        {
            self.finish_frame();
        }
        self.frames
    }
}

/// Upper bound of the MessagePack size of a row's values.
pub fn estimate_row<'a>(values: impl Iterator<Item = &'a Value>) -> usize {
    estimate_refs(values.map(Value::to_ref))
}

/// [`estimate_row`] of borrowed values.
pub fn estimate_refs<'a>(values: impl Iterator<Item = ValueRef<'a>>) -> usize {
    values
        .map(|v| match v {
            ValueRef::Null => 1,
            ValueRef::Integer(_) | ValueRef::Real(_) => 9,
            ValueRef::Text(b) | ValueRef::Blob(b) => b.len() + 5,
        })
        .sum::<usize>()
        + 5
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
