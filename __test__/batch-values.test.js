'use strict'
// upsertMany packs plain row objects into typed arrays and one string
// (lib/rows.js pack(), src/binding/cells.rs). Every value kind must
// land exactly as the one-row paths store it, errors must be the same typed
// errors naming the column, and a refused batch must write nothing.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')
const { rng } = require('./helpers/rng.js')

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-batch-'))
let n = 0
const SCHEMA = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a, b, c);
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a, b, c);`
}

function open () {
  const r = new Replicator({ path: path.join(TMP, `b-${n++}.db`), peerId: 1, heartbeatMs: 0 })
  r.migrate([SCHEMA])
  return r
}

const dump = (r) => r.all('SELECT id, a, typeof(a) AS ta, b, typeof(b) AS tb, c, typeof(c) AS tc FROM t ORDER BY id')
const patches = (r) => r.all('SELECT id, a, typeof(a) AS ta, b, typeof(b) AS tb, c, typeof(c) AS tc FROM t_patches ORDER BY _sequenceId')

// Every kind of cell, in every column position, with a row that leaves a
// column out (undefined) and rows whose key sets differ.
const VALUES = [
  'plain', '', 'héllo', 'emoji \u{1F600} and more', 'lone \ud800 surrogate', 'nul \u0000 inside', 'x'.repeat(5000),
  0, -0, 1, -1, 1.5, -2.25, 2 ** 53 - 1, 2 ** 53, 2 ** 60, 1e300, -1e-300, Infinity, -Infinity,
  null, true, false, 10n, -(2n ** 63n), Buffer.from([0, 1, 255]), new Uint8Array([7, 8]), Buffer.alloc(0)
]

function rows () {
  const out = []
  for (let i = 0; i < VALUES.length; i++) {
    out.push({ id: i + 1, a: VALUES[i], b: VALUES[(i + 7) % VALUES.length], c: VALUES[(i + 13) % VALUES.length] })
  }
  out.push({ id: 100, a: 'only a', b: undefined })
  out.push({ c: 'key last', id: 101 })
  out.push({ id: 102 })
  return out
}

test('upsertMany stores every value kind as upsert does, one row at a time', () => {
  const many = open()
  const one = open()
  const rs = rows()
  many.upsertMany('t', rs)
  for (const r of rs) one.upsert('t', r)
  assert.deepEqual(dump(many), dump(one))
  assert.deepEqual(patches(many), patches(one))
  const got = dump(many)
  assert.equal(got.length, rs.length)
  const byId = new Map(got.map((r) => [r.id, r]))
  assert.equal(byId.get(4).a, 'emoji \u{1F600} and more')
  assert.equal(byId.get(5).a, 'lone \ufffd surrogate')
  assert.equal(byId.get(6).a, 'nul \u0000 inside')
  assert.equal(byId.get(7).a.length, 5000)
  assert.equal(byId.get(9).ta, 'integer') // -0 is an integer 0
  assert.equal(byId.get(12).ta, 'real') // 1.5
  assert.equal(byId.get(15).ta, 'real') // 2^53: beyond the safe range
  assert.equal(byId.get(22).a, 1) // true
  assert.equal(byId.get(24).a, 10) // 10n
  assert.deepEqual(byId.get(26).a, Buffer.from([0, 1, 255]))
  assert.equal(byId.get(100).b, null)
  assert.equal(byId.get(101).c, 'key last')
  // A column left out keeps its value; an explicit null clears it.
  many.upsertMany('t', [{ id: 1, b: undefined, c: null }, { id: 2, a: 'new' }])
  const after = new Map(dump(many).map((r) => [r.id, r]))
  assert.equal(after.get(1).a, 'plain')
  assert.deepEqual(after.get(1).b, byId.get(1).b)
  assert.equal(after.get(1).c, null)
  assert.equal(after.get(2).a, 'new')
  assert.deepEqual(after.get(2).b, byId.get(2).b)
})

test('upsertMany refuses a bad cell with a typed error naming its column, and writes nothing', () => {
  const r = open()
  r.upsertMany('t', [{ id: 1, a: 'kept' }])
  const before = { rows: dump(r), patches: patches(r), seq: r.status().seq }
  const cases = [
    [{ id: 2, a: 'ok' }, { id: 3, b: NaN }, 'RangeError', /column b: NaN/],
    [{ id: 2, a: 'ok' }, { id: 3, c: { x: 1 } }, 'TypeError', /column c: objects cannot be stored/],
    [{ id: 2, a: 'ok' }, { id: 3, a: () => 1 }, 'TypeError', /column a/],
    [{ id: 2, a: 'ok' }, { id: 3, a: 2n ** 64n }, 'RangeError', /column a: bigint/],
    [{ id: 2, a: 'ok' }, { id: 3, a: Symbol('s') }, 'TypeError', /column a/],
    [{ id: 2, a: 'ok' }, { id: 3, nope: 1 }, 'Error', /no column nope/]
  ]
  for (const [x, y, kind, msg] of cases) {
    assert.throws(() => r.upsertMany('t', [x, y]), (e) => {
      assert.ok(typeof e.code === 'string' && e.code.startsWith('E_'), `code of ${e.message}`)
      if (kind !== 'Error') assert.equal(e.constructor.name, kind, e.message)
      assert.match(e.message, msg)
      return true
    })
    assert.deepEqual(dump(r), before.rows)
    assert.deepEqual(patches(r), before.patches)
    assert.equal(r.status().seq, before.seq)
  }
})

test('a large batch of mixed rows lands whole, strings intact', () => {
  const r = open()
  const rs = []
  for (let i = 0; i < 20000; i++) {
    rs.push({ id: i + 1, a: i % 3 === 0 ? `s-${i}-\u00e9\u{1F680}` : i, b: i % 5 === 0 ? null : `b${i}`, c: i % 7 === 0 ? undefined : i / 4 })
  }
  r.upsertMany('t', rs)
  const got = r.all('SELECT id, a, b, c FROM t ORDER BY id')
  assert.equal(got.length, rs.length)
  for (let i = 0; i < rs.length; i += 997) {
    const want = rs[i]
    assert.equal(got[i].a, want.a)
    assert.equal(got[i].b, want.b)
    assert.equal(got[i].c, want.c === undefined ? null : want.c)
  }
  assert.equal(got[19998].a, `s-19998-\u00e9\u{1F680}`)
})

// The native side of upsertMany takes whatever it is handed: a packed batch
// built wrong (by hand, or by a future bug in pack()) must be refused with a
// typed error, never crash or write, whatever the lengths claim.
test('a malformed packed batch is refused with E_ARG and writes nothing', () => {
  const r = open()
  r.upsertMany('t', [{ id: 1, a: 'kept' }])
  const before = { rows: dump(r), patches: patches(r), seq: r.status().seq }
  const cols = ['id', 'a']
  const u8 = (...x) => new Uint8Array(x)
  const f64 = (...x) => new Float64Array(x)
  const cases = {
    'not an array': 5,
    'three parts': [u8(2, 2), f64(2, 3), ''],
    'five parts': [u8(2, 2), f64(2, 3), '', [], []],
    'tags not a Uint8Array': [f64(2, 2), f64(2, 3), '', []],
    'nums not a Float64Array': [u8(2, 2), u8(2, 3), '', []],
    'text not a string': [u8(2, 3), f64(2, 3), [1, 2, 3], []],
    'others not an array': [u8(2, 2), f64(2, 3), '', 'x'],
    'cells not a multiple of columns': [u8(2, 2, 2), f64(2, 3, 4), '', []],
    'fewer nums than tags': [u8(2, 2), f64(2), '', []],
    'an unknown tag': [u8(2, 9), f64(2, 0), '', []],
    'a negative text length': [u8(2, 3), f64(2, -1), 'abc', []],
    'a fractional text length': [u8(2, 3), f64(2, 1.5), 'abc', []],
    'a NaN text length': [u8(2, 3), f64(2, NaN), 'abc', []],
    'an infinite text length': [u8(2, 3), f64(2, Infinity), 'abc', []],
    'a huge text length': [u8(2, 3), f64(2, 1e300), 'abc', []],
    'a text length past the end': [u8(2, 3), f64(2, 4), 'abc', []],
    'text left over': [u8(2, 3), f64(2, 2), 'abc', []],
    'a missing other': [u8(2, 4), f64(2, 0), '', []],
    'an other left over': [u8(2, 2), f64(2, 3), '', [true]],
    'a NaN number': [u8(2, 2), f64(2, NaN), '', []],
    'a NULL key': [u8(1, 2), f64(0, 3), '', []]
  }
  for (const [name, packed] of Object.entries(cases)) {
    assert.throws(() => r._native.upsertPacked('t', cols, packed), (e) => {
      assert.ok(typeof e.code === 'string' && e.code.startsWith('E_'), `${name}: code of ${e.message}`)
      return true
    }, name)
  }
  assert.throws(() => r._native.upsertPacked('t', [], [u8(), f64(), '', []]), (e) => typeof e.code === 'string')
  assert.deepEqual(dump(r), before.rows)
  assert.deepEqual(patches(r), before.patches)
  assert.equal(r.status().seq, before.seq)
  // And a well-formed one still lands.
  r._native.upsertPacked('t', cols, [u8(2, 3, 2, 1), f64(2, 3, 3, 0), 'two', []])
  assert.deepEqual(r.all('SELECT id, a FROM t ORDER BY id'), [{ id: 1, a: 'kept' }, { id: 2, a: 'two' }, { id: 3, a: null }])
})

// Text past the packing limit (16M UTF-16 units in one batch) goes through
// the native object path instead of one joined string: the batch still
// lands whole and exact.
test('a batch with more text than one packed string holds lands intact', () => {
  const r = new Replicator({ path: path.join(TMP, `b-${n++}.db`), peerId: 1, heartbeatMs: 0, maxFrameBytes: 4 << 20 })
  r.migrate([SCHEMA])
  const big = (i) => `${i}\u{1F600}`.padEnd(1 << 20, String.fromCharCode(97 + i % 26))
  const rs = []
  for (let i = 0; i < 18; i++) rs.push({ id: i + 1, a: big(i), b: i, c: i % 2 ? null : 'small' })
  r.upsertMany('t', rs)
  const got = r.all('SELECT id, length(a) AS len, substr(a, 1, 4) AS head, b, c FROM t ORDER BY id')
  assert.equal(got.length, 18)
  for (let i = 0; i < 18; i++) {
    const want = rs[i]
    assert.equal(got[i].len, [...want.a].length, `row ${i + 1} length`)
    assert.equal(got[i].head, [...want.a].slice(0, 4).join(''))
    assert.equal(got[i].b, i)
    assert.equal(got[i].c, want.c)
  }
  assert.equal(r.get('SELECT a FROM t WHERE id = 7').a, rs[6].a)
})

test('rows whose keys differ from the first row, even only by inherited ones, land as upsert stores them', () => {
  const proto = { c: 'inherited' }
  const withProto = Object.assign(Object.create(proto), { id: 5, a: 'own' })
  const cases = [
    // same keys, then one key more, one less, another order
    [{ id: 1, a: 1 }, { id: 2, a: 2 }, { id: 3, a: 3, b: 'extra' }],
    [{ id: 1, a: 1, b: 1 }, { id: 2, a: 2 }],
    [{ id: 1, a: 1 }, { a: 2, id: 2 }],
    // for...in sees `c` on the prototype, Object.keys does not
    [{ id: 4, a: 'x', c: 'own c' }, withProto],
    [withProto, { id: 6, a: 'y', c: 'z' }],
    // a null-prototype row
    [{ id: 7, a: 1 }, Object.assign(Object.create(null), { id: 8, a: 2 })]
  ]
  for (const rs of cases) {
    const many = open()
    const one = open()
    many.upsertMany('t', rs)
    for (const r of rs) one.upsert('t', r)
    assert.deepEqual(dump(many), dump(one), JSON.stringify(rs))
    assert.deepEqual(patches(many), patches(one), JSON.stringify(rs))
  }
  // An enumerable property on Object.prototype is inherited by every plain
  // row: a column one row owns must not be read from another's prototype.
  Object.prototype.c = 'polluted' // eslint-disable-line no-extend-native
  try {
    const rs = [{ id: 9, a: 1, c: 'own' }, { id: 10, a: 2 }, { id: 11, a: 3, c: null }]
    const many = open()
    const one = open()
    many.upsertMany('t', rs)
    for (const r of rs) one.upsert('t', r)
    assert.deepEqual(dump(many), dump(one))
    assert.equal(dump(many)[1].c, null)
  } finally {
    delete Object.prototype.c
  }
})

// A seeded generator of batches: random value kinds (ASCII and non-ASCII
// text, lone surrogates, numbers on both sides of 2^53, bytes, bigint,
// booleans, null, undefined), random key subsets and orders, repeated ids.
function randomValue (r) {
  const units = () => Array.from({ length: Math.floor(r() * 12) }, () =>
    r() < 0.6 ? 32 + Math.floor(r() * 95) : r() < 0.5 ? 0x80 + Math.floor(r() * 0x80) : Math.floor(r() * 0x10000))
  switch (Math.floor(r() * 10)) {
    case 0: return null
    case 1: return undefined
    case 2: return String.fromCharCode(...units())
    case 3: return 'ascii-' + Math.floor(r() * 1e6)
    case 4: return Math.floor(r() * 2 ** 20) - 2 ** 19
    case 5: return (r() - 0.5) * 1e6
    case 6: return 2 ** 53 + Math.floor(r() * 8)
    case 7: return Buffer.from(units().map((u) => u & 0xff))
    case 8: return BigInt(Math.floor(r() * 1e9))
    default: return r() < 0.5
  }
}

test('random batches land as upsert stores them, row by row (200 seeded batches)', () => {
  const KEYS = ['a', 'b', 'c']
  for (let seed = 1; seed <= 200; seed++) {
    const r = rng(seed)
    const rows = []
    const n = 1 + Math.floor(r() * 12)
    const sameShape = r() < 0.5
    for (let i = 0; i < n; i++) {
      const row = {}
      const keys = sameShape ? KEYS : KEYS.filter(() => r() < 0.7)
      if (!sameShape && r() < 0.5) keys.reverse()
      const idFirst = sameShape || r() < 0.5
      if (idFirst) row.id = 1 + Math.floor(r() * 6)
      for (const k of keys) row[k] = randomValue(r)
      if (!idFirst) row.id = 1 + Math.floor(r() * 6)
      rows.push(row)
    }
    const many = open()
    const one = open()
    many.upsertMany('t', rows)
    for (const row of rows) one.upsert('t', row)
    assert.deepEqual(dump(many), dump(one), `seed ${seed}`)
    assert.deepEqual(patches(many), patches(one), `seed ${seed}`)
    many.close({ timeoutMs: 0 })
    one.close({ timeoutMs: 0 })
  }
})

test('rows that are not plain objects take the object path: stored as upsert stores them, the first bad row decides the error', () => {
  class Row { constructor (o) { Object.assign(this, o) } get ignored () { return 'getter' } }
  const many = open()
  const one = open()
  const rs = [new Row({ id: 1, a: 'x' }), new Row({ id: 2, b: 2 }), { id: 3, c: null }]
  many.upsertMany('t', rs)
  for (const r of rs) one.upsert('t', r)
  assert.deepEqual(dump(many), dump(one))
  assert.equal(dump(many).length, 3)
  assert.throws(() => many.upsertMany('t', [new Row({ a: 1 }), new Row({ id: 9, zz: 1 })]), { code: 'E_ARG' })
  assert.throws(() => many.upsertMany('t', [new Row({ id: 9, zz: 1 }), new Row({ a: 1 })]), { code: 'E_SCHEMA' })
  assert.equal(dump(many).length, 3)
})
