//! A batch of local writes, flat: every row's cells in one vector and every
//! text or blob in one byte buffer, so a batch of 100k rows costs a few
//! allocations instead of one per row and one per string (measured: those
//! and their drops were about a tenth of `upsertMany`, issue 11 (g)).
//!
//! A cell names its column by a position into a list of columns that the
//! caller holds (the names `upsertMany` was given, or a table's ordinals);
//! a row lists only the columns it gives. Values come back as rusqlite
//! `ValueRef`s borrowed from the batch, bound to statements without a copy
//! on our side.

use crate::core::value::Value;
use rusqlite::types::ValueRef;

/// One cell; text and blobs are ranges of [`Batch::bytes`].
#[derive(Clone, Copy, Debug)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(usize, usize),
    Blob(usize, usize),
}

/// Rows of cells (see the module comment).
#[derive(Debug, Default)]
pub struct Batch {
    /// End (exclusive) of each row's cells.
    ends: Vec<usize>,
    /// Each cell's column position.
    pos: Vec<usize>,
    cells: Vec<Cell>,
    /// Text (always valid UTF-8) and blob bytes.
    bytes: Vec<u8>,
}

/// One row of a batch.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    /// The column position of each value.
    pub pos: &'a [usize],
    cells: &'a [Cell],
    bytes: &'a [u8],
}

impl Batch {
    /// Room for `rows` rows of `width` cells and `bytes` bytes of text.
    pub fn with_capacity(rows: usize, width: usize, bytes: usize) -> Batch {
        let cells = rows.saturating_mul(width);
        Batch {
            ends: Vec::with_capacity(rows),
            pos: Vec::with_capacity(cells),
            cells: Vec::with_capacity(cells),
            bytes: Vec::with_capacity(bytes),
        }
    }

    /// Rows as (column position, value) lists.
    pub fn from_rows(
        rows: impl IntoIterator<Item = impl IntoIterator<Item = (usize, Value)>>,
    ) -> Batch {
        let mut b = Batch::default();
        for row in rows {
            for (p, v) in row {
                b.push(p, v.to_ref());
            }
            b.end_row();
        }
        b
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Add a value for column `pos` to the row being built (text and blobs
    /// are copied).
    pub fn push(&mut self, pos: usize, v: ValueRef<'_>) {
        let cell = match v {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(i) => Cell::Int(i),
            ValueRef::Real(f) => Cell::Real(f),
            ValueRef::Text(t) => {
                // Text from a `Value` or a `&str` is UTF-8; anything else is
                // made so here, so `Row::get` never hands out bad text.
                let start = self.bytes.len();
                match std::str::from_utf8(t) {
                    Ok(s) => self.bytes.extend_from_slice(s.as_bytes()),
                    Err(_) => self
                        .bytes
                        .extend_from_slice(String::from_utf8_lossy(t).as_bytes()),
                }
                Cell::Text(start, self.bytes.len())
            }
            ValueRef::Blob(b) => {
                let start = self.bytes.len();
                self.bytes.extend_from_slice(b);
                Cell::Blob(start, self.bytes.len())
            }
        };
        self.pos.push(pos);
        self.cells.push(cell);
    }

    /// Add text given as UTF-16 code units (a JS string); a lone surrogate
    /// becomes U+FFFD, as `String::from_utf16_lossy` does. No allocation
    /// beyond the batch's buffer.
    pub fn push_utf16(&mut self, pos: usize, units: &[u16]) {
        let start = self.bytes.len();
        if units.iter().all(|&u| u < 0x80) {
            self.bytes.extend(units.iter().map(|&u| u as u8));
        } else {
            let mut b = [0u8; 4];
            for c in char::decode_utf16(units.iter().copied()) {
                let c = c.unwrap_or(char::REPLACEMENT_CHARACTER);
                self.bytes
                    .extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
        self.pos.push(pos);
        self.cells.push(Cell::Text(start, self.bytes.len()));
    }

    /// Close the row being built.
    pub fn end_row(&mut self) {
        self.ends.push(self.cells.len());
    }

    /// Row `r` (`r < len()`).
    pub fn row(&self, r: usize) -> Row<'_> {
        let start = if r == 0 { 0 } else { self.ends[r - 1] };
        let end = self.ends[r];
        Row {
            pos: &self.pos[start..end],
            cells: &self.cells[start..end],
            bytes: &self.bytes,
        }
    }

    /// The rows in order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        (0..self.len()).map(|r| self.row(r))
    }
}

impl<'a> Row<'a> {
    /// The number of values.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Value `p` of the row (`p < len()`).
    pub fn get(&self, p: usize) -> ValueRef<'a> {
        match self.cells[p] {
            Cell::Null => ValueRef::Null,
            Cell::Int(i) => ValueRef::Integer(i),
            Cell::Real(f) => ValueRef::Real(f),
            Cell::Text(s, e) => ValueRef::Text(&self.bytes[s..e]),
            Cell::Blob(s, e) => ValueRef::Blob(&self.bytes[s..e]),
        }
    }

    /// True when value `p` is SQL NULL.
    pub fn is_null(&self, p: usize) -> bool {
        matches!(self.cells[p], Cell::Null)
    }

    /// The values in order.
    pub fn values(&self) -> impl Iterator<Item = ValueRef<'a>> + '_ {
        (0..self.len()).map(|p| self.get(p))
    }

    /// The values, owned.
    pub fn to_values(&self) -> Vec<Value> {
        self.values().map(Value::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Real),
            ".{0,8}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Blob),
        ]
    }

    proptest! {
        /// Rows come back exactly as pushed, positions and values.
        #[test]
        fn rows_round_trip(rows in proptest::collection::vec(
            proptest::collection::vec((0usize..9, value()), 0..6), 0..12)) {
            let b = Batch::from_rows(rows.clone());
            prop_assert_eq!(b.len(), rows.len());
            for (r, row) in rows.iter().enumerate() {
                let got = b.row(r);
                let pos: Vec<usize> = row.iter().map(|c| c.0).collect();
                let vals: Vec<Value> = row.iter().map(|c| c.1.clone()).collect();
                prop_assert_eq!(got.pos, &pos[..]);
                prop_assert_eq!(got.to_values(), vals);
                for (p, v) in row.iter().enumerate() {
                    prop_assert_eq!(got.is_null(p), v.1.is_null());
                }
            }
        }

        /// UTF-16 text lands as `String::from_utf16_lossy` decodes it.
        #[test]
        fn utf16_is_decoded_lossily(units in proptest::collection::vec(
            prop_oneof![0u16..0x80, any::<u16>(), 0xD800u16..0xE000], 0..16)) {
            let mut b = Batch::default();
            b.push_utf16(3, &units);
            b.end_row();
            prop_assert_eq!(
                b.row(0).to_values(),
                vec![Value::Text(String::from_utf16_lossy(&units))]
            );
        }
    }

    #[test]
    fn bad_utf8_text_is_made_valid() {
        let mut b = Batch::default();
        b.push(0, ValueRef::Text(b"a\xffb"));
        b.end_row();
        assert_eq!(b.row(0).to_values(), vec![Value::Text("a\u{FFFD}b".into())]);
    }
}
