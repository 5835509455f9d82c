'use strict'
// prepare().run() packs its parameters into typed arrays when each is a
// number, a string or null (lib/sql.js `_pack`); anything else goes over
// value by value. Both ways must bind exactly the same values: random
// parameters of every kind run through a statement on the fast path and
// through one held on the slow path, and the stored cells (type and
// value), the patches and the errors must match.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')
const { rng } = require('./helpers/rng.js')

const SCHEMA = `CREATE TABLE t (id INTEGER PRIMARY KEY, a, b, c);
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, a, b, c);`

const KINDS = [
  () => 0, () => -0, () => 1, () => -7, () => 2 ** 53 - 1, () => 2 ** 53 + 2, () => -(2 ** 60),
  () => 0.5, () => -1e-300, () => 1e300, () => Infinity, () => -Infinity, () => NaN,
  () => '', () => 'plain', () => 'héllo 😀', () => '\ud800 lone', () => 'x'.repeat(3000), () => '\u0000nul',
  () => null, () => undefined, () => true, () => 12n, () => Buffer.from([1, 2, 3]), () => ({})
]

function open (dir, name) {
  const r = new Replicator({ path: path.join(dir, `${name}.db`), peerId: name === 'fast' ? 1 : 2, heartbeatMs: 0 })
  r.migrate([{ up: SCHEMA }])
  return r
}

// A test body run with a fresh replicator in its own directory, closed and
// removed after.
function withReplicator (fn) {
  return async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-packed-'))
    const r = open(dir, 'fast')
    try {
      await fn(r)
    } finally {
      await r.close({ timeoutMs: 0 })
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

function cells (r) {
  return r.prepare('SELECT id, typeof(a) AS ta, quote(a) AS qa, typeof(b) AS tb, quote(b) AS qb, typeof(c) AS tc, quote(c) AS qc FROM t ORDER BY id').all()
}

function patchCells (r) {
  return r.prepare('SELECT _sequenceId AS seq, id, quote(a) AS qa, quote(b) AS qb, quote(c) AS qc, _quiltNulls AS nulls FROM t_patches ORDER BY _sequenceId').all()
}

function attempt (fn) {
  try {
    return { ok: fn() }
  } catch (e) {
    return { code: e.code, name: e.name, message: e.message }
  }
}

test('packed parameters bind exactly what value-by-value parameters bind', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-packed-'))
  const fast = open(dir, 'fast')
  const slow = open(dir, 'slow')
  let packed = 0
  const runPacked = fast._native.runPacked.bind(fast._native)
  fast._native.runPacked = (...a) => { packed++; return runPacked(...a) }
  slow._native.runPacked = () => { throw new Error('the slow statement must not take the packed path') }
  try {
    const forms = [
      ['INSERT INTO t (id, a, b, c) VALUES (?, ?, ?, ?)', (id, v) => [[id, ...v]]],
      ['INSERT INTO t (id, a, b, c) VALUES (?, ?, ?, ?)', (id, v) => [id, ...v]],
      ['INSERT INTO t (id, a, b, c) VALUES (@id, @a, $b, :c)', (id, v) => [{ id, a: v[0], b: v[1], c: v[2] }]],
      ['UPDATE t SET a = ?2, b = ?3, c = ?4 WHERE id = ?1', (id, v) => [[id - 1, ...v]]],
      // Too few, too many: checked natively either way.
      ['INSERT INTO t (id, a, b, c) VALUES (?, ?, ?, ?)', (id, v) => [id, ...v.slice(0, 2)]],
      ['INSERT INTO t (id, a) VALUES (?, ?)', (id, v) => [id, ...v]]
    ]
    const stmts = forms.map(([sql, args]) => ({ f: fast.prepare(sql), s: slow.prepare(sql), args }))
    for (const st of stmts) st.s._pack = () => undefined
    const rand = rng(20261206)
    for (let id = 1; id <= 600; id++) {
      const pick = () => KINDS[Math.floor(rand() * KINDS.length)]()
      // Mostly packable values, so both paths are exercised.
      const common = () => KINDS[Math.floor(rand() * 20)]()
      const vals = [0, 1, 2].map(() => (rand() < 0.85 ? common() : pick()))
      const st = stmts[Math.floor(rand() * stmts.length)]
      const a = attempt(() => st.f.run(...st.args(id, vals)))
      const b = attempt(() => st.s.run(...st.args(id, vals)))
      if (a.ok) assert.equal(a.ok.token.split('.')[1], b.ok && b.ok.token.split('.')[1], `id ${id}: ${JSON.stringify(b)}`)
      else assert.deepEqual(a, b, `id ${id}: both fail alike`)
      if (a.ok) assert.deepEqual([a.ok.changes, a.ok.lastInsertRowid], [b.ok.changes, b.ok.lastInsertRowid])
    }
    assert.ok(packed > 300, `the packed path ran ${packed} times`)
    // Reads with packed parameters find what value-by-value ones find.
    const finds = ['SELECT id, a, b, c FROM t WHERE a IS ? OR b IS ? OR c IS ? ORDER BY id', 'SELECT ? AS x, ? AS y, ? AS z']
    const reads = finds.map((sql) => ({ f: fast.prepare(sql), s: slow.prepare(sql) }))
    for (const st of reads) st.s._pack = () => undefined
    let packedReads = 0
    const rowsPacked = fast._native.rowsPacked.bind(fast._native)
    fast._native.rowsPacked = (...a) => { packedReads++; return rowsPacked(...a) }
    const getPacked = fast._native.getPacked.bind(fast._native)
    let packedRows = 0
    fast._native.getPacked = (...a) => {
      packedReads++
      const r = getPacked(...a)
      if (typeof r === 'string') packedRows++
      return r
    }
    const slowRows = slow._native.rowsPacked.bind(slow._native)
    let slowPacked = 0
    slow._native.rowsPacked = (...a) => { slowPacked++; return slowRows(...a) }
    for (let i = 0; i < 200; i++) {
      const vals = [0, 1, 2].map(() => KINDS[Math.floor(rand() * (rand() < 0.9 ? 20 : KINDS.length))]())
      const st = reads[i % reads.length]
      const args = i % 3 === 0 ? [vals] : vals
      assert.deepEqual(attempt(() => st.f.all(...args)), attempt(() => st.s.all(...args)), `all() ${i}`)
      assert.deepEqual(attempt(() => st.f.get(...args)), attempt(() => st.s.get(...args)), `get() ${i}`)
    }
    assert.ok(packedReads > 300, `packed reads: ${packedReads}`)
    assert.ok(packedRows > 50, `rows packed: ${packedRows}`)
    assert.equal(slowPacked, 0, 'the slow statements never took the packed path')
    const fc = cells(fast)
    assert.ok(fc.length > 200, `rows stored: ${fc.length}`)
    assert.deepEqual(fc, cells(slow))
    assert.deepEqual(patchCells(fast), patchCells(slow))
  } finally {
    await fast.close({ timeoutMs: 0 })
    await slow.close({ timeoutMs: 0 })
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

test('a statement with no parameters, or given the wrong kind of argument, still runs or fails as before', withReplicator(async (r) => {
  assert.equal(r.prepare("INSERT INTO t (id, a) VALUES (1, 'z')").run().changes, 1)
  const named = r.prepare('UPDATE t SET a = @a WHERE id = @id')
  assert.equal(named.run({ id: 1, a: 'y' }).changes, 1)
  // An array binds in the statement's order: @a, then @id.
  assert.equal(named.run(['w', 1]).changes, 1)
  assert.throws(() => named.run({ id: 1 }), (e) => e.code === 'E_ARG')
  assert.throws(() => named.run(1), (e) => e.code === 'E_ARG')
  assert.deepEqual(r.prepare('SELECT a FROM t').all(), [{ a: 'w' }])
  // A forged packed call is refused, not read past its array: io is
  // [changes, rowid, count, tag per parameter..., number per parameter...].
  const st = r.prepare('INSERT INTO t (id, a) VALUES (?, ?)')
  const forged = (io, text) => () => r._native.runPacked(st._handle, new Float64Array(io), text)
  const refused = (e) => e.code === 'E_ARG'
  assert.throws(forged([0, 0, 2, 2, 3, 2, 10], 'abc'), refused, 'text longer than its lengths')
  assert.throws(forged([0, 0, 2, 2, 3, 2, 10], 'a'), refused, 'text shorter than its lengths')
  assert.throws(forged([0, 0, 2, 2, 9, 2, 10], ''), refused, 'an unknown tag')
  assert.throws(forged([0, 0, 2, 2, 2.5, 2, 10], ''), refused, 'a tag that is not an integer')
  assert.throws(forged([0, 0, 2, 2, 3, 2, -1], ''), refused, 'a negative length')
  assert.throws(forged([0, 0, 2, 2, 3, 2, 1e300], 'a'), refused, 'a huge length')
  assert.throws(forged([0, 0, 3, 2, 2, 2, 2], ''), refused, 'a count past the array')
  assert.throws(forged([0, 0, 1e300, 2, 2], ''), refused, 'a huge count')
  assert.throws(forged([0, 0, -1, 2, 2], ''), refused, 'a negative count')
  assert.throws(forged([0, 0, 1.5, 2, 2], ''), refused, 'a count that is not an integer')
  assert.throws(forged([0, 0], ''), refused, 'no count')
  assert.throws(forged([0, 0, 3, 2, 2, 2, 2, 2, 2], ''), refused, 'more parameters than the statement binds')
  assert.throws(() => r._native.rowsPacked(st._handle, new Float64Array([0, 0, 1, 7, 1]), '', true), refused)
  assert.throws(() => r._native.getPacked(st._handle, new Float64Array([0, 0, 1, 7, 1]), ''), refused)
  assert.throws(() => r._native.runPacked(st._handle, new Uint8Array(7), ''), (e) => e instanceof TypeError)
  assert.equal(r.prepare('SELECT count(*) AS n FROM t').get().n, 1)
}))

test('get() returns the same row whether it comes back packed or as an object', withReplicator(async (r) => {
  const put = r.prepare('INSERT INTO t (id, a, b, c) VALUES (?, ?, ?, ?)')
  put.run(1, 'plain', -0, null)
  put.run(2, 'ab😀c\u00e9', '', 2 ** 53 - 1)
  put.run(3, 2 ** 53 + 2, 0.5, '\u0000x')
  put.run(4, BigInt('9007199254740993'), Buffer.from([1, 2]), 'z')
  put.run(5, Infinity, -Infinity, 'x'.repeat(5000))
  const queries = [
    'SELECT a, b, c FROM t WHERE id = ?',
    'SELECT * FROM t WHERE id = ?',
    'SELECT a AS x, b AS x, c AS "__proto__", id FROM t WHERE id = ?',
    'SELECT a, b || c AS bc, length(a) AS n FROM t WHERE id = ?'
  ]
  for (const sql of queries) {
    const fast = r.prepare(sql)
    const slow = r.prepare(sql)
    slow._pack = () => undefined
    for (let id = 0; id <= 6; id++) {
      const a = fast.get(id)
      const b = slow.get(id)
      assert.deepEqual(a, b, `${sql} with id ${id}`)
      if (b !== undefined) assert.deepEqual(Object.getPrototypeOf(a), Object.getPrototypeOf(b))
      if (b !== undefined) assert.deepEqual(Object.keys(a), Object.keys(b))
    }
  }
  // After a migration adds a column, SELECT * returns it (the row no
  // longer matches the columns the statement was prepared with).
  const star = r.prepare('SELECT * FROM t WHERE id = ?')
  assert.deepEqual(Object.keys(star.get(1)), ['id', 'a', 'b', 'c'])
  r.migrate([{ up: SCHEMA }, { up: 'ALTER TABLE t ADD COLUMN d; ALTER TABLE t_patches ADD COLUMN d;' }])
  r.prepare('UPDATE t SET d = ? WHERE id = 1').run('new')
  assert.deepEqual(star.get(1), { id: 1, a: 'plain', b: 0, c: null, d: 'new' })
  assert.equal(star.get(7), undefined)
}))

test("run() returns its own result when a 'change' listener runs the same statement", withReplicator(async (r) => {
  const put = r.prepare('INSERT INTO t (id, a) VALUES (?, ?)')
  let inner = null
  r.on('change', (changes) => {
    // Synchronously, from inside the outer run(): the same statement.
    if (inner === null && changes[0].key.id === 1) inner = put.run(1000, 'inner')
  })
  const outer = put.run(1, 'outer')
  assert.deepEqual(inner, { changes: 1, lastInsertRowid: 1000, token: '1.2' })
  assert.deepEqual(outer, { changes: 1, lastInsertRowid: 1, token: '1.1' })
}))

// Named parameters given as one object are read by a function generated
// per statement (lib/rows.js `paramPacker`). SQLite's Tcl-style names
// (`$a::b(...)`) may hold quotes, backslashes and semicolons: such a name is
// only ever a string literal there, and binds like any other.
test('named parameters with quotes in their names bind, and nothing they spell runs', withReplicator(async (r) => {
  const odd = "x(a\"b'c\\d];globalThis.__quiltParamPwned=1;//)"
  const st = r.prepare(`INSERT INTO t (id, a, b) VALUES (@id, $${odd}, :plain)`)
  assert.deepEqual(st.run({ id: 1, [odd]: 'odd', plain: 2.5 }).changes, 1)
  assert.deepEqual(st.run({ id: 2, [odd]: null, plain: 'p' }).changes, 1)
  // A value that is not packed (a bigint) takes the value-by-value path.
  assert.deepEqual(st.run({ id: 3, [odd]: 12n, plain: 1 }).changes, 1)
  assert.equal(globalThis.__quiltParamPwned, undefined)
  assert.deepEqual(r.all('SELECT id, a, b FROM t ORDER BY id'), [{ id: 1, a: 'odd', b: 2.5 }, { id: 2, a: null, b: 'p' }, { id: 3, a: 12, b: 1 }])
}))

// Where code cannot be generated (node
// --disallow-code-generation-from-strings), the packers are loops over the
// names: the same rows are stored. (A Node flag: not run under Bun.)
test('without code generation from strings, upsertMany and named parameters store the same rows', { skip: process.versions.bun ? 'a Node flag' : false }, async () => {
  const { execFileSync } = require('node:child_process')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-nocodegen-'))
  try {
    const script = path.join(__dirname, 'fixtures', 'no-codegen.js')
    const run = (flags) => JSON.parse(execFileSync(process.execPath, [...flags, script, dir, SCHEMA], { encoding: 'utf8', timeout: 30000 }))
    const without = run(['--disallow-code-generation-from-strings'])
    fs.rmSync(path.join(dir, 'nocodegen.db'), { force: true })
    const withGen = run([])
    assert.equal(without.canEval, false)
    assert.equal(withGen.canEval, true)
    assert.deepEqual(without.rows, withGen.rows)
    assert.deepEqual(without.rows, [
      { id: 1, a: 'x', b: 1.5, c: null }, { id: 2, a: 'y', b: 2, c: 'z' },
      { id: 3, a: 'only a', b: null, c: null }, { id: 4, a: null, b: 7, c: null },
      { id: 5, a: 'named', b: null, c: 3 }, { id: 6, a: 12, b: 'slow path', c: null }
    ])
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
