'use strict'
// Acceptance tests for the local API of quilt-sqlite (/work/shared/API.md):
// constructor options, migrate, local writes and their tokens, NULL
// semantics, tombstones, reads, HLC stamps, status, metrics, waitFor,
// readYourWrites, close/E_CLOSED, and native panics surfacing as JS errors.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const HLC_EPOCH = 1735689600000
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-api-'))
let fileNo = 0
const opened = []

const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER, c REAL, d BLOB, deletedAt INTEGER) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a TEXT, b INTEGER, c REAL, d BLOB, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE t_patches; DROP TABLE t;'
}
// A composite key (the layout of API.md) and a table without deletedAt.
const TODO = {
  up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER,
         PRIMARY KEY (id, tenantId)) STRICT;
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE kv (k TEXT NOT NULL PRIMARY KEY, v TEXT) STRICT;
       CREATE TABLE kv_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         k TEXT, v TEXT) STRICT;`,
  down: 'DROP TABLE todo_patches; DROP TABLE todo; DROP TABLE kv_patches; DROP TABLE kv;'
}

function file () {
  return path.join(TMP, `api-${process.pid}-${fileNo++}.db`)
}

function open (opts = {}) {
  const r = new Replicator({ path: file(), heartbeatMs: 0, ...opts })
  opened.push(r)
  return r
}

function openMigrated (opts) {
  const r = open(opts)
  r.migrate([T, TODO])
  return r
}

function codeOf (fn) {
  try {
    fn()
  } catch (e) {
    return e
  }
  assert.fail('expected a throw')
}

function assertArgError (fn, Klass, what) {
  const e = codeOf(fn)
  if (Klass) assert.ok(e instanceof Klass, `${what}: expected ${Klass.name}, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`)
  else assert.ok(e instanceof TypeError || e instanceof RangeError, `${what}: expected TypeError or RangeError, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`)
  assert.equal(e.code, 'E_ARG', `${what}: code`)
}

function assertCode (fn, code, what) {
  const e = codeOf(fn)
  assert.ok(e instanceof Error, `${what}: an Error`)
  assert.equal(e.code, code, `${what}: expected ${code}, got ${e.code}: ${e.message}`)
  return e
}

test.after(async () => {
  for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {})
  fs.rmSync(TMP, { recursive: true, force: true })
})

// ----- constructor ---------------------------------------------------------

test('constructor: missing or wrong options throw TypeError with E_ARG', () => {
  assertArgError(() => new Replicator(), TypeError, 'no options')
  assertArgError(() => new Replicator(null), TypeError, 'null options')
  assertArgError(() => new Replicator('x.db'), TypeError, 'string options')
  assertArgError(() => new Replicator({}), TypeError, 'no path')
  assertArgError(() => new Replicator({ path: 5 }), TypeError, 'numeric path')
  assertArgError(() => new Replicator({ path: file(), peerId: '7' }), TypeError, 'string peerId')
  assertArgError(() => new Replicator({ path: file(), heartbeatMs: '10' }), TypeError, 'string heartbeatMs')
  assertArgError(() => new Replicator({ path: file(), retentionMs: 'a day' }), TypeError, 'string retentionMs')
  assertArgError(() => new Replicator({ path: file(), maxDriftMs: {} }), TypeError, 'object maxDriftMs')
  assertArgError(() => new Replicator({ path: file(), maxFrameBytes: '1200' }), TypeError, 'string maxFrameBytes')
  assertArgError(() => new Replicator({ path: file(), clusterKey: 42 }), TypeError, 'numeric clusterKey')
  assertArgError(() => new Replicator({ path: file(), clusterKey: { k: 1 } }), TypeError, 'object clusterKey')
})

test('constructor: out-of-range numbers throw RangeError with E_ARG', () => {
  assertArgError(() => new Replicator({ path: file(), peerId: 0 }), RangeError, 'peerId 0')
  assertArgError(() => new Replicator({ path: file(), peerId: -1 }), RangeError, 'peerId -1')
  assertArgError(() => new Replicator({ path: file(), peerId: 2 ** 32 }), RangeError, 'peerId 2^32')
  assertArgError(() => new Replicator({ path: file(), peerId: 1.5 }), null, 'peerId 1.5')
  assertArgError(() => new Replicator({ path: file(), heartbeatMs: -1 }), RangeError, 'heartbeatMs -1')
  assertArgError(() => new Replicator({ path: file(), retentionMs: -5 }), RangeError, 'retentionMs -5')
  assertArgError(() => new Replicator({ path: file(), maxDriftMs: -1 }), RangeError, 'maxDriftMs -1')
  assertArgError(() => new Replicator({ path: file(), maxFrameBytes: -1 }), RangeError, 'maxFrameBytes -1')
  assertArgError(() => new Replicator({ path: file(), heartbeatMs: Infinity }), RangeError, 'heartbeatMs Infinity')
})

test('constructor: valid options open a replicator; peerId is kept; :memory: works', async () => {
  const r = open({ peerId: 4242, clusterKey: 'k', retentionMs: 1000, maxDriftMs: 5000, maxFrameBytes: 1200 })
  assert.equal(r.status().peerId, 4242)
  const r2 = open({ peerId: 0xffffffff, clusterKey: Buffer.from('abc') })
  assert.equal(r2.status().peerId, 0xffffffff)
  const m = new Replicator({ path: ':memory:', heartbeatMs: 0, peerId: 9 })
  opened.push(m)
  assert.deepEqual(m.migrate([T]), { from: 0, to: 1 })
  m.upsert('t', { id: 1, a: 'mem' })
  assert.equal(m.get('SELECT a FROM t WHERE id = 1').a, 'mem')
})

test('constructor: a fresh peer id is random, a u32 > 0', () => {
  const ids = new Set()
  for (let i = 0; i < 4; i++) {
    const r = open()
    const id = r.status().peerId
    assert.ok(Number.isInteger(id) && id >= 1 && id <= 0xffffffff, `peer id ${id} is a u32 > 0`)
    ids.add(id)
  }
  assert.ok(ids.size >= 3, 'fresh ids differ between databases')
})

// ----- migrate ---------------------------------------------------------------

test('migrate: up, idempotent, further up, down with stored downs', () => {
  const r = open()
  const V2 = {
    up: 'ALTER TABLE t ADD COLUMN e TEXT; ALTER TABLE t_patches ADD COLUMN e TEXT;',
    down: 'ALTER TABLE t DROP COLUMN e; ALTER TABLE t_patches DROP COLUMN e;'
  }
  assert.equal(r.status().schemaVersion, 0)
  assert.deepEqual(r.migrate([T]), { from: 0, to: 1 })
  assert.equal(r.status().schemaVersion, 1)
  assert.deepEqual(r.migrate([T]), { from: 1, to: 1 })
  assert.deepEqual(r.migrate([T, V2]), { from: 1, to: 2 })
  assert.equal(r.status().schemaVersion, 2)
  r.upsert('t', { id: 1, a: 'x', e: 'extra' })
  assert.equal(r.get('SELECT e FROM t WHERE id = 1').e, 'extra')
  // Down: the stored down of version 2 runs even though it is not passed now.
  assert.deepEqual(r.migrate([T]), { from: 2, to: 1 })
  assert.equal(r.status().schemaVersion, 1)
  const cols = r.all("SELECT name FROM pragma_table_info('t')").map((c) => c.name)
  assert.ok(!cols.includes('e'), 'column e dropped by the down migration')
  assertCode(() => r.upsert('t', { id: 2, e: 'no' }), 'E_SCHEMA', 'column e is gone')
  assert.equal(r.get('SELECT a FROM t WHERE id = 1').a, 'x')
  // And forward again.
  assert.deepEqual(r.migrate([T, V2]), { from: 1, to: 2 })
  r.upsert('t', { id: 2, e: 'again' })
  assert.equal(r.get('SELECT e FROM t WHERE id = 2').e, 'again')
  // All the way down to 0 and up again.
  assert.deepEqual(r.migrate([]), { from: 2, to: 0 })
  assert.equal(r.status().schemaVersion, 0)
  assert.equal(r.all("SELECT name FROM sqlite_master WHERE name = 't'").length, 0, 'table t dropped')
  assert.deepEqual(r.migrate([T]), { from: 0, to: 1 })
  r.upsert('t', { id: 3, a: 'back' })
  assert.equal(r.get('SELECT a FROM t WHERE id = 3').a, 'back')
})

test('migrate: bad arguments throw TypeError', () => {
  const r = open()
  assertArgError(() => r.migrate('CREATE TABLE x (a)'), TypeError, 'string')
  assertArgError(() => r.migrate([{ down: 'x' }]), TypeError, 'no up')
  assertArgError(() => r.migrate([42]), TypeError, 'number')
  assert.equal(r.status().schemaVersion, 0)
})

test('migrate: a failing up changes nothing (one transaction)', () => {
  const r = open()
  r.migrate([T])
  const BAD = { up: 'CREATE TABLE z (id INTEGER PRIMARY KEY); THIS IS NOT SQL;' }
  const e = codeOf(() => r.migrate([T, BAD]))
  assert.ok(typeof e.code === 'string', 'coded error')
  assert.equal(r.status().schemaVersion, 1)
  assert.equal(r.all("SELECT name FROM sqlite_master WHERE name = 'z'").length, 0, 'partial up rolled back')
})

test('migrate: a replicated table without PRIMARY KEY is E_SCHEMA naming the table', () => {
  const r = open()
  const NOPK = {
    up: `CREATE TABLE nopkey (a TEXT, b INTEGER);
         CREATE TABLE nopkey_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, a TEXT, b INTEGER);`
  }
  const e = assertCode(() => r.migrate([NOPK]), 'E_SCHEMA', 'no primary key')
  assert.match(e.message, /nopkey/)
  assert.equal(r.status().schemaVersion, 0, 'refused migration is not recorded')
})

test('migrate: a _patches table missing a reserved column is E_SCHEMA naming the table', () => {
  for (const missing of ['_patchedAt', '_sequenceId', '_peerId']) {
    const r = open()
    const cols = ['_patchedAt INTEGER NOT NULL', '_sequenceId INTEGER NOT NULL', '_peerId INTEGER NOT NULL']
      .filter((c) => !c.startsWith(missing + ' '))
    const BAD = {
      up: `CREATE TABLE lacking (id INTEGER PRIMARY KEY, a TEXT);
           CREATE TABLE lacking_patches (${cols.join(', ')}, id INTEGER, a TEXT);`
    }
    const e = assertCode(() => r.migrate([BAD]), 'E_SCHEMA', `missing ${missing}`)
    assert.match(e.message, /lacking/, `message names the table (${missing})`)
    assert.equal(r.status().schemaVersion, 0)
  }
})

// ----- local writes ------------------------------------------------------------

test('writes before migrate / to unknown tables / unknown columns are E_SCHEMA', () => {
  const r = open()
  assertCode(() => r.upsert('t', { id: 1 }), 'E_SCHEMA', 'before migrate')
  r.migrate([T, TODO])
  assertCode(() => r.upsert('nope', { id: 1 }), 'E_SCHEMA', 'unknown table')
  assertCode(() => r.upsertMany('nope', [{ id: 1 }]), 'E_SCHEMA', 'unknown table (many)')
  assertCode(() => r.delete('nope', { id: 1 }), 'E_SCHEMA', 'unknown table (delete)')
  assertCode(() => r.upsert('t', { id: 1, zz: 1 }), 'E_SCHEMA', 'unknown column')
  assertCode(() => r.upsertMany('t', [{ id: 1 }, { id: 2, zz: 1 }]), 'E_SCHEMA', 'unknown column (many)')
  assert.equal(r.all('SELECT * FROM t').length, 0, 'nothing written by a refused upsertMany')
  assert.equal(r.status().seq, 0, 'no seq consumed by refused writes')
})

test('writes: wrong argument types throw TypeError with E_ARG', () => {
  const r = openMigrated()
  assertArgError(() => r.upsert(42, { id: 1 }), TypeError, 'numeric table')
  assertArgError(() => r.upsert('t', null), TypeError, 'null row')
  assertArgError(() => r.upsert('t', 'row'), TypeError, 'string row')
  assertArgError(() => r.upsert('t', [1, 2]), TypeError, 'array row')
  assertArgError(() => r.upsertMany('t', { id: 1 }), TypeError, 'rows not an array')
  assertArgError(() => r.upsertMany('t', [{ id: 1 }, 7]), TypeError, 'a row not an object')
  assertArgError(() => r.delete('t', null), TypeError, 'null pk')
  assert.equal(r.status().seq, 0)
})

test('upsert/upsertMany/delete return increasing "<peerId>.<seq>" tokens', () => {
  const r = openMigrated({ peerId: 777 })
  const t1 = r.upsert('t', { id: 1, a: 'one' })
  assert.equal(t1, '777.1')
  const t2 = r.upsert('t', { id: 2, a: 'two' })
  assert.equal(t2, '777.2')
  const t3 = r.upsertMany('t', [{ id: 3, a: 'x' }, { id: 4, a: 'y' }, { id: 5, a: 'z' }])
  assert.equal(t3, '777.5', 'upsertMany returns the last token')
  const t4 = r.delete('t', { id: 1 })
  assert.equal(t4, '777.6')
  const t5 = r.upsert('todo', { id: 1, tenantId: 2, title: 'other table' })
  assert.equal(t5, '777.7', 'one seq counter across tables')
  assert.equal(r.status().seq, 7)
  const seqs = r.all('SELECT _sequenceId AS s FROM t_patches WHERE _peerId = 777 ORDER BY _sequenceId').map((x) => x.s)
  assert.deepEqual(seqs, [1, 2, 3, 4, 5, 6])
})

test('upsert: only the given columns change; explicit null writes NULL; values round-trip', () => {
  const r = openMigrated()
  const blob = Buffer.from([0, 1, 2, 255])
  r.upsert('t', { id: 1, a: 'hello', b: 42, c: 1.5, d: blob })
  assert.deepEqual(r.get('SELECT * FROM t WHERE id = 1'), { id: 1, a: 'hello', b: 42, c: 1.5, d: blob, deletedAt: null })
  r.upsert('t', { id: 1, b: 43 })
  assert.deepEqual(r.get('SELECT id, a, b, c FROM t WHERE id = 1'), { id: 1, a: 'hello', b: 43, c: 1.5 }, 'omitted columns left alone')
  r.upsert('t', { id: 1, a: null })
  assert.deepEqual(r.get('SELECT id, a, b, c FROM t WHERE id = 1'), { id: 1, a: null, b: 43, c: 1.5 }, 'explicit null writes NULL')
  r.upsert('t', { id: 1, c: 2.25 })
  assert.deepEqual(r.get('SELECT id, a, b, c FROM t WHERE id = 1'), { id: 1, a: null, b: 43, c: 2.25 }, 'NULL stays NULL when omitted')
  r.upsert('t', { id: 2, b: Number.MAX_SAFE_INTEGER })
  assert.deepEqual(r.get('SELECT * FROM t WHERE id = 2'), { id: 2, a: null, b: Number.MAX_SAFE_INTEGER, c: null, d: null, deletedAt: null })
  // Composite primary key.
  r.upsertMany('todo', [{ id: 1, tenantId: 1, title: 'a', done: 0 }, { id: 1, tenantId: 2, title: 'b', done: 1 }])
  r.upsert('todo', { id: 1, tenantId: 2, done: 0 })
  assert.deepEqual(r.all('SELECT id, tenantId, title, done FROM todo ORDER BY tenantId'), [
    { id: 1, tenantId: 1, title: 'a', done: 0 },
    { id: 1, tenantId: 2, title: 'b', done: 0 }
  ])
})

test('upsertMany writes all rows in order', () => {
  const r = openMigrated()
  const rows = []
  for (let i = 1; i <= 50; i++) rows.push({ id: i, a: `r${i}`, b: i * 2 })
  rows.push({ id: 3, a: 'last wins' })
  r.upsertMany('t', rows)
  assert.equal(r.get('SELECT count(*) AS n FROM t').n, 50)
  assert.deepEqual(r.get('SELECT a, b FROM t WHERE id = 3'), { a: 'last wins', b: 6 })
  assert.equal(r.get('SELECT b FROM t WHERE id = 50').b, 100)
})

test('delete: sets deletedAt to now, keeps the row; table without deletedAt is E_SCHEMA', () => {
  const r = openMigrated()
  r.upsert('t', { id: 1, a: 'x', b: 1 })
  const before = Date.now()
  const tok = r.delete('t', { id: 1 })
  const after = Date.now()
  assert.match(tok, /^\d+\.\d+$/)
  const row = r.get('SELECT * FROM t WHERE id = 1')
  assert.ok(row, 'a tombstone keeps the row')
  assert.equal(row.a, 'x')
  assert.ok(row.deletedAt >= before - 5 && row.deletedAt <= after + 5, `deletedAt ${row.deletedAt} is now (${before}..${after})`)
  r.upsert('todo', { id: 9, tenantId: 9, title: 'gone' })
  r.delete('todo', { id: 9, tenantId: 9 })
  assert.ok(r.get('SELECT deletedAt FROM todo WHERE id = 9 AND tenantId = 9').deletedAt >= before - 5)
  r.upsert('kv', { k: 'key', v: 'val' })
  const seq = r.status().seq
  const e = assertCode(() => r.delete('kv', { k: 'key' }), 'E_SCHEMA', 'no deletedAt column')
  assert.match(e.message, /kv/)
  assert.equal(r.status().seq, seq)
  assert.equal(r.get("SELECT v FROM kv WHERE k = 'key'").v, 'val')
})

test('HLC: _patchedAt grows and is (unix_ms - 1735689600000) * 8192 + counter', () => {
  const r = openMigrated()
  const t0 = Date.now()
  for (let i = 0; i < 60; i++) r.upsert('t', { id: i % 7, b: i })
  r.upsertMany('t', [{ id: 100, a: 'x' }, { id: 101, a: 'y' }])
  r.delete('t', { id: 100 })
  const t1 = Date.now()
  const stamps = r.all('SELECT _patchedAt AS at FROM t_patches ORDER BY _sequenceId').map((x) => x.at)
  assert.equal(stamps.length, 63)
  for (let i = 0; i < stamps.length; i++) {
    const at = stamps[i]
    assert.ok(Number.isSafeInteger(at) && at > 0, `stamp ${at} is a 53-bit integer`)
    if (i > 0) assert.ok(at > stamps[i - 1], `stamps strictly increase (${stamps[i - 1]} -> ${at})`)
    const ms = Math.floor(at / 8192) + HLC_EPOCH
    assert.ok(ms >= t0 - 2 && ms <= t1 + 2, `stamp ${at} decodes to ${ms}, within [${t0}, ${t1}]`)
  }
  const counters = stamps.map((at) => at % 8192)
  assert.ok(counters.every((c) => c >= 0 && c < 8192))
})

// ----- reads --------------------------------------------------------------------

test('all/get: rows as objects, params, undefined when no row', () => {
  const r = openMigrated()
  r.upsertMany('t', [{ id: 1, a: 'one', b: 10 }, { id: 2, a: 'two', b: 20 }, { id: 3, a: 'three', b: 30 }])
  assert.deepEqual(r.all('SELECT id, a FROM t ORDER BY id'), [{ id: 1, a: 'one' }, { id: 2, a: 'two' }, { id: 3, a: 'three' }])
  assert.deepEqual(r.all('SELECT id FROM t WHERE b > ? ORDER BY id', [15]), [{ id: 2 }, { id: 3 }])
  assert.deepEqual(r.get('SELECT a FROM t WHERE id = ?', [2]), { a: 'two' })
  assert.deepEqual(r.get('SELECT a FROM t WHERE id = :id', { id: 3 }), { a: 'three' })
  assert.deepEqual(r.get('SELECT ? AS x, ? AS y, ? AS z', [1, 'a', null]), { x: 1, y: 'a', z: null })
  assert.equal(r.get('SELECT * FROM t WHERE id = 99'), undefined)
  assert.deepEqual(r.all('SELECT * FROM t WHERE id = 99'), [])
  assert.equal(r.get('SELECT a FROM t ORDER BY id DESC').a, 'three', 'get returns the first row')
  assert.deepEqual(r.all('WITH x(v) AS (SELECT 1 UNION ALL SELECT 2) SELECT v FROM x ORDER BY v'), [{ v: 1 }, { v: 2 }])
})

test('all/get refuse writes with E_READONLY and change nothing', () => {
  const r = openMigrated()
  r.upsert('t', { id: 1, a: 'keep' })
  const stmts = [
    "INSERT INTO t (id, a) VALUES (2, 'x')",
    "UPDATE t SET a = 'changed'",
    'DELETE FROM t',
    'DELETE FROM t_patches',
    'DROP TABLE t',
    'CREATE TABLE y (a)',
    "WITH x AS (SELECT 1) UPDATE t SET a = 'cte'",
    "INSERT INTO t_patches (_patchedAt, _sequenceId, _peerId, id) VALUES (1, 1, 1, 5)"
  ]
  for (const sql of stmts) {
    assertCode(() => r.all(sql), 'E_READONLY', `all(${sql})`)
    assertCode(() => r.get(sql), 'E_READONLY', `get(${sql})`)
  }
  // A write hidden after a read must not run either.
  try { r.all("SELECT 1; UPDATE t SET a = 'sneaky'") } catch (e) { assert.ok(typeof e.code === 'string') }
  assert.deepEqual(r.all('SELECT id, a FROM t'), [{ id: 1, a: 'keep' }])
  assert.equal(r.get('SELECT count(*) AS n FROM t_patches').n, 1)
  assertArgError(() => r.all(42), TypeError, 'sql not a string')
})

test('all/get: a bad statement throws a coded error (E_SQLITE)', () => {
  const r = openMigrated()
  assertCode(() => r.all('SELECT * FROM no_such_table'), 'E_SQLITE', 'unknown table')
  assertCode(() => r.get('SELEKT 1'), 'E_SQLITE', 'syntax error')
})

// ----- status, metrics, waitFor, middleware -------------------------------------

test('status() shape on a lone replicator', () => {
  const r = openMigrated({ peerId: 31 })
  r.upsert('t', { id: 1 })
  r.upsert('t', { id: 2 })
  const s = r.status()
  assert.deepEqual(Object.keys(s).sort(), ['isLeader', 'peerId', 'peers', 'pending', 'schemaVersion', 'seq'])
  assert.equal(s.peerId, 31)
  assert.equal(s.schemaVersion, 2)
  assert.equal(s.seq, 2)
  assert.equal(s.isLeader, true, 'alone, a peer leads')
  assert.equal(r.isLeader(), true)
  assert.deepEqual(s.peers, [])
  assert.equal(s.pending, 0)
})

test('metrics(): OpenMetrics text with # EOF and the families', () => {
  const r = openMigrated()
  r.upsert('t', { id: 1 })
  const m = r.metrics()
  assert.equal(typeof m, 'string')
  assert.match(m, /# EOF\n?$/, 'ends with # EOF')
  for (const re of [/peer/i, /lag/i, /frames/i, /bytes/i, /retransm/i, /reject/i, /pending/i, /snapshot/i]) {
    assert.match(m, re, `a ${re} family`)
  }
  for (const line of m.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/, `sample line: ${line}`)
  }
})

test('waitFor: own token resolves true, unknown token false on timeout, bad token rejects', async () => {
  const r = openMigrated({ peerId: 5 })
  const tok = r.upsert('t', { id: 1 })
  assert.equal(await r.waitFor(tok, 100), true)
  assert.equal(await r.waitFor(tok), true)
  const t0 = Date.now()
  assert.equal(await r.waitFor('6.1', 60), false)
  assert.ok(Date.now() - t0 >= 50, 'waited about the timeout')
  assert.equal(await r.waitFor('5.99', 30), false, 'a future seq of our own is not applied')
  await assert.rejects(r.waitFor('not-a-token', 10), (e) => e.code === 'E_ARG')
})

test('readYourWrites: passes through without a token; E_STALE 503 on timeout; next() once applied', async () => {
  const r = openMigrated({ peerId: 8 })
  const mw = r.readYourWrites({ timeoutMs: 40 })
  assert.equal(typeof mw, 'function')
  const run = (m, headers) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('next was never called')), 3000)
    m({ headers, method: 'GET', url: '/' }, { statusCode: 200, setHeader () {}, end () {} }, (err) => {
      clearTimeout(timer)
      resolve(err === undefined ? 'ok' : err)
    })
  })
  assert.equal(await run(mw, {}), 'ok', 'no token: straight through')
  assert.equal(await run(mw, { 'x-quilt-token': 'garbage' }), 'ok', 'invalid token: straight through')
  const t0 = Date.now()
  const err = await run(mw, { 'x-quilt-token': '12345.3' })
  assert.ok(err instanceof Error, 'next(err) on timeout')
  assert.equal(err.code, 'E_STALE')
  assert.equal(err.status, 503)
  assert.ok(Date.now() - t0 >= 30, 'waited for the timeout')
  const tok = r.upsert('t', { id: 1 })
  assert.equal(await run(mw, { 'x-quilt-token': tok }), 'ok', 'an applied token passes')
  // Custom header name; Node lower-cases incoming header names.
  const mw2 = r.readYourWrites({ header: 'X-Session', timeoutMs: 20 })
  assert.equal(await run(mw2, { 'x-quilt-token': '12345.3' }), 'ok', 'other header ignored')
  const err2 = await run(mw2, { 'x-session': '12345.3' })
  assert.equal(err2.code, 'E_STALE')
  assert.equal(err2.status, 503)
  // Defaults: a token already applied passes at once.
  assert.equal(await run(r.readYourWrites(), { 'x-quilt-token': tok }), 'ok')
})

// ----- close -----------------------------------------------------------------------

test('close is idempotent and every call after it throws E_CLOSED', async () => {
  const r = openMigrated({ peerId: 3 })
  const tok = r.upsert('t', { id: 1 })
  const p1 = r.close({ timeoutMs: 0 })
  const p2 = r.close({ timeoutMs: 0 })
  await p1
  await p2
  await r.close()
  await r.close({ timeoutMs: 0 })
  const calls = {
    migrate: () => r.migrate([T]),
    upsert: () => r.upsert('t', { id: 2 }),
    upsertMany: () => r.upsertMany('t', [{ id: 2 }]),
    delete: () => r.delete('t', { id: 1 }),
    addPeer: () => r.addPeer(4, () => {}),
    removePeer: () => r.removePeer(4),
    applyPatches: () => r.applyPatches(Buffer.from('QLT')),
    tick: () => r.tick(),
    flush: () => r.flush(),
    all: () => r.all('SELECT 1'),
    get: () => r.get('SELECT 1'),
    status: () => r.status(),
    isLeader: () => r.isLeader(),
    metrics: () => r.metrics()
  }
  for (const [name, fn] of Object.entries(calls)) assertCode(fn, 'E_CLOSED', name)
  await assert.rejects(async () => r.waitFor(tok, 10), (e) => e.code === 'E_CLOSED', 'waitFor')
  await assert.rejects(async () => r.snapshot(), (e) => e.code === 'E_CLOSED', 'snapshot')
})

test('readYourWrites() after close throws E_CLOSED', async () => {
  const r = openMigrated()
  await r.close({ timeoutMs: 0 })
  assertCode(() => r.readYourWrites(), 'E_CLOSED', 'readYourWrites after close')
})

test('close resolves pending waitFor with false', async () => {
  const r = openMigrated()
  const p = r.waitFor('99.1', 10000)
  const t0 = Date.now()
  await r.close({ timeoutMs: 0 })
  assert.equal(await p, false)
  assert.ok(Date.now() - t0 < 5000)
})

test('Symbol.asyncDispose closes the replicator', { skip: !Symbol.asyncDispose }, async () => {
  const r = openMigrated()
  assert.equal(typeof r[Symbol.asyncDispose], 'function')
  await r[Symbol.asyncDispose]()
  assertCode(() => r.upsert('t', { id: 1 }), 'E_CLOSED', 'after asyncDispose')
})

// ----- native panics --------------------------------------------------------------

test('a native panic throws a JS error instead of crashing the process', () => {
  const r = openMigrated()
  assert.equal(typeof r._native.debugPanic, 'function')
  let err
  try {
    r._native.debugPanic()
  } catch (e) {
    err = e
  }
  assert.ok(err instanceof Error, 'debugPanic threw an Error')
  assert.match(String(err.message), /panic/i)
  // The process (and the replicator) are still alive.
  assert.equal(typeof r.status().seq, 'number')
  assert.match(r.upsert('t', { id: 1, a: 'after panic' }), /^\d+\.1$/)
})
