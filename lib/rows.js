'use strict'
// How rows cross to the native side: `upsertMany`'s plain row objects as
// column names once and cells packed into typed arrays (`columnar`,
// `pack`), and one `upsert` row as names and values (`oneRow`). Anything
// else goes to the native object path, which checks it and reports what is
// wrong: these choose a fast path, they do not validate.
// src/binding/cells.rs reads what `pack` builds.

// A plain object (no prototype of its own, so nothing inherited to read).
const isRowObject = (r) => {
  if (r === null || typeof r !== 'object') return false
  const p = Object.getPrototypeOf(r)
  return p === Object.prototype || p === null
}

/**
 * Rows as column names once (their keys in first-seen order) and their
 * cells packed by `pack()` (a row lacking a column leaves it not given): the
 * native side then reads typed arrays instead of properties by name. `null` when
 * `rows` is not a non-empty array of row objects with some column: those go
 * to the native `upsertMany`, which checks them and reports what is wrong
 * (this is the choice of a fast path, not a check).
 */
function columnar (rows) {
  if (!Array.isArray(rows) || rows.length === 0 || !isRowObject(rows[0])) return null
  const cols = Object.keys(rows[0])
  let same = true
  // for...in lists a plain row's own keys, plus any enumerable ones added
  // to Object.prototype: then only Object.keys tells.
  const sameKeys = inheritsKeys() ? ownKeysAre : keysAre
  for (let i = 1; i < rows.length; i++) {
    const r = rows[i]
    if (!isRowObject(r)) return null
    if (same && !sameKeys(r, cols)) same = false
  }
  if (!same) {
    const seen = new Set(cols)
    for (const r of rows) for (const k of Object.keys(r)) if (!seen.has(k)) { seen.add(k); cols.push(k) }
  }
  if (cols.length === 0) return null
  const packed = pack(rows, cols, !same)
  return packed === null ? null : [cols, packed]
}

/**
 * True when `for...in` over `row` yields exactly `cols`, in order. For a
 * plain row while `Object.prototype` has no enumerable key, those are its
 * own keys in `Object.keys` order; no array per row (measured: a quarter
 * of the cost of `Object.keys` on 100k rows).
 */
function keysAre (row, cols) {
  let j = 0
  for (const k in row) {
    if (k !== cols[j]) return false
    j++
  }
  return j === cols.length
}

function ownKeysAre (row, cols) {
  const keys = Object.keys(row)
  return keys.length === cols.length && keys.every((k, j) => k === cols[j])
}

/** True when someone added an enumerable property to `Object.prototype`. */
function inheritsKeys () {
  for (const k in Object.prototype) return k !== undefined
  return false
}

// Cell tags of a packed batch (src/binding/cells.rs reads them).
const NULL = 1
const NUMBER = 2
const TEXT = 3
const OTHER = 4
// Most UTF-16 code units of text one packed batch joins (32 MB): a batch
// with more goes through the native object path, string by string, so a
// large batch never meets V8's string length limit (2^29 units).
const MAX_PACKED_TEXT = 1 << 24

/**
 * Rows' cells, row by row, as `[tags, nums, text, others]`: a tag per cell
 * (0, the default, is a column not given); a number, or a string's length,
 * in `nums`; every string joined in `text`; anything else (bigint, boolean,
 * Buffer, NaN, a wrong type) in `others`, checked natively as a lone value.
 * Two typed arrays and a string cross instead of a handle per cell. `null`
 * when the text would pass `MAX_PACKED_TEXT`. `own`: read only a row's own
 * properties (when rows' keys differ, a column one row owns may be
 * inherited by another, from an enumerable property added to
 * `Object.prototype`; `upsert` would not see it).
 */
function pack (rows, cols, own) {
  const n = cols.length
  const tags = new Uint8Array(rows.length * n)
  const nums = new Float64Array(rows.length * n)
  const others = []
  const text = packerFor(cols, own)(rows, tags, nums, others, MAX_PACKED_TEXT)
  return text === null ? null : [tags, nums, text, others]
}

// Packers generated per column list (and per statement's parameter
// names, `paramPacker`): a property read by a constant name is a named load
// that V8 caches per row shape, where `r[cols[j]]` is a keyed load by a
// changing name (measured on 100k rows of 4 columns: 24 ms packed
// generically, 7 ms generated). Names enter the source only as JSON string
// literals.
const packers = new Map()
const MAX_PACKERS = 128

// Where code cannot be generated (`node
// --disallow-code-generation-from-strings`, a content security policy):
// the same packers as loops over the names, checked by the same tests.
let canGenerate = true

function generated (key, build, loop) {
  let f = packers.get(key)
  if (f === undefined) {
    if (packers.size >= MAX_PACKERS) packers.clear()
    if (canGenerate) {
      try {
        f = build()
      } catch (e) {
        if (!(e instanceof EvalError)) throw e
        canGenerate = false
      }
    }
    if (f === undefined) f = loop()
    packers.set(key, f)
  }
  return f
}

function packerFor (cols, own) {
  return generated((own ? 'own' : 'all') + JSON.stringify(cols), () => {
    let cells = ''
    for (const c of cols) {
      const name = JSON.stringify(c)
      cells += `
    v = ${own ? `Object.hasOwn(r, ${name}) ? r[${name}] : undefined` : `r[${name}]`}
    if (typeof v === 'number' && v === v) { tags[k] = ${NUMBER}; nums[k] = v }
    else if (typeof v === 'string') {
      tags[k] = ${TEXT}; nums[k] = v.length; size += v.length
      if (size > max) return null
      text += v
    } else if (v === null) tags[k] = ${NULL}
    else if (v !== undefined) { tags[k] = ${OTHER}; others.push(v) }
    k++`
    }
    // Strings are concatenated, not pushed and joined: V8 and
    // JavaScriptCore build a rope that is flattened once when it crosses.
    // eslint-disable-next-line no-new-func
    return new Function('rows', 'tags', 'nums', 'others', 'max', `'use strict'
  let text = ''
  let size = 0
  let k = 0
  let v
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]${cells}
  }
  return text`)
  }, () => (rows, tags, nums, others, max) => {
    let text = ''
    let size = 0
    let k = 0
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]
      for (let j = 0; j < cols.length; j++, k++) {
        const v = own && !Object.hasOwn(r, cols[j]) ? undefined : r[cols[j]]
        if (typeof v === 'number' && v === v) { // eslint-disable-line no-self-compare
          tags[k] = NUMBER
          nums[k] = v
        } else if (typeof v === 'string') {
          tags[k] = TEXT
          nums[k] = v.length
          size += v.length
          if (size > max) return null
          text += v
        } else if (v === null) tags[k] = NULL
        else if (v !== undefined) {
          tags[k] = OTHER
          others.push(v)
        }
      }
    }
    return text
  })
}

/**
 * For a statement whose parameters are all named: `(p, io) => text`, which
 * packs `p`'s values by those names as `Statement#_pack` packs an array
 * (count in io[2], a tag each from io[3], then numbers or string lengths;
 * strings joined in the returned text), or returns `undefined` at the first
 * value that is not a number (not NaN), a string or null.
 */
function paramPacker (names) {
  const n = names.length
  return generated('params' + JSON.stringify(names), () => {
    let cells = ''
    names.forEach((c, i) => {
      cells += `
  v = p[${JSON.stringify(c)}]
  if (typeof v === 'number' && v === v) { io[${3 + i}] = ${NUMBER}; io[${3 + n + i}] = v }
  else if (typeof v === 'string') { io[${3 + i}] = ${TEXT}; io[${3 + n + i}] = v.length; text += v }
  else if (v === null) io[${3 + i}] = ${NULL}
  else return undefined`
    })
    // eslint-disable-next-line no-new-func
    return new Function('p', 'io', `'use strict'
  let text = ''
  let v
  io[2] = ${n}${cells}
  return text`)
  }, () => (p, io) => packParams(names.map((k) => p[k]), io))
}

/**
 * Parameters given as a list, packed into `io` as `paramPacker` packs
 * them: their count in io[2], a tag each from io[3], then numbers or
 * string lengths; the strings joined are returned. `undefined` at the
 * first value that is not a number (not NaN), a string or null.
 */
function packParams (vals, io) {
  const n = vals.length
  io[2] = n
  let text = ''
  for (let i = 0; i < n; i++) {
    const v = vals[i]
    if (typeof v === 'number' && v === v) { // eslint-disable-line no-self-compare
      io[3 + i] = NUMBER
      io[3 + n + i] = v
    } else if (typeof v === 'string') {
      io[3 + i] = TEXT
      io[3 + n + i] = v.length
      text += v
    } else if (v === null) io[3 + i] = NULL
    else return undefined
  }
  return text
}

/**
 * One plain row object as `[names, values]` for the native `upsertColumns`
 * (measured: reading an object's keys natively costs ~10% of an autocommit
 * `upsert`); `null` for anything else, which the native `upsert` checks and
 * reports. Same meaning: an `undefined` value is a column not given.
 */
function oneRow (row) {
  if (row === null || typeof row !== 'object' || Object.getPrototypeOf(row) !== Object.prototype) return null
  const cols = Object.keys(row)
  const n = cols.length
  if (n === 0) return null
  const vals = new Array(n)
  for (let i = 0; i < n; i++) vals[i] = row[cols[i]]
  return [cols, vals]
}

module.exports = { columnar, oneRow, paramPacker, packParams, cellTags: { NULL, NUMBER, TEXT } }
