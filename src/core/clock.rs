//! The winning-stamp clock of a row and the explicit-NULL bitmap of a
//! patch: encodings and the merge, as plain functions (no SQL).
//!
//! A clock BLOB (format 2) is one header byte then fixed 20-byte slots:
//!
//! ```text
//! header: bits 0-6 = CLOCK_FORMAT (2), bit 7 = the row slot is present
//! [row slot]            20 bytes, only when bit 7 is set
//! slot 1, slot 2, ...   20 bytes each; slot k = the column of ordinal k
//! ```
//!
//! A slot is a big-endian `(at u64, peer u32, seq u64)`, so stamps compare
//! as bytes; all zero means "no stamp" (no real stamp has peer 0 and seq 0).
//! The row slot (ordinal 0) is reserved for a row-level stamp (SQL DELETE
//! tombstones); the merge treats it like any other slot. Columns are found
//! by their stable ordinal (`TableInfo::ordinals`), never by name, so names
//! of any length or content work and a rename moves nothing. A blob whose
//! header is not format 2 is read as an empty clock (damaged data is not
//! trusted), and a trailing partial slot is ignored.
//!
//! The explicit-NULL bitmap of a patch row (`_quiltNulls`, a BLOB): bit k
//! (byte k/8, bit k%8) set = the column of ordinal k was set to NULL on
//! purpose. Files written before it hold a comma-joined TEXT list of names
//! there, which is still read.

use crate::core::schema::TableInfo;
use std::ops::Range;

/// The order of writes: HLC first, then origin peer id, then its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Stamp {
    pub at: u64,
    pub peer: u32,
    pub seq: u64,
}

pub const STAMP_LEN: usize = 20;
/// Format of the clock BLOB, in the low 7 bits of its header byte.
pub const CLOCK_FORMAT: u8 = 2;
/// Header bit: the row-level slot (ordinal 0) follows the header.
pub const ROW_FLAG: u8 = 0x80;
/// The ordinal reserved for the row-level slot.
pub const ROW_SLOT: u16 = 0;
const ZERO: [u8; STAMP_LEN] = [0u8; STAMP_LEN];

pub fn stamp_bytes(s: Stamp) -> [u8; STAMP_LEN] {
    let mut b = [0u8; STAMP_LEN];
    b[0..8].copy_from_slice(&s.at.to_be_bytes());
    b[8..12].copy_from_slice(&s.peer.to_be_bytes());
    b[12..20].copy_from_slice(&s.seq.to_be_bytes());
    b
}

/// A slot's stamp; `None` for a slot of another length or all zero.
pub fn stamp_of(b: &[u8]) -> Option<Stamp> {
    if b.len() != STAMP_LEN || b == ZERO {
        return None;
    }
    Some(Stamp {
        at: u64::from_be_bytes(b[0..8].try_into().ok()?),
        peer: u32::from_be_bytes(b[8..12].try_into().ok()?),
        seq: u64::from_be_bytes(b[12..20].try_into().ok()?),
    })
}

/// The parts of a clock BLOB: the row slot (if present) and the column
/// slots (a whole number of them). A damaged blob reads as empty.
pub fn clock_parts(b: &[u8]) -> (Option<&[u8]>, &[u8]) {
    let Some((&h, body)) = b.split_first() else {
        return (None, &[]);
    };
    if h & !ROW_FLAG != CLOCK_FORMAT {
        return (None, &[]);
    }
    let (row, cols) = if h & ROW_FLAG != 0 {
        if body.len() < STAMP_LEN {
            return (None, &[]);
        }
        (Some(&body[..STAMP_LEN]), &body[STAMP_LEN..])
    } else {
        (None, body)
    };
    let whole = cols.len() / STAMP_LEN * STAMP_LEN;
    (row, &cols[..whole])
}

/// The stamp bytes of slot `k` (ordinal), if the blob has that slot.
pub fn slot(b: &[u8], k: u16) -> Option<&[u8]> {
    let (row, cols) = clock_parts(b);
    if k == ROW_SLOT {
        return row;
    }
    let o = (k as usize - 1) * STAMP_LEN;
    cols.get(o..o + STAMP_LEN)
}

/// Every non-empty slot as (ordinal, stamp).
pub fn clock_stamps(b: &[u8]) -> Vec<(u16, Stamp)> {
    let (row, cols) = clock_parts(b);
    let mut out = Vec::new();
    if let Some(s) = row.and_then(stamp_of) {
        out.push((ROW_SLOT, s));
    }
    for (i, c) in cols.chunks_exact(STAMP_LEN).enumerate() {
        if let Some(s) = stamp_of(c) {
            out.push((i as u16 + 1, s));
        }
    }
    out
}

fn max_slot<'a>(a: Option<&'a [u8]>, b: Option<&'a [u8]>) -> &'a [u8] {
    match (a, b) {
        (Some(x), Some(y)) => {
            if y > x {
                y
            } else {
                x
            }
        }
        (Some(x), None) => x,
        (None, Some(y)) => y,
        (None, None) => &ZERO,
    }
}

/// Element-wise maximum of two clocks into `out` (cleared first): the
/// merge of last-writer-wins. Commutative, associative and idempotent;
/// a missing slot counts as all zero.
pub fn merge_clock_into(out: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    let (ra, ca) = clock_parts(a);
    let (rb, cb) = clock_parts(b);
    out.clear();
    let row = ra.is_some() || rb.is_some();
    out.reserve(1 + if row { STAMP_LEN } else { 0 } + ca.len().max(cb.len()));
    out.push(CLOCK_FORMAT | if row { ROW_FLAG } else { 0 });
    if row {
        out.extend_from_slice(max_slot(ra, rb));
    }
    let n = ca.len().max(cb.len()) / STAMP_LEN;
    for k in 0..n {
        let r = k * STAMP_LEN..(k + 1) * STAMP_LEN;
        out.extend_from_slice(max_slot(ca.get(r.clone()), cb.get(r)));
    }
}

/// [`merge_clock_into`] into a new vector.
pub fn merge_clock(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    merge_clock_into(&mut out, a, b);
    out
}

/// An empty clock (header only).
pub fn empty_clock() -> Vec<u8> {
    vec![CLOCK_FORMAT]
}

/// Byte range of slot `k` in a well-formed clock built by this module,
/// growing it (zero slots, or the row slot) as needed.
fn slot_range_mut(buf: &mut Vec<u8>, k: u16) -> Range<usize> {
    // A damaged blob starts over empty; a trailing partial slot is dropped.
    let ok = match buf.first() {
        Some(&h) if h & !ROW_FLAG == CLOCK_FORMAT => h & ROW_FLAG == 0 || buf.len() > STAMP_LEN,
        _ => false,
    };
    if !ok {
        buf.clear();
        buf.push(CLOCK_FORMAT);
    }
    let has_row = buf[0] & ROW_FLAG != 0;
    let base = 1 + if has_row { STAMP_LEN } else { 0 };
    let whole = base + (buf.len() - base) / STAMP_LEN * STAMP_LEN;
    buf.truncate(whole);
    if k == ROW_SLOT {
        if !has_row {
            buf[0] |= ROW_FLAG;
            buf.splice(1..1, ZERO);
        }
        return 1..1 + STAMP_LEN;
    }
    let o = base + (k as usize - 1) * STAMP_LEN;
    if buf.len() < o + STAMP_LEN {
        buf.resize(o + STAMP_LEN, 0);
    }
    o..o + STAMP_LEN
}

/// Raise slot `k` to at least `stamp` (the merge with a one-slot clock).
pub fn raise_slot(buf: &mut Vec<u8>, k: u16, stamp: &[u8; STAMP_LEN]) {
    let r = slot_range_mut(buf, k);
    if buf[r.clone()] < stamp[..] {
        buf[r].copy_from_slice(stamp);
    }
}

/// A clock from (ordinal, stamp) pairs (the greatest stamp per ordinal).
pub fn encode_clock(entries: impl IntoIterator<Item = (u16, Stamp)>) -> Vec<u8> {
    let mut out = empty_clock();
    for (k, s) in entries {
        raise_slot(&mut out, k, &stamp_bytes(s));
    }
    out
}

/// Replace every slot equal to `old` with `new` (a patch changed its
/// identity). Returns true when a slot changed.
pub fn rename_in_clock(buf: &mut [u8], old: Stamp, new: Stamp) -> bool {
    let (o, n) = (stamp_bytes(old), stamp_bytes(new));
    let (row, cols) = clock_parts(buf);
    let row_len = row.map_or(0, |_| STAMP_LEN);
    let end = 1 + row_len + cols.len();
    let mut changed = false;
    if end <= 1 {
        return false;
    }
    for s in buf[1..end].chunks_exact_mut(STAMP_LEN) {
        if *s == o {
            s.copy_from_slice(&n);
            changed = true;
        }
    }
    changed
}

/// A clock with the given column ordinals' slots present (zero), and the
/// offset of each of them: local writes copy it and fill the stamps in.
pub fn clock_template(ordinals: &[u16]) -> (Vec<u8>, Vec<usize>) {
    let mut out = empty_clock();
    let mut slots = Vec::with_capacity(ordinals.len());
    for &k in ordinals.iter().filter(|&&k| k != ROW_SLOT) {
        slots.push(slot_range_mut(&mut out, k).start);
    }
    (out, slots)
}

/// Write `stamp` into every slot of a clock template copy.
pub fn fill_clock(buf: &mut [u8], slots: &[usize], stamp: Stamp) {
    let b = stamp_bytes(stamp);
    for &o in slots {
        if let Some(s) = buf.get_mut(o..o + STAMP_LEN) {
            s.copy_from_slice(&b);
        }
    }
}

// ----- the format before ordinals (read once, to upgrade) -------------------

/// Entries of a clock BLOB of the first format, `(u8 name_len, name
/// truncated to 255 bytes, 20-byte stamp)` sorted by name, without copying;
/// a damaged tail is ignored rather than trusted.
pub fn legacy_clock_entries(mut b: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = b.split_first() {
        let len = len as usize;
        if rest.len() < len + STAMP_LEN {
            break;
        }
        out.push((&rest[..len], &rest[len..len + STAMP_LEN]));
        b = &rest[len + STAMP_LEN..];
    }
    out
}

/// A first-format clock in the ordinal format: `ordinal` finds a column by
/// its (truncated) stored name; names it does not know are left out.
pub fn upgrade_clock(old: &[u8], ordinal: impl Fn(&[u8]) -> Option<u16>) -> Vec<u8> {
    let mut out = empty_clock();
    for (name, s) in legacy_clock_entries(old) {
        let (Some(k), Ok(b)) = (ordinal(name), <[u8; STAMP_LEN]>::try_from(s)) else {
            continue;
        };
        if k != ROW_SLOT {
            raise_slot(&mut out, k, &b);
        }
    }
    out
}

// ----- explicit NULLs ------------------------------------------------------

/// The `_quiltNulls` bitmap of a patch: bit k set for each column of
/// ordinal k it sets to NULL (`nulls`: whether each value of `cols` is
/// NULL). None when it sets none.
pub fn nulls_bitmap(
    t: &TableInfo,
    cols: &[usize],
    nulls: impl IntoIterator<Item = bool>,
) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    for (&i, null) in cols.iter().zip(nulls) {
        if !null {
            continue;
        }
        let k = t.ordinals.get(i).copied().unwrap_or(ROW_SLOT);
        if k == ROW_SLOT {
            continue; // a key column (never NULL) or one without a slot
        }
        let (byte, bit) = (k as usize / 8, k % 8);
        if out.len() <= byte {
            out.resize(byte + 1, 0);
        }
        out[byte] |= 1 << bit;
    }
    (!out.is_empty()).then_some(out)
}

/// True when bit `k` of a nulls bitmap is set.
pub fn bitmap_has(bitmap: &[u8], k: u16) -> bool {
    k != ROW_SLOT
        && bitmap
            .get(k as usize / 8)
            .is_some_and(|b| b & (1 << (k % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn clock() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::option::of(any::<(u8, u8)>()),
            proptest::collection::vec(proptest::option::of(any::<(u8, u8, u8)>()), 0..6),
        )
            .prop_map(|(row, cols)| {
                let mut c = empty_clock();
                let st = |at: u8, peer: u8, seq: u8| Stamp {
                    at: at as u64,
                    peer: peer as u32 % 3 + 1,
                    seq: seq as u64 % 4 + 1,
                };
                if let Some((at, p)) = row {
                    raise_slot(&mut c, ROW_SLOT, &stamp_bytes(st(at, p, 1)));
                }
                for (i, s) in cols.into_iter().enumerate() {
                    if let Some((at, p, q)) = s {
                        raise_slot(&mut c, i as u16 + 1, &stamp_bytes(st(at, p, q)));
                    }
                }
                c
            })
    }

    fn canon(b: &[u8]) -> Vec<(u16, Stamp)> {
        clock_stamps(b)
    }

    proptest! {
        #[test]
        fn merge_is_a_semilattice(a in clock(), b in clock(), c in clock()) {
            prop_assert_eq!(canon(&merge_clock(&a, &b)), canon(&merge_clock(&b, &a)));
            prop_assert_eq!(
                canon(&merge_clock(&merge_clock(&a, &b), &c)),
                canon(&merge_clock(&a, &merge_clock(&b, &c)))
            );
            prop_assert_eq!(canon(&merge_clock(&a, &a)), canon(&a));
            // Each slot is the max of the two.
            let m = merge_clock(&a, &b);
            for k in 0..8u16 {
                let want = stamp_of(max_slot(slot(&a, k), slot(&b, k)));
                prop_assert_eq!(slot(&m, k).and_then(stamp_of), want);
            }
        }

        #[test]
        fn damaged_blobs_do_not_panic(b in proptest::collection::vec(any::<u8>(), 0..90), c in clock()) {
            let _ = merge_clock(&b, &c);
            let _ = clock_stamps(&b);
            let _ = upgrade_clock(&b, |n| Some(n.len() as u16));
            let one = Stamp { at: 1, peer: 1, seq: 1 };
            let mut x = b.clone();
            raise_slot(&mut x, 3, &stamp_bytes(one));
            let want = slot(&b, 3).and_then(stamp_of).max(Some(one));
            prop_assert_eq!(slot(&x, 3).and_then(stamp_of), want);
            let mut y = b.clone();
            rename_in_clock(&mut y, Stamp::default(), Stamp { at: 9, peer: 9, seq: 9 });
        }
    }

    #[test]
    fn template_and_fill() {
        let (mut t, slots) = clock_template(&[3, 1]);
        assert_eq!(t.len(), 1 + 3 * STAMP_LEN);
        let s = Stamp {
            at: 5,
            peer: 2,
            seq: 7,
        };
        fill_clock(&mut t, &slots, s);
        assert_eq!(clock_stamps(&t), vec![(1, s), (3, s)]);
        let mut r = t.clone();
        raise_slot(&mut r, ROW_SLOT, &stamp_bytes(s));
        assert_eq!(clock_stamps(&r), vec![(0, s), (1, s), (3, s)]);
        assert_eq!(slot(&r, 3), Some(&stamp_bytes(s)[..]));
        let n = Stamp {
            at: 6,
            peer: 2,
            seq: 7,
        };
        assert!(rename_in_clock(&mut r, s, n));
        assert_eq!(clock_stamps(&r), vec![(0, n), (1, n), (3, n)]);
    }

    #[test]
    fn legacy_upgrade() {
        let s = stamp_bytes(Stamp {
            at: 5,
            peer: 2,
            seq: 7,
        });
        let mut old = Vec::new();
        for n in ["a", "gone", "z"] {
            old.push(n.len() as u8);
            old.extend_from_slice(n.as_bytes());
            old.extend_from_slice(&s);
        }
        old.push(9); // damaged tail
        let up = upgrade_clock(&old, |n| match n {
            b"a" => Some(2),
            b"z" => Some(1),
            _ => None,
        });
        let st = Stamp {
            at: 5,
            peer: 2,
            seq: 7,
        };
        assert_eq!(clock_stamps(&up), vec![(1, st), (2, st)]);
    }
}
